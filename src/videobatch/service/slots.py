"""The provider account's parallel-task limit, shared by every worker through leases in Redis.

A sorted set holds one member per request that holds a slot, scored by when its lease expires.
Acquiring is one Lua script (drop expired leases, then add ours if fewer than ``limit`` remain), so
ten workers never hold more slots than the account has. A holder renews its leases while its task
runs; the lease of a worker that died runs out and frees the slot, unless another worker reclaims
the same request first (the member is the request id, so the reclaiming worker keeps its slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis

from ..jobs import Job, State
from ..pacing import Slots

__all__ = ["RedisSlots"]

_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 1
end
return 0
"""


class RedisSlots:
    """A ``SlotPool`` whose limit is global: ``limit`` slots across all workers sharing ``key``.

    ``ceiling`` is how many rows this worker process drives at once; the Redis lease set decides
    whether one of them may take a provider slot now.
    """

    def __init__(self, client: aioredis.Redis, key: str, *, limit: int, ceiling: int,
                 lease: float = 30.0, wait: float = 0.1) -> None:
        self.client = client
        self.key = key
        self.account_limit = limit
        self.lease = lease
        self.wait = wait
        self._local = Slots(ceiling)
        self._held: set[str] = set()
        self._acquire = client.register_script(_ACQUIRE)
        self._renewer: asyncio.Task[None] | None = None

    ceiling = property(lambda self: self._local.ceiling)
    limit = property(lambda self: self._local.limit)
    in_use = property(lambda self: self._local.in_use)

    async def acquire(self, job: Job) -> None:
        await self._local.acquire()
        try:
            delay = self.wait
            while not await self._try(job.key):
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 1.0)
        except BaseException:
            await self._local.release()
            raise
        self._held.add(job.key)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="videobatch-slot-leases")

    async def _try(self, holder: str) -> bool:
        now = time.time()
        got = await self._acquire(keys=[self.key],
                                  args=[now, now + self.lease, self.account_limit, holder])
        return bool(got)

    async def release(self, job: Job) -> None:
        """Free the slot when the row no longer holds a provider task.

        A row still in flight (the worker is stopping) keeps its lease until it runs out or the
        worker that takes the row over renews it: its task still occupies a slot at the provider.
        """
        if job.key in self._held:
            self._held.discard(job.key)
            if job.state not in (State.SUBMITTING, State.GENERATING):
                with contextlib.suppress(Exception):  # an expired lease frees itself anyway
                    await self.client.zrem(self.key, job.key)
        await self._local.release()

    async def shrink(self) -> None:
        await self._local.shrink()

    async def grow(self) -> None:
        await self._local.grow()

    async def _renew_loop(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease / 3)
            expiry = time.time() + self.lease
            if self._held:
                with contextlib.suppress(Exception):
                    await self.client.zadd(self.key, dict.fromkeys(self._held, expiry), xx=True)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
