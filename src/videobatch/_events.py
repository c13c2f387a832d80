"""What the runner tells the world: progress events and the observer protocol.

The runner emits events; the progress bar, the notebook dashboard, logs, webhooks and the service
are observers. None of them reaches into the runner. An observer that raises is logged and ignored:
a broken progress bar must never lose a paid result.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ._jobs import Job, State
from .errors import ProviderError

__all__ = ["Event", "EventKind", "Observer", "Progress"]

log = logging.getLogger("videobatch")

EventKind = Literal["start", "transition", "retry", "slots", "annotate", "finish"]


@dataclass
class Progress:
    """Live counters of a run, shared by every event (read-only for observers)."""

    total: int
    counts: Counter[State] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    slots_in_use: int = 0
    slots_limit: int = 0
    finished_durations: list[float] = field(default_factory=list)  # seconds per completed row
    done_this_run: int = 0  # rows that reached a terminal state during this run (not resumed ones)

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in (State.COMPLETED, State.FAILED, State.CANCELLED))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def throughput(self) -> float:
        """Rows finished per second during this run."""
        return self.done_this_run / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every row is done, at the current pace; None before the first finishes."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.throughput
        return left / rate if rate > 0 else None


@dataclass(frozen=True)
class Event:
    kind: EventKind
    progress: Progress
    job: Job | None = None
    old: State | None = None
    new: State | None = None
    error: ProviderError | None = None
    delay: float | None = None  # for "retry": seconds until the next try


Observer = Callable[[Event], None]
"""Any callable taking an Event. It may also have two optional methods:

- ``bind(context)``: called once before the run starts with a ``videobatch._runner.RunContext``,
  through which an acting observer (downloads, webhooks) records extra result columns;
- ``async drain(cancelled)``: awaited after the last row ends and before the final checkpoint, so
  work the observer started (a download in flight) can finish and be recorded.
"""


def notify(observers: list[Observer], event: Event) -> None:
    for observer in observers:
        try:
            observer(event)
        except Exception:
            log.exception("progress observer %r failed; continuing", observer)
