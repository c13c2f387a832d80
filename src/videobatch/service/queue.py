"""The shared queue of requests: a Redis stream read by a consumer group of workers.

Each request id is one stream entry. A worker reads entries with XREADGROUP; an entry stays in
the group's pending list until the worker acknowledges it (the request ended). The worker renews
its claim while it works (XCLAIM resets the entry's idle time): that is its lease. Entries whose
lease ran out — their worker died — are taken over by another worker with XAUTOCLAIM, and the runner
then reconciles the request through the provider's idempotency lookup (never paying twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..jobs import TERMINAL, Job, State
from .records import Keys, decode_hash, job_from_hash

__all__ = ["RedisSource", "enqueue_fields"]

log = logging.getLogger("videobatch.service")


def enqueue_fields(request_id: str) -> dict[Any, Any]:
    return {"id": request_id}


class RedisSource:
    """A ``JobSource`` over the Redis stream, for one worker process (``consumer`` names it)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, consumer: str, *, lease: float = 30.0,
                 block: float = 1.0) -> None:
        self.client = client
        self.keys = keys
        self.consumer = consumer
        self.lease = lease
        self.block = block
        self._entries: dict[str, str] = {}  # request id -> stream entry id we hold
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = False

    async def setup(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.client.xgroup_create(self.keys.queue, self.keys.group, id="0", mkstream=True)

    def stop(self) -> None:
        self._stopping = True

    def backlog(self) -> int | None:
        return None  # unknown: keep every worker slot looking for work

    async def next(self) -> Job | None:
        while not self._stopping:
            entry = await self._reclaim() or await self._read()
            if entry is None:
                continue
            entry_id, request_id = entry
            job = await self._load(request_id)
            if job is None or job.state in TERMINAL:
                # Unknown request, or one that ended (e.g. its worker died after finishing).
                await self.client.xack(self.keys.queue, self.keys.group, entry_id)
                continue
            if job.state is State.CANCELLED:
                await self.client.xack(self.keys.queue, self.keys.group, entry_id)
                continue
            self._entries[job.key] = entry_id
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.create_task(self._renew_loop(), name="videobatch-queue-leases")
            return job
        return None

    async def done(self, job: Job) -> None:
        entry_id = self._entries.pop(job.key, None)
        if entry_id is None:
            return
        if job.state in TERMINAL:
            await self.client.xack(self.keys.queue, self.keys.group, entry_id)
        # Otherwise the worker is stopping with the request in flight: leave the entry pending,
        # so another worker takes it over when the lease runs out.

    async def _read(self) -> tuple[str, str] | None:
        answer: Any = await self.client.xreadgroup(
            self.keys.group, self.consumer, {self.keys.queue: ">"}, count=1,
            block=int(self.block * 1000))
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                return _text(entry_id), _text(fields.get(b"id", fields.get("id", b"")))
        return None

    async def _reclaim(self) -> tuple[str, str] | None:
        answer: Any = await self.client.xautoclaim(
            self.keys.queue, self.keys.group, self.consumer, min_idle_time=int(self.lease * 1000),
            start_id="0-0", count=1)
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
        return job_from_hash(decode_hash(raw))

    async def _renew_loop(self) -> None:
        while self._entries:
            await asyncio.sleep(self.lease / 3)
            ids: list[Any] = list(self._entries.values())
            if ids:
                with contextlib.suppress(Exception):
                    await self.client.xclaim(self.keys.queue, self.keys.group, self.consumer,
                                             min_idle_time=0, message_ids=ids, justid=True)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
