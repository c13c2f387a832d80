"""What a run is told and what it reports: ``RunSettings`` (limits, timeouts and the retry
policies built from them), ``Stop`` (why workers stop), and ``RunOutcome`` (counts and figures).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from ._jobs import State
from ._retry import RetryPolicy
from .errors import ProviderError

__all__ = ["RunOutcome", "RunSettings", "Stop"]


@dataclass(frozen=True)
class RunSettings:
    concurrency: int | None = None  # at most the provider's parallel-task limit
    max_attempts: int = 5  # submits per row that may fail transiently before the row fails
    timeout: float | None = 3600.0  # seconds a row may take from acceptance to its end
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    snapshot_every: float = 30.0  # seconds between checkpoint snapshots
    lookup_deadline: float = 300.0  # seconds one reconciliation may keep retrying a failing lookup

    def submit_policy(self) -> RetryPolicy:
        """Transient submit failures: ``max_attempts`` tries in all."""
        return RetryPolicy(attempts=self.max_attempts, base=self.backoff_base, cap=self.backoff_cap)

    def pushback_policy(self) -> RetryPolicy:
        """"Too fast" / "slots busy": wait and try again, as often as it takes (costs nothing)."""
        return RetryPolicy(attempts=None, base=max(1.0, self.backoff_base), cap=self.backoff_cap)

    def lookup_policy(self) -> RetryPolicy:
        """Lookups and listings: bounded in tries and in time, then the answer is "unknown"."""
        deadline = self.lookup_deadline if self.timeout is None else min(self.lookup_deadline,
                                                                         self.timeout)
        return RetryPolicy(attempts=self.max_attempts, base=self.backoff_base, cap=self.backoff_cap,
                           deadline=deadline)


@dataclass
class RunOutcome:
    counts: Counter[State]
    elapsed: float
    cancelled: bool = False
    stopped_by: ProviderError | None = None  # auth or account error that stopped the run
    polls: int = 0
    submits: int = 0


@dataclass
class Stop:
    fatal: ProviderError | None = None  # stops everything
    no_submit: ProviderError | None = None  # stops new submissions only
    cancelled: bool = False
    crash: Exception | None = None  # a bug (not a provider answer): stop, flush, re-raise
    event: asyncio.Event = field(default_factory=asyncio.Event)
