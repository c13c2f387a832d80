"""The poll scheduler: find out when tasks finish without flooding the API or idling slots.

One ``Poller`` serves every task of a run. Each task has a due time; the poller wakes at the
earliest one, polls every task due within a short coalescing window in one go (a single list
request when the provider has one), and reschedules the unfinished ones.

When to poll comes from ``PollSchedule``: before any task has finished it follows the provider's
hint (first poll after ``first_poll`` seconds, then growing intervals); once durations are known it
aims the first poll at the fast end of the observed durations and spaces the rest so that a task is
seen finished soon after it finishes, in about three polls.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ._retry import RetryPolicy
from .errors import AuthError, ProviderError, TransientError
from .providers.base import PollHint, Provider, TaskStatus

__all__ = ["PollSchedule", "Poller"]


class PollSchedule:
    """Chooses the delay before a task's next poll from what finished tasks took."""

    def __init__(self, hint: PollHint, window: int = 50) -> None:
        self.hint = hint
        self._recent: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []

    def observe(self, duration: float) -> None:
        """A task took ``duration`` seconds from acceptance to its end."""
        if duration < 0:
            return
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(duration)
        bisect.insort(self._sorted, duration)

    def _quantile(self, q: float) -> float:
        s = self._sorted
        return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]

    def next_delay(self, age: float, polls: int) -> float:
        """Seconds to wait before the next poll of a task ``age`` seconds old, polled ``polls`` times."""
        h = self.hint
        if len(self._sorted) >= 3:
            fast, slow = self._quantile(0.1), self._quantile(0.9)
            if age < fast:
                return max(fast - age, 0.0)
            step = max(h.min_interval, (slow - fast) / 3)
            if age > slow:  # a straggler: back off gently
                step *= h.growth ** min(polls, 8)
            return min(step, h.max_interval)
        if polls == 0 and age < h.first_poll:
            return h.first_poll - age
        return min(h.max_interval, h.min_interval * h.growth ** max(0, polls - 1))


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    task_id: str = field(compare=False)


@dataclass(eq=False)  # one per task: compared by identity (a field-by-field == made polls O(n²))
class _Watch:
    task_id: str
    accepted_at: float  # epoch seconds
    future: asyncio.Future[TaskStatus]
    polls: int = 0
    failures: int = 0


class Poller:
    """Polls every watched task at its due time and resolves its future when the task ends."""

    def __init__(
        self,
        provider: Provider,
        schedule: PollSchedule,
        *,
        on_fatal: Callable[[ProviderError], None],
        coalesce: float | None = None,
    ) -> None:
        self.provider = provider
        self.schedule = schedule
        self.on_fatal = on_fatal
        hint = provider.poll_hint
        self.coalesce = coalesce if coalesce is not None else min(1.0, hint.min_interval / 2)
        # A failing poll is tried again later, for as long as the task is waited for.
        self.retry = RetryPolicy(attempts=None, base=max(hint.min_interval, 0.05), cap=60.0)
        self.polls = 0  # API requests spent on polling
        self._watches: dict[str, _Watch] = {}
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def wait(self, task_id: str, accepted_at: float) -> TaskStatus:
        """The final status of ``task_id`` (accepted at ``accepted_at``, epoch seconds)."""
        watch = self._watches.get(task_id)
        if watch is None:
            loop = asyncio.get_running_loop()
            watch = _Watch(task_id, accepted_at, loop.create_future())
            self._watches[task_id] = watch
            self._push(watch)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="videobatch-poller")
        try:
            return await asyncio.shield(watch.future)
        finally:
            # Answered, or the waiter gave up (timeout, cancel): either way stop polling it.
            self._watches.pop(task_id, None)

    def _push(self, watch: _Watch) -> None:
        age = time.time() - watch.accepted_at
        delay = self.schedule.next_delay(age, watch.polls)
        heapq.heappush(self._heap, _Entry(time.monotonic() + delay, next(self._seq), watch.task_id))
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
                if watch is not None and watch not in due:
                    due.append(watch)
            if due:
                await self._poll(due)

    async def _poll(self, due: list[_Watch]) -> None:
        ids = [w.task_id for w in due]
        answers: dict[str, TaskStatus | ProviderError]
        if self.provider.batch_polling:
            # One list request answers for many tasks: let every other watched task ride along,
            # so a task that finished is seen at the next poll of *any* task, not only its own.
            due_ids = set(ids)
            riders = [t for t in self._watches if t not in due_ids]
            self.polls += 1
            try:
                answers = dict(await self.provider.status_many(ids, riders))
            except ProviderError as exc:
                answers = dict.fromkeys(ids, exc)
            for task_id in riders:
                rider = self._watches.get(task_id)
                answer = answers.get(task_id)
                if rider is not None and isinstance(answer, TaskStatus) and answer.state.done \
                        and not rider.future.done():
                    self._learn(rider, answer)
                    rider.future.set_result(answer)
        else:
            answers = dict(zip(ids, await asyncio.gather(*(self._one(i) for i in ids)),
                               strict=True))
        for watch in due:
            self._settle(watch, answers.get(watch.task_id) or TransientError(
                "provider did not report on this task", maybe_accepted=False))

    async def _one(self, task_id: str) -> TaskStatus | ProviderError:
        self.polls += 1
        try:
            return await self.provider.status(task_id)
        except ProviderError as exc:
            return exc

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
            delay = self.retry.delay(watch.failures, answer.retry_after)
            heapq.heappush(self._heap, _Entry(time.monotonic() + delay, next(self._seq),
                                              watch.task_id))
            return
        if isinstance(answer, AuthError):
            self.on_fatal(answer)
        watch.future.set_exception(answer)

    def _learn(self, watch: _Watch, status: TaskStatus) -> None:
        start = status.created_at or watch.accepted_at
        end = status.finished_at or time.time()
        self.schedule.observe(end - start)

