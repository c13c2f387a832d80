"""The shared queue of requests: a Redis stream read by a consumer group of workers.

Each request id is one stream entry. A worker reads entries with XREADGROUP; an entry stays in
the group's pending list until the worker acknowledges it (the request ended). The worker renews
its claim while it works (XCLAIM resets the entry's idle time): that is its lease. Entries whose
lease ran out — their worker died — are taken over by another worker with XAUTOCLAIM, and the runner
then reconciles the request through the provider's idempotency lookup (never paying twice).

An entry is acknowledged (and deleted) only once its request ended *and* its webhook was delivered
(or gave up): a worker that dies in between leaves the entry to another worker, which sends the
notification it finds owed. A worker that stops gracefully hands its in-flight entries over at once
(their idle time set to the lease). While Redis is unreachable the source waits for it. If Redis
comes back empty (no persistence: ``NOGROUP``), the source recreates its consumer group, says so
loudly and calls ``on_loss``; an entry whose request record is gone is acknowledged and dropped.
The source keeps a copy of the record of each request it hands out (``remembered``), so that the
end of a request whose record Redis lost meanwhile is not lost with it (``records.RedisStore``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .._jobs import SETTLED, Job
from .._retry import RetryPolicy, RetryState
from .records import UNAVAILABLE, Keys, decode_hash, job_from_hash

# Waiting for Redis to come back: 0.1 s doubling to 2 s between tries, for as long as it takes.
REDIS_OUTAGE = RetryPolicy(attempts=None, base=0.1, cap=2.0, jitter=0.0)

__all__ = ["EndHooks", "RedisSource", "enqueue_fields"]

log = logging.getLogger("videobatch.service")

# KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids. Renews (resets the idle
# time of) the entries this consumer still owns; returns the ids another worker has taken over.
_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""


def enqueue_fields(request_id: str) -> dict[Any, Any]:
    return {"id": request_id}


class EndHooks(Protocol):
    """What must happen after a request ends before its entry may be acknowledged (webhooks)."""

    def pending(self, job: Job) -> asyncio.Task[None] | None:
        """The notification of ``job`` still being delivered, if any."""

    def catch_up(self, job: Job) -> asyncio.Task[None] | None:
        """Send the notification ``job`` is owed (its worker died before sending it), if any."""


class RedisSource:
    """A ``JobSource`` over the Redis stream, for one worker process (``consumer`` names it)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, consumer: str, *, lease: float = 30.0,
                 block: float = 1.0, hooks: EndHooks | None = None,
                 on_loss: Callable[[], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.lease = lease
        self.block = block
        self.hooks = hooks
        self.on_loss = on_loss  # called when Redis is found to have lost the queue
        # Awaited before an ended request's entry is acknowledged: its end is in Redis by then
        # (the worker sets the store's ``durable``).
        self.written: Callable[[], Awaitable[None]] | None = None
        self._entries: dict[str, str] = {}  # request id -> stream entry id we hold
        self._records: dict[str, dict[str, str]] = {}  # request id -> its hash when we took it
        self._renewer: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self._renew = client.register_script(_RENEW)
        self._stopping = False
        self._down = False
        self._cursor = "0-0"  # where the next XAUTOCLAIM scan of the pending entries starts

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def setup(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.client.xgroup_create(self.keys.queue, self.keys.group, id="0", mkstream=True)

    def stop(self) -> None:
        self._stopping = True

    def backlog(self) -> int | None:
        return None  # unknown: keep every worker slot looking for work

    async def next(self) -> Job | None:
        outage = RetryState(REDIS_OUTAGE)  # a worker waits out a Redis outage, however long
        while not self._stopping:
            try:
                entry = await self._reclaim() or await self._read()
                job = await self._load(entry[1]) if entry is not None else None
            except UNAVAILABLE as exc:
                if not self._down:
                    log.warning("Redis unavailable (%s); waiting for it", exc)
                self._down = True
                await outage.sleep(outage.failed() or 0.0)
                continue
            except ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                await self._lost(exc)
                continue
            if self._down:
                log.warning("Redis is back")
                self._down = False
                outage.reset()
            if entry is None:
                continue
            entry_id = entry[0]
            if job is None:  # unknown request (its hash is gone)
                log.error("!!! queue entry %s names request %s, whose record is gone from Redis "
                          "(did Redis lose its data?): dropped, nothing submitted", entry_id, entry[1])
                await self._ack(entry_id)
                continue
            if job.state in SETTLED:
                # It ended (or its outcome is unknown: the API says what to check), but its
                # worker died before acknowledging: send what it owed.
                owed = self.hooks.catch_up(job) if self.hooks is not None else None
                if owed is not None:
                    self._hold(job.key, entry_id, owed)
                else:
                    await self._ack(entry_id)
                continue
            self._entries[job.key] = entry_id
            self._ensure_renewer()
            return job
        return None

    async def _lost(self, exc: ResponseError) -> None:
        """The stream or its group is gone (Redis lost its data): recreate them, say it loudly."""
        log.error("!!! the request queue's consumer group is gone from Redis (%s): Redis lost its "
                  "data (restarted without persistence?). Recreating it; requests accepted before "
                  "are lost, and requests in flight here are not submitted again", exc)
        self._cursor = "0-0"
        with contextlib.suppress(*UNAVAILABLE):  # away again: the next read tells
            await self.setup()
            if self.on_loss is not None:
                await self.on_loss()

    async def done(self, job: Job) -> None:
        if job.state in SETTLED and self.written is not None:
            await self.written()  # (while the copy of its record is still here to restore)
        self._records.pop(job.key, None)
        entry_id = self._entries.get(job.key)
        if entry_id is None:
            return  # another worker took the request over (our lease ran out)
        if job.state in SETTLED:
            delivering = self.hooks.pending(job) if self.hooks is not None else None
            if delivering is not None and not delivering.done():
                self._hold(job.key, entry_id, delivering)
                return
            self._entries.pop(job.key, None)
            await self._ack(entry_id)
            return
        # Not ended: the worker stops, or may not submit now (e.g. the account ran out of credit).
        # Its lease is no longer renewed; a stopping worker hands the request over right away
        # (another worker reconciles it with the provider) instead of letting the lease run out.
        self._entries.pop(job.key, None)
        if not self._stopping:
            return
        with contextlib.suppress(*UNAVAILABLE, ResponseError):  # (NOGROUP: Redis lost it)
            await self.client.xclaim(self.keys.queue, self.keys.group, self.consumer,
                                     min_idle_time=0, message_ids=[entry_id],
                                     idle=int(self.lease * 1000), justid=True)

    def _hold(self, key: str, entry_id: str, delivering: asyncio.Task[None]) -> None:
        """Keep the entry (and renew its lease) until the delivery ends, then acknowledge it."""
        self._entries[key] = entry_id
        self._ensure_renewer()

        def finished(task: asyncio.Task[None]) -> None:
            self._entries.pop(key, None)
            if task.cancelled():
                return  # abandoned (the worker stops): another worker will deliver it
            ack = asyncio.get_running_loop().create_task(self._ack(entry_id))
            self._acks.add(ack)
            ack.add_done_callback(self._acks.discard)

        delivering.add_done_callback(finished)

    async def _ack(self, entry_id: str) -> None:
        """Acknowledge and delete the entry; if Redis is away, its lease will hand it on."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.keys.queue, self.keys.group, entry_id)
                pipe.xdel(self.keys.queue, entry_id)
                await pipe.execute()
        except UNAVAILABLE as exc:
            log.warning("could not acknowledge %s (%s); another worker will", entry_id, exc)

    async def _read(self) -> tuple[str, str] | None:
        answer: Any = await self.client.xreadgroup(
            self.keys.group, self.consumer, {self.keys.queue: ">"}, count=1,
            block=int(self.block * 1000))
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                return _text(entry_id), _text(fields.get(b"id", fields.get("id", b"")))
        return None

    async def _reclaim(self) -> tuple[str, str] | None:
        # XAUTOCLAIM looks at a few pending entries per call: go on from where the last call
        # stopped, so an expired entry behind many live ones is found too.
        answer: Any = await self.client.xautoclaim(
            self.keys.queue, self.keys.group, self.consumer, min_idle_time=int(self.lease * 1000),
            start_id=self._cursor, count=1)
        self._cursor = _text(answer[0]) if answer else "0-0"
        claimed = answer[1] if answer else []
        for entry_id, fields in claimed:
            if fields is None:  # the entry was deleted
                continue
            request_id = _text(fields.get(b"id", fields.get("id", b"")))
            log.warning("taking over request %s from a worker whose lease ran out", request_id)
            return _text(entry_id), request_id
        return None

    async def _load(self, request_id: str) -> Job | None:
        raw = await self.client.hgetall(self.keys.job(request_id))
        if not raw:
            return None
        fields = decode_hash(raw)
        job = job_from_hash(fields)
        if job.state not in SETTLED:
            self._records[request_id] = fields
        return job

    def remembered(self, request_id: str) -> dict[str, str] | None:
        """The record of a request this worker drives, as it was when taken (Redis lost it?)."""
        return self._records.get(request_id)

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="videobatch-queue-leases")

    async def _renew_loop(self) -> None:
        while self._entries:
            await asyncio.sleep(self.lease / 3)
            held = dict(self._entries)
            if not held:
                continue
            try:
                lost = {_text(i) for i in await self._renew(
                    keys=[self.keys.queue], args=[self.keys.group, self.consumer, *held.values()])}
            except (*UNAVAILABLE, ResponseError):
                continue  # Redis is away (or lost the group: next() recreates it); try again
            for key, entry_id in held.items():
                if entry_id in lost and self._entries.get(key) == entry_id:
                    log.warning("request %s was taken over by another worker", key)
                    del self._entries[key]

    async def aclose(self) -> None:
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
