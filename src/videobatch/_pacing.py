"""Pacing of provider requests: parallel-task slots and a request-rate limiter (retries: ``_retry``).

- ``Slots``: how many tasks may be in flight. Its limit starts at the provider's parallel-task
  limit and adapts: a "slots busy" answer lowers it to what is really free; quiet successes raise it
  back one at a time (additive increase, like TCP).
- ``RateLimiter``: a token bucket over every API request (submits, polls, lookups, list pages);
  providers take its tokens on the wire through ``videobatch._http`` (``Provider.http_client``).
- ``SlotPool``: the interface the runner takes slots through; ``LocalSlots`` adapts ``Slots`` to it
  (service workers use ``videobatch.service.slots.RedisSlots``, shared through Redis).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._jobs import Job

__all__ = ["LocalSlots", "RateLimiter", "SlotPool", "Slots"]


class RateLimiter:
    """Token bucket: at most ``rate`` requests per second on average, bursts up to ``burst``.

    In any stretch of ``t`` seconds at most ``burst + rate * t`` tokens are handed out. One limiter
    may serve several event loops in turn (a provider reused by a later run): its lock is made
    for the loop that uses it.
    """

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate or 1.0)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def _refill(self, rate: float) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * rate)
        self._stamp = now

    async def acquire(self) -> None:
        rate = self.rate
        if not rate:
            return
        async with self._guard():
            while True:
                self._refill(rate)
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / rate)

    def penalize(self, seconds: float) -> None:
        """The provider said "too fast, wait ``seconds``": no token is handed out before then.

        Answers that arrive together (several requests in flight when the limit hit) do not add
        up: the longest wait asked for wins.
        """
        rate = self.rate
        if rate and seconds > 0:
            self._refill(rate)  # tokens earned while idle must not pay the penalty off at once
            self._tokens = min(self._tokens, -seconds * rate)


class Slots:
    """An adjustable semaphore for in-flight provider tasks.

    ``limit`` is the effective concurrency; ``ceiling`` the most we ever try. ``shrink`` is called
    when the provider says every slot is taken; ``grow`` after a task ends without trouble. A slot
    that frees up is handed to the row that has waited longest (first come, first served); a slot
    free with nobody waiting is taken without waiting at all (once per row of a run).
    """

    def __init__(self, ceiling: int, start: int | None = None) -> None:
        if ceiling < 1:
            raise ValueError("concurrency must be at least 1")
        self.ceiling = ceiling
        self.limit = min(ceiling, start) if start else ceiling  # below the ceiling: probing
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_shrink = 0.0
        self._last_grow = 0.0

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved by _hand_over, with the slot already counted as ours
        except asyncio.CancelledError:
            if not waiter.cancelled():  # handed a slot just as we were cancelled: pass it on
                self.in_use -= 1
                self._hand_over()
            elif waiter in self._waiters:  # (not if a hand-over passed it by already)
                self._waiters.remove(waiter)
            raise

    async def release(self) -> None:
        self.in_use -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():  # (one cancelled, its task not yet told, is passed by)
                self.in_use += 1
                waiter.set_result(None)

    async def shrink(self) -> None:
        """Every provider slot is busy: the real limit is what the *other* holders have."""
        self.limit = max(1, min(self.limit, self.in_use - 1))
        self._last_shrink = time.monotonic()

    async def grow(self, quiet_for: float = 5.0) -> None:
        """One more slot, if none was refused during the last ``quiet_for`` seconds. Until the
        first refusal every call adds one (probing for an unknown limit doubles what is in flight
        per round trip); after one, at most one slot per ``quiet_for`` seconds."""
        now = time.monotonic()
        if self.limit >= self.ceiling or now - self._last_shrink < quiet_for:
            return
        if self._last_shrink and now - self._last_grow < quiet_for:
            return
        self.limit = min(self.ceiling, self.limit + 1)
        self._last_grow = now
        self._hand_over()


class SlotPool(Protocol):
    """Parallel-task slots. ``videobatch._pacing.Slots`` in one process; a Redis lease set shared by
    all workers in service mode."""

    ceiling: int
    limit: int
    in_use: int

    async def acquire(self, job: Job) -> None: ...
    async def release(self, job: Job) -> None: ...
    async def shrink(self) -> None: ...
    async def grow(self) -> None: ...


class LocalSlots:
    """``pacing.Slots`` behind the ``SlotPool`` interface (the job does not matter locally)."""

    def __init__(self, ceiling: int, start: int | None = None) -> None:
        self._slots = Slots(ceiling, start)

    ceiling = property(lambda self: self._slots.ceiling)
    limit = property(lambda self: self._slots.limit)
    in_use = property(lambda self: self._slots.in_use)

    async def acquire(self, job: Job) -> None:
        await self._slots.acquire()

    async def release(self, job: Job) -> None:
        await self._slots.release()

    async def shrink(self) -> None:
        await self._slots.shrink()

    async def grow(self) -> None:
        await self._slots.grow()
