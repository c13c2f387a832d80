"""The poll scheduler: find out when tasks finish without flooding the API or idling slots.

One ``Poller`` serves every task of a pool. Each task has a due time; the poller wakes at the
earliest one, polls every task due within a short coalescing window in one go (a single list
request when the provider has one; else one request per task, each settled as it answers, so a
slow answer holds up no other row), and reschedules the unfinished ones. When each task is due
comes from ``PollSchedule`` (``_poll_schedule``, learned from what finished tasks took).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import NamedTuple

from ._poll_schedule import PollSchedule
from ._retry import RetryPolicy
from .errors import AuthError, ProviderError, TransientError
from .providers.base import Provider, TaskStatus

__all__ = ["Poller", "nudge"]

_LIVE: weakref.WeakSet[Poller] = weakref.WeakSet()  # this process's pollers (``nudge``)
NUDGE_GAP = 1.0  # seconds: a task is polled early on a nudge at most this often


def nudge(task_id: str) -> bool:
    """A provider's callback says ``task_id`` ended: its poller polls it now on the provider's API
    (the row moves on that answer, never on the caller's word); a task nobody watches, or nudged
    within ``NUDGE_GAP``, is ignored. Call it on the run's loop; True when a poller took it."""
    return any(poller.nudge(task_id) for poller in list(_LIVE))


def _expire(future: asyncio.Future[TaskStatus]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Entry(NamedTuple):  # a tuple: the heap compares (due, seq) in C (seq is unique)
    due: float
    seq: int
    task_id: str


@dataclass(eq=False)  # one per task: compared by identity (a field-by-field == made polls O(n²))
class _Watch:
    task_id: str
    accepted_at: float  # epoch seconds
    future: asyncio.Future[TaskStatus]
    kind: Hashable = None
    polls: int = 0
    failures: int = 0
    seen_age: float = 0.0  # how old it was when last seen unfinished
    nudged: float = float("-inf")  # monotonic time of the last nudge taken
    asking: bool = False  # its own status request is on its way (not batch polling)
    renudge: bool = False  # nudged while asking: ask again as soon as that answer is in


class Poller:
    """Polls every watched task at its due time and resolves its future when the task ends.

    Where one list request answers for every task (``Provider.batch_polling``) and durations are
    learned, the run polls when ``per_poll`` task ends are expected since each task was last seen
    unfinished (from the learned durations of its kind): polls bunch where ends are likely, and
    cost about one request per ``per_poll`` tasks. Each task also keeps a due time of its own, a
    backstop for tasks a list page leaves out and for stragglers.
    """

    def __init__(
        self,
        provider: Provider,
        schedule: PollSchedule,
        *,
        on_fatal: Callable[[ProviderError], None],
        coalesce: float | None = None,
        per_poll: float = 1.0,
    ) -> None:
        self.provider = provider
        self.schedule = schedule
        self.on_fatal = on_fatal
        hint = provider.poll_hint
        self.coalesce = coalesce if coalesce is not None else min(1.0, hint.min_interval / 2)
        self.per_poll = per_poll
        self.min_gap = min(0.1, hint.min_interval)  # between two expected-ends polls
        # A failing poll is tried again later, for as long as the task is waited for.
        self.retry = RetryPolicy(attempts=None, base=max(hint.min_interval, 0.05), cap=60.0)
        self.polls = 0  # API requests spent on polling
        self._watches: dict[str, _Watch] = {}
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._asking: set[asyncio.Task[None]] = set()  # status requests on their way
        self._quiet_until = 0.0  # monotonic: no expected-ends poll before (a poll failed)
        _LIVE.add(self)

    def nudge(self, task_id: str) -> bool:
        """Poll ``task_id`` now if this poller watches it (see the module's ``nudge``)."""
        watch = self._watches.get(task_id)
        now = time.monotonic()
        if watch is None or watch.future.done() or now - watch.nudged < NUDGE_GAP:
            return False
        watch.nudged = now
        if watch.asking:  # the answer on its way may predate the end: ask once more after it
            watch.renudge = True
            return True
        self._due_at(now, task_id)
        return True

    async def wait(self, task_id: str, accepted_at: float, kind: Hashable = None,
                   within: float | None = None) -> TaskStatus:
        """The final status of ``task_id`` (accepted at ``accepted_at``, epoch seconds; ``kind``:
        what its duration is learned with, e.g. the clip's length); TimeoutError unless it ends within
        ``within`` seconds (None: no limit). One waiter per task (a task belongs to one row)."""
        loop = asyncio.get_running_loop()
        watch = self._watches[task_id] = _Watch(task_id, accepted_at, loop.create_future(), kind)
        self._push(watch)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="videobatch-poller")
        # (a timer on the loop, as asyncio.timeout sets, without its context manager per row)
        expiry = None if within is None else loop.call_later(within, _expire, watch.future)
        try:
            return await watch.future
        finally:
            # Answered, or the waiter gave up (timeout, cancel): either way stop polling it.
            if expiry is not None:
                expiry.cancel()
            self._watches.pop(task_id, None)

    def _push(self, watch: _Watch) -> None:
        """Schedule ``watch``'s next poll: at once after a nudge that came while it was asked
        about, else when its schedule says."""
        if watch.renudge:
            watch.renudge = False
            delay = 0.0
        else:
            age = time.time() - watch.accepted_at
            if self.provider.batch_polling:
                delay = self.schedule.backstop_delay(age, watch.polls, watch.kind)
            else:
                delay = self.schedule.next_delay(age, watch.polls, watch.kind)
        self._due_at(time.monotonic() + delay, watch.task_id)

    def _due_at(self, due: float, task_id: str) -> None:
        """Poll ``task_id`` at monotonic time ``due`` (the serve loop is woken to see it)."""
        heapq.heappush(self._heap, _Entry(due, next(self._seq), task_id))
        self._wake.set()

    def _expected_ends(self) -> tuple[float, _Watch] | None:
        """Seconds until ``per_poll`` ends are expected among the watched tasks (fewer when few
        are watched), and the task likeliest to have ended by then; None when not batch polling
        or nothing is learned."""
        if not self.provider.batch_polling:
            return None
        schedule, now = self.schedule, time.time()
        live: list[tuple[_Watch, float, float, float]] = []  # watch, age, done at last look, end
        for w in self._watches.values():
            base = schedule.cdf(w.seen_age, w.kind)
            end = schedule.surely_done(w.kind)
            if base is None or end is None or base >= 1.0 or w.future.done():
                continue  # nothing learned, or a straggler: its own due time covers it
            live.append((w, now - w.accepted_at, base, end))
        if not live:
            return None
        want = min(self.per_poll, max(0.5, len(live) / 2))

        def chance(item: tuple[_Watch, float, float, float], dt: float) -> float:
            w, age, base, _ = item
            done = schedule.cdf(age + dt, w.kind) or 0.0
            return max(0.0, (done - base) / (1.0 - base))

        def expected(dt: float) -> float:  # task ends expected within dt seconds
            return sum(chance(item, dt) for item in live)

        lo, hi = 0.0, max(0.0, max(end - age for _, age, _, end in live))
        if expected(lo) < want:
            if expected(hi) >= want:
                for _ in range(30):
                    mid = (lo + hi) / 2
                    lo, hi = (lo, mid) if expected(mid) >= want else (mid, hi)
                    if hi - lo < 0.005:
                        break
            lo = hi
        likeliest = max(live, key=lambda item: chance(item, lo))[0]
        return lo, likeliest

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for asking in list(self._asking):
            asking.cancel()
        if self._asking:
            await asyncio.gather(*self._asking, return_exceptions=True)
        for watch in self._watches.values():
            if not watch.future.done():
                watch.future.cancel()

    async def _loop(self) -> None:
        try:
            await self._serve()
        except Exception as exc:  # a bug or a broken provider: every waiter hears of it
            for watch in self._watches.values():
                if not watch.future.done():
                    watch.future.set_exception(exc)

    async def _serve(self) -> None:
        while True:
            # Drop entries whose task nobody waits for any more.
            while self._heap and self._heap[0].task_id not in self._watches:
                heapq.heappop(self._heap)
            if not self._heap:
                self._wake.clear()
                if not self._watches:
                    return
                await self._wake.wait()
                continue
            now = time.monotonic()
            wait = self._heap[0].due - now
            ends = self._expected_ends()
            if ends is not None:
                wait = min(wait, max(ends[0], self._quiet_until - now))
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                continue
            due: list[_Watch] = []
            horizon = now + self.coalesce
            while self._heap and self._heap[0].due <= horizon:
                entry = heapq.heappop(self._heap)
                watch = self._watches.get(entry.task_id)
                if watch is not None and not watch.asking and watch not in due:
                    due.append(watch)  # (one asking now is pushed again when its answer is in)
            if not due and ends is not None and ends[1].task_id in self._watches:
                due.append(ends[1])  # the run's poll: one task asked for, the rest ride along
            if due:
                self._quiet_until = now + self.min_gap
                await self._poll(due)

    async def _poll(self, due: list[_Watch]) -> None:
        ids = [w.task_id for w in due]
        answers: dict[str, TaskStatus | ProviderError]
        if self.provider.batch_polling:
            # One list request answers for many tasks: let every other watched task ride along,
            # so a task that finished is seen at the next poll of *any* task, not only its own.
            due_ids = set(ids)
            riders = [t for t in self._watches if t not in due_ids]
            asked = time.time()
            self.polls += 1
            try:
                answers = dict(await self.provider.status_many(ids, riders))
            except ProviderError as exc:
                answers = dict.fromkeys(ids, exc)
            for task_id in riders:
                rider = self._watches.get(task_id)
                answer = answers.get(task_id)
                if rider is None or not isinstance(answer, TaskStatus) or rider.future.done():
                    continue
                if answer.state.done:
                    self._learn(rider, answer)
                    rider.future.set_result(answer)
                else:  # seen unfinished on the page: what it may still take starts from here
                    rider.seen_age = max(rider.seen_age, asked - rider.accepted_at)
            for watch in due:
                if isinstance(answers.get(watch.task_id), TaskStatus):
                    watch.seen_age = max(watch.seen_age, asked - watch.accepted_at)
            if any(isinstance(answers.get(t), ProviderError) for t in ids):
                self._quiet_until = time.monotonic() + max(self.min_gap, self.retry.delay(1, None))
        else:
            # One request per task, each settled as its answer comes: a slow answer (a status that
            # fetches its clip, a connection that hangs) holds up neither the other rows' ends nor
            # the next polls.
            loop = asyncio.get_running_loop()
            for watch in due:
                watch.asking = True
                asking = loop.create_task(self._ask(watch))
                self._asking.add(asking)
                asking.add_done_callback(self._asking.discard)
            return
        for watch in due:
            self._settle(watch, answers.get(watch.task_id) or TransientError(
                "provider did not report on this task", maybe_accepted=False))

    async def _ask(self, watch: _Watch) -> None:
        self.polls += 1
        answer: TaskStatus | ProviderError
        try:
            try:
                answer = await self.provider.status(watch.task_id)
            except ProviderError as exc:
                answer = exc
            watch.asking = False
            self._settle(watch, answer)
        except Exception as exc:  # a bug or a broken provider: the row waiting on it hears of it
            watch.asking = False
            if not watch.future.done():
                watch.future.set_exception(exc)

    def _settle(self, watch: _Watch, answer: TaskStatus | ProviderError) -> None:
        if watch.future.done():
            return
        watch.polls += 1
        if isinstance(answer, TaskStatus):
            watch.failures = 0
            if answer.state.done:
                self._learn(watch, answer)
                watch.future.set_result(answer)
            else:
                self._push(watch)
            return
        if isinstance(answer, TransientError):
            watch.failures += 1
            self._due_at(time.monotonic() + self.retry.delay(watch.failures, answer.retry_after),
                         watch.task_id)
            return
        if isinstance(answer, AuthError):
            self.on_fatal(answer)
        watch.future.set_exception(answer)

    def _learn(self, watch: _Watch, status: TaskStatus) -> None:
        start = status.created_at or watch.accepted_at
        end = status.finished_at or time.time()
        self.schedule.observe(end - start, watch.kind)

