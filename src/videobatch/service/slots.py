"""The provider account's parallel-task limit, shared by every worker through leases in Redis.

A sorted set holds one member per request that holds a slot, scored by when its lease expires.
Acquiring is one Lua script (drop expired leases, then add ours if fewer than ``limit`` remain), so
ten workers never hold more slots than the account has. A holder renews its leases while its task
runs; the lease of a worker that died runs out and frees the slot, unless another worker reclaims
the same request first (the member is the request id, so the reclaiming worker keeps its slot).
Lease times come from the Redis server's clock (``TIME``), so workers' clocks need not agree.

A Redis that lost its data (restarted without persistence) has lost the lease set too, while the
workers' tasks still run at the provider. So the set has an epoch (``{key}:epoch``: a random id
and when new slots may be taken). A worker learns it at start; one that finds it gone, or another,
knows the set was reborn: it re-asserts the leases it holds at once, and an epoch reborn that way
takes no new lease for one lease period, the time every live worker needs to re-assert its own.
(A worker started while Redis is empty cannot tell a reborn set from a new one: it opens it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis

from .._jobs import Job, State
from .._pacing import Slots
from .records import UNAVAILABLE

__all__ = ["RedisSlots"]

log = logging.getLogger("videobatch.service")

# Both scripts start with this. KEYS[2] the epoch hash; ARGV[4] the epoch the caller knows ('' at
# start), ARGV[5] a new epoch id, in case the set is (re)born now: a caller that knew one finds
# the set lost, and new leases wait one lease period (re-asserted ones do not).
_EPOCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local epoch = redis.call('HGET', KEYS[2], 'id')
if not epoch then
  epoch = ARGV[5]
  local opens = now
  if ARGV[4] ~= '' then opens = now + tonumber(ARGV[1]) end
  redis.call('HSET', KEYS[2], 'id', epoch, 'opens', tostring(opens))
end
local opens = tonumber(redis.call('HGET', KEYS[2], 'opens')) or 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# KEYS[1] the lease set. ARGV[1] lease seconds, ARGV[2] account limit, ARGV[3] holder.
_ACQUIRE = _EPOCH + """
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or
   (now >= opens and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2])) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
  return {1, epoch}
end
return {0, epoch}
"""

# KEYS[1] the lease set. ARGV[1] lease seconds, ARGV[2] account limit, ARGV[6..] holders. Extends
# our leases; one that expired while Redis or this worker was away is taken again if there is room
# (during a reborn set's wait too). Returns how many could not be (the account may run that many
# tasks too many until they end), and the epoch.
_RENEW = _EPOCH + """
local over = 0
for i = 6, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
  else
    over = over + 1
  end
end
return {over, epoch}
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
        self._epoch_key = f"{key}:epoch"
        self._epoch = ""  # the lease set's epoch as this worker knows it ('' before it knows one)
        self._reasserting: asyncio.Task[None] | None = None

    ceiling = property(lambda self: self._local.ceiling)
    limit = property(lambda self: self._local.limit)
    in_use = property(lambda self: self._local.in_use)

    async def setup(self) -> None:
        """Learn the lease set's epoch (a worker that knows it can tell when Redis lost it)."""
        await self._call(self._renew)

    async def _call(self, script: Any, holder: str = "", *held: str) -> int:
        """Run ``script``; note a reborn lease set (then re-assert ours at once)."""
        answer, epoch = await script(keys=[self.key, self._epoch_key], args=[
            self.lease, self.account_limit, holder, self._epoch, uuid.uuid4().hex, *held])
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if self._epoch and epoch != self._epoch:
            log.error("!!! the slot leases are gone from Redis (it lost its data): re-asserting "
                      "the %d this worker holds; no new slot is taken for %.0f s, so every worker "
                      "re-asserts its own first", len(self._held), self.lease)
            if self._held and (self._reasserting is None or self._reasserting.done()):
                self._reasserting = asyncio.create_task(self._reassert(),
                                                        name="videobatch-slot-reassert")
        self._epoch = epoch
        return int(answer)

    async def _reassert(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self._renew_held()

    async def _renew_held(self) -> None:
        over = await self._call(self._renew, "", *self._held)
        if over:
            log.warning("%d slot lease(s) ran out while held (Redis or this worker was away) "
                        "and others took the room", over)

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
            got = await self._call(self._acquire, holder)
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
            with contextlib.suppress(*UNAVAILABLE):  # if so, the next round tries again
                await self._renew_held()

    async def aclose(self) -> None:
        if self._releaser is not None:  # a little time to give freed slots back
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._releaser), 2.0)
        for task in (self._renewer, self._releaser, self._reasserting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
