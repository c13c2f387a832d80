"""What the runner tells the world: progress events and the observer protocol.

The runner emits events; the progress bar, the notebook dashboard, logs, webhooks and the service
are observers. None of them reaches into the runner. An observer that raises is logged and ignored:
a broken progress bar must never lose a paid result.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ._jobs import RowSnapshot, State
from .errors import ProviderError

if TYPE_CHECKING:
    from ._spend import Figures, Ledger

__all__ = [
    "Event",
    "EventKind",
    "Notifier",
    "Observer",
    "Progress",
    "RowSnapshot",
    "RunContext",
    "Tally",
]

log = logging.getLogger("videobatch")

EventKind = Literal["start", "transition", "retry", "slots", "annotate", "finish"]


_NO_COUNTS: Mapping[State, int] = MappingProxyType(dict.fromkeys(State, 0))


@dataclass(frozen=True, slots=True)
class Progress:
    """A run's counters at one moment (frozen): what every event carries.

    ``counts`` holds every state (0 when no row is in it). ``elapsed``, ``throughput`` and ``eta``
    are read against the clock when asked.
    """

    total: int
    counts: Mapping[State, int] = field(default_factory=lambda: _NO_COUNTS)
    started: float = field(default_factory=time.monotonic)
    slots_in_use: int = 0
    slots_limit: int = 0
    done_this_run: int = 0  # rows that reached a terminal state during this run (not resumed ones)

    def __post_init__(self) -> None:
        if self.counts is not _NO_COUNTS:  # every state present, read-only, never shared
            given = self.counts
            object.__setattr__(self, "counts", MappingProxyType({s: given.get(s, 0) for s in State}))

    @property
    def done(self) -> int:
        counts = self.counts
        return counts[State.COMPLETED] + counts[State.FAILED] + counts[State.CANCELLED]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def throughput(self) -> float:
        """Rows finished per second during this run."""
        elapsed = self.elapsed
        return self.done_this_run / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every row is done, at the current pace; None before the first finishes."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.throughput
        return left / rate if rate > 0 else None


@dataclass
class Tally:
    """The runner's live counters (only the runner changes them); ``snapshot()`` freezes them."""

    total: int
    counts: Counter[State] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    slots_in_use: int = 0
    slots_limit: int = 0
    done_this_run: int = 0

    def snapshot(self) -> Progress:
        return Progress(self.total, self.counts, self.started, self.slots_in_use, self.slots_limit,
                        self.done_this_run)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a run. ``row``: the row it is about, as it stood right after."""

    kind: EventKind
    progress: Progress
    row: RowSnapshot | None = None
    old: State | None = None
    new: State | None = None
    error: ProviderError | None = None
    delay: float | None = None  # for "retry": seconds until the next try

    @property
    def job(self) -> RowSnapshot | None:
        """The older name of ``row`` (kept so observers written against it still work)."""
        return self.row


Observer = Callable[[Event], None]
"""Any callable taking an Event. It may also have two optional methods:

- ``bind(context)``: called once before the run starts with a ``RunContext``:
  the run's rows and progress as snapshots, and ``annotate`` through which an acting observer
  (downloads, webhooks) records extra result columns;
- ``async drain(cancelled)``: awaited after the last row ends and before the final checkpoint, so
  work the observer started (a download in flight) can finish and be recorded.

Observers see snapshots only (``Progress``, ``RowSnapshot``), never the runner's live rows.
"""


class _Runner(Protocol):
    """The runner's public methods a ``RunContext`` uses (``videobatch._runner.Runner``)."""

    ledger: Ledger

    @property
    def run_id(self) -> str: ...
    def snapshot(self) -> Progress: ...
    def rows(self, states: Collection[State] | None = None) -> list[RowSnapshot]: ...
    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot: ...
    def cancel(self) -> None: ...


class RunContext:
    """What an observer may do during a run besides watching (see ``videobatch._events.Observer``):
    read the run's rows, progress and spend as snapshots, record result columns, cancel the run. It uses
    only the runner's public methods."""

    def __init__(self, runner: _Runner) -> None:
        self._runner = runner

    @property
    def run_id(self) -> str:
        return self._runner.run_id

    @property
    def progress(self) -> Progress:
        return self._runner.snapshot()

    def spend(self) -> Figures:
        """Spent / reserved / budget of the run's checkpoint now (``videobatch._spend``): frozen."""
        return self._runner.ledger.figures()

    def rows(self, states: Collection[State] | None = None) -> list[RowSnapshot]:
        """Snapshots of the batch's rows (those in ``states``); none in service mode, where rows
        arrive one by one."""
        return self._runner.rows(states)

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot:
        """Record extra result columns for ``row`` durably (e.g. ``local_path`` after a download)."""
        return self._runner.annotate(row, **extras)

    def cancel(self) -> None:
        self._runner.cancel()


def notify(observers: list[Observer], event: Event) -> None:
    for observer in observers:
        try:
            observer(event)
        except Exception:
            log.exception("progress observer %r failed; continuing", observer)


class Notifier:
    """Tells every observer of each event in the order events happen: an event an observer's own
    reaction causes (an annotation made on a transition, say) waits until every observer has heard
    of the one before, so no observer sees a row's later snapshot before its earlier one."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers
        self._queue: deque[Event] = deque()
        self._busy = False

    def __call__(self, event: Event) -> None:
        self._queue.append(event)
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                notify(self.observers, self._queue.popleft())
        finally:
            self._busy = False
