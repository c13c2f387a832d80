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
    # Rows cancelled by an earlier run go back to work when this run starts (a resume: the same
    # command or cell run again). False: they stay cancelled, e.g. a run that retries failed rows
    # only, after the user pressed Cancel to stop spending (``Batch.resume_cancelled()`` asks).
    resume_cancelled: bool = True
    # USD the whole checkpoint may spend (``videobatch._spend``); None: no budget.
    max_cost: float | None = None

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
    slots_found: dict[str, int] = field(default_factory=dict)  # pool -> limit found by probing


@dataclass
class Stop:
    fatal: ProviderError | None = None  # stops everything
    cancelled: bool = False
    crash: Exception | None = None  # a bug (not a provider answer): stop, flush, re-raise
    event: asyncio.Event = field(default_factory=asyncio.Event)
    # Providers that take no new work (an account error: balance, permission), by name: their rows
    # not yet sent wait, unpaid; their rows in flight finish.
    accounts: dict[str, ProviderError] = field(default_factory=dict)
    # (provider, model) whose rows are not submitted any more (the provider refused the model
    # itself several times in a row), and the refusals counted so far.
    blocked: dict[tuple[str, str], ProviderError] = field(default_factory=dict)
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def no_submit(self) -> ProviderError | None:
        """The first account error that stopped a provider taking new work (or None)."""
        return next(iter(self.accounts.values()), None)

    def closed(self, provider: str) -> ProviderError | None:
        """Why ``provider`` takes no new work in this run, or None."""
        return self.accounts.get(provider)

    def close(self, provider: str, exc: ProviderError) -> None:
        self.accounts.setdefault(provider, exc)

    def refused(self, provider: str, model: str, exc: ProviderError, *, limit: int = 3) -> None:
        """One more refusal of ``provider``'s ``model`` itself; ``limit`` in a row blocks it."""
        pool = (provider, model)
        self.refusals[pool] = self.refusals.get(pool, 0) + 1
        if self.refusals[pool] >= limit and pool not in self.blocked:
            self.blocked[pool] = exc

    def blocked_error(self) -> ProviderError | None:
        """What stopped submitting some models, as one error for the run's outcome (or None)."""
        if not self.blocked:
            return None
        first = next(iter(self.blocked.values()))
        mixed = len({provider for provider, _ in self.blocked}) > 1
        models = ", ".join(f"{provider} {model}" if mixed else model
                           for provider, model in self.blocked)
        message = (f"rows of model{'s' if len(self.blocked) > 1 else ''} {models} were not submitted "
                   f"(they stay pending, unpaid): the provider refused the model itself several "
                   f"times in a row. It said: {first.message}")
        return type(first)(message, provider_code=first.provider_code, status_code=first.status_code,
                           request_id=first.request_id)
