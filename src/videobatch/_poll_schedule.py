"""When to poll a task: ``PollSchedule`` learns what finished tasks took, per kind of task
(``kind_of``: clip length, resolution, mode), and says when each task is next due.

Before anything is learned it follows the provider's hint (first poll after ``first_poll``
seconds, then growing intervals). Once durations are known: with one request per task, the first
poll aims at the fast end of the observed durations and the rest are spaced so a task is seen
finished in about three polls; where one list request answers for every task, the run polls when
about one task end is expected since the last look (``Poller``), so a freed slot is refilled soon
after it frees, for about one request per task.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Hashable

from .providers.base import PollHint
from .request import VideoRequest

__all__ = ["PollSchedule", "kind_of"]

_POOL = object()  # the key of the pool-wide durations

def kind_of(request: VideoRequest | None) -> Hashable:
    """What a task's duration is learned with: tasks of one kind take about as long."""
    if request is None:
        return None
    mode = (request.options or {}).get("mode")
    return (request.duration, request.resolution, request.audio,
            mode if isinstance(mode, Hashable) else None)


class PollSchedule:
    """Chooses when to poll from what finished tasks took, per ``kind`` (a 10 s clip takes longer
    than a 5 s one) and for the pool; a kind with fewer than ``LEARNED`` of its own borrows the
    pool's durations until it has them."""

    LEARNED = 3  # durations seen before a kind's (or the pool's) are trusted

    def __init__(self, hint: PollHint, window: int = 50) -> None:
        self.hint = hint
        self.window = window
        self._recent: dict[Hashable, deque[float]] = {}
        self._sorted: dict[Hashable, list[float]] = {}

    def observe(self, duration: float, kind: Hashable = None) -> None:
        """A task of ``kind`` took ``duration`` seconds from acceptance to its end."""
        if duration < 0:
            return
        for k in {kind, _POOL}:
            recent = self._recent.setdefault(k, deque(maxlen=self.window))
            ordered = self._sorted.setdefault(k, [])
            if len(recent) == recent.maxlen:
                del ordered[bisect.bisect_left(ordered, recent[0])]
            recent.append(duration)
            bisect.insort(ordered, duration)

    def samples(self, kind: Hashable = None) -> list[float]:
        """The durations polls aim at for ``kind`` (sorted; empty while nothing is learned)."""
        own = self._sorted.get(kind, [])
        if len(own) >= self.LEARNED:
            return own
        pool = self._sorted.get(_POOL, [])
        return pool if len(pool) >= self.LEARNED else []

    def cdf(self, age: float, kind: Hashable = None) -> float | None:
        """The share of ``kind``'s tasks done by ``age`` (interpolated between the durations
        seen; None while nothing is learned)."""
        s = self.samples(kind)
        if not s:
            return None
        n = len(s)
        pad = max((s[-1] - s[0]) / n, 0.02 * s[0], 1e-3)
        if not s[0] - pad < age < s[-1] + pad:
            return 0.0 if age <= s[0] else 1.0
        xs = [s[0] - pad, *s, s[-1] + pad]
        ys = [0.0, *((j + 0.5) / n for j in range(n)), 1.0]
        i = bisect.bisect_right(xs, age) - 1
        i = min(max(i, 0), len(xs) - 2)
        span = xs[i + 1] - xs[i]
        return ys[i] + (ys[i + 1] - ys[i]) * ((age - xs[i]) / span if span > 0 else 1.0)

    def surely_done(self, kind: Hashable = None) -> float | None:
        """The age by which every learned task of ``kind`` was done (None: nothing learned)."""
        s = self.samples(kind)
        return s[-1] + max((s[-1] - s[0]) / len(s), 0.02 * s[0], 1e-3) if s else None

    def next_delay(self, age: float, polls: int, kind: Hashable = None) -> float:
        """Seconds to wait before the next poll of a task ``age`` seconds old, polled ``polls`` times."""
        h = self.hint
        s = self.samples(kind)
        if s:
            last = len(s) - 1
            fast, slow = s[int(0.1 * last + 0.5)], s[int(0.9 * last + 0.5)]  # the 10th, 90th centiles
            if age < fast:
                return max(fast - age, 0.0)
            step = max(h.min_interval, (slow - fast) / 3)
            if age > slow:  # a straggler: back off gently
                step *= h.growth ** min(polls, 8)
            return min(step, h.max_interval)
        return self._explore(age, polls)

    def _explore(self, age: float, polls: int) -> float:
        h = self.hint
        if polls == 0 and age < h.first_poll:
            return h.first_poll - age
        return min(h.max_interval, h.min_interval * h.growth ** max(0, polls - 1))

    def backstop_delay(self, age: float, polls: int, kind: Hashable = None) -> float:
        """A task's own next poll where one list request answers for every task (the run's
        polls follow ``Poller``'s expected-ends rule): once every learned task of its kind would
        have ended, then backing off; before anything is learned, the hint's schedule."""
        end = self.surely_done(kind)
        if end is None:
            return self._explore(age, polls)
        if age < end:
            return end - age
        h = self.hint
        return min(h.max_interval, max(h.min_interval, age * (h.growth - 1)))

