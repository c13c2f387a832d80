"""The provider account's parallel-task limit, shared by every worker through leases in Redis.

A sorted set holds one member per request that holds a slot, scored by when its lease expires.
Acquiring is one Lua script (drop expired leases, then add ours if fewer than ``limit`` remain), so
ten workers never hold more slots than the account has. A holder renews its leases while its task
runs; the lease of a worker that died runs out and frees the slot, unless another worker reclaims
the same request first (the member is the request id, so the reclaiming worker keeps its slot).
Lease times come from the Redis server's clock (``TIME``), so workers' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from .._jobs import Job, State
from .._pacing import Slots
from .records import UNAVAILABLE

__all__ = ["RedisSlots"]

log = logging.getLogger("videobatch.service")

# KEYS[1] the lease set. ARGV[1] lease seconds, ARGV[2] account limit, ARGV[3] holder.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] the lease set. ARGV[1] lease seconds, ARGV[2] account limit, ARGV[3..] holders. Extends
# our leases; one that expired while Redis or this worker was away is taken again if there is room.
# Returns how many could not be (the account may run that many tasks too many until they end).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local over = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
  else
    over = over + 1
  end
end
return over
"""


class RedisSlots:
    """A ``SlotPool`` whose limit is global: ``limit`` slots across all workers sharing ``key``.

    ``ceiling`` is how many rows this worker process drives at once; the Redis lease set decides
    whether one of them may take a provider slot now.
    """

    def __init__(self, client: aioredis.Redis, key: str, *, limit: int, ceiling: int,
                 lease: float = 30.0, wait: float = 0.05, max_wait: float = 0.25) -> None:
        self.client = client
        self.key = key
        self.account_limit = limit
        self.lease = lease
        self.wait = wait
        self.max_wait = max_wait  # longest a free slot (freed by another worker) may stay unseen
        self._freed = asyncio.Event()  # set when this process frees a slot: wakes its waiters
        self._local = Slots(ceiling)
        self._held: set[str] = set()
        self._unreleased: set[str] = set()  # freed while Redis was away: removed once it is back
        self._down = False
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._renewer: asyncio.Task[None] | None = None
        self._releaser: asyncio.Task[None] | None = None

    ceiling = property(lambda self: self._local.ceiling)
    limit = property(lambda self: self._local.limit)
    in_use = property(lambda self: self._local.in_use)

    async def acquire(self, job: Job) -> None:
        await self._local.acquire()
        try:
            delay = self.wait
            while True:
                freed = self._freed
                if await self._try(job.key):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), delay)
                delay = min(delay * 1.5, self.max_wait)
        except BaseException:
            await self._local.release()
            raise
        self._held.add(job.key)
        self._unreleased.discard(job.key)
        self._ensure_renewer()

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="videobatch-slot-leases")

    async def _try(self, holder: str) -> bool:
        try:
            got = await self._acquire(keys=[self.key], args=[self.lease, self.account_limit, holder])
        except UNAVAILABLE as exc:  # Redis is away: no slot until it is back
            if not self._down:
                log.warning("Redis unavailable (%s) while taking a slot; waiting", exc)
            self._down = True
            return False
        self._down = False
        return bool(got)

    async def release(self, job: Job) -> None:
        """Free the slot when the row no longer holds a provider task.

        A row still in flight (the worker is stopping) keeps its lease until it runs out or the
        worker that takes the row over renews it: its task still occupies a slot at the provider.
        """
        if job.key in self._held:
            self._held.discard(job.key)
            if job.state not in (State.SUBMITTING, State.GENERATING):
                try:
                    await self.client.zrem(self.key, job.key)
                except UNAVAILABLE:
                    # Left as it is, the lease would block an account slot until it expires.
                    self._unreleased.add(job.key)
                    if self._releaser is None or self._releaser.done():
                        self._releaser = asyncio.create_task(self._give_back(),
                                                             name="videobatch-slot-give-back")
                self._freed.set()
                self._freed = asyncio.Event()
        await self._local.release()

    async def shrink(self) -> None:
        await self._local.shrink()

    async def grow(self) -> None:
        await self._local.grow()

    async def _give_back(self) -> None:
        """Remove the leases freed while Redis was away, as soon as it is back."""
        while self._unreleased:
            await asyncio.sleep(self.max_wait)
            gone = list(self._unreleased)
            with contextlib.suppress(*UNAVAILABLE):
                await self.client.zrem(self.key, *gone)
                self._unreleased.difference_update(gone)

    async def _renew_loop(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease / 3)
            if not self._held:
                continue
            try:
                over = await self._renew(keys=[self.key],
                                         args=[self.lease, self.account_limit, *self._held])
            except UNAVAILABLE:
                continue  # the next round tries again
            if over:
                log.warning("%d slot lease(s) ran out while held (Redis or this worker was away) "
                            "and others took the room", over)

    async def aclose(self) -> None:
        if self._releaser is not None:  # a little time to give freed slots back
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._releaser), 2.0)
        for task in (self._renewer, self._releaser):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
