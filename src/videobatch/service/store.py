"""``RedisStore``, the runner's ``Store`` in service mode: each transition one guarded write to the
request's hash, sent by the asyncio client so a slow Redis never stalls the worker's event loop.

``append`` (called by the runner on its loop, never blocking) queues the write; one background
writer sends the queue in order, many writes per round trip (a pipeline). ``durable()`` returns
once every write appended before it is in Redis: the runner awaits it between a ``submitting``
record and the paid request it announces, the queue before acknowledging a request's entry, and
the webhooks before telling a client that its request ended. So every transition is in Redis
before the side effect it announces, as when each write blocked, while the other rows' polling
goes on. (A worker killed meanwhile loses only writes whose side effect has not happened: another
worker reconciles the request with the provider, as after any crash.)

The write itself (``_WRITE``) refuses to change a request that ended, or one whose record
is gone; the end of a request whose record Redis lost is written on the copy its worker took
(``remembered``). While Redis is unreachable the writer waits for it (up to ``outage`` seconds);
after that ``durable()`` and ``append`` raise, and the worker stops rather than pay unrecorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .._jobs import RESULT_FIELDS, Job, State
from .._store import Store
from .records import EXTRA, RETENTION_DAYS, Keys, apatiently

__all__ = ["RedisStore"]

log = logging.getLogger("videobatch.service")

_ENDS = {State.COMPLETED.value, State.FAILED.value, State.CANCELLED.value}
BATCH = 200  # writes per round trip, at most

# KEYS[1] the job hash. ARGV[1] the new status ('' for an annotation), ARGV[2] the record's
# generation ('' when it sets none), ARGV[3] retention seconds (0: forever), ARGV[4] the key prefix,
# ARGV[5..] field/value pairs. Writes nothing to a request that does not exist (-1), nor a status
# change to one that ended (0; except a retry: pending, newer generation). A request that ends
# expires after the retention, and so does its batch after its last row ended; one that starts
# again (a retry) is kept again. (The batch's keys are built here: one Redis, not a cluster.)
_WRITE = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
local ended = {completed = true, failed = true, cancelled = true}
if ARGV[1] ~= '' and ended[current] then
  local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0') or 0
  local wanted = tonumber(ARGV[2])
  if not (ARGV[1] == 'pending' and wanted and wanted > generation) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
local retention = tonumber(ARGV[3]) or 0
if ARGV[1] ~= '' and retention > 0 then
  local batch = redis.call('HGET', KEYS[1], 'batch_id')
  local keys = {KEYS[1]}
  if batch then
    table.insert(keys, ARGV[4] .. 'batch:' .. batch)
    table.insert(keys, ARGV[4] .. 'batch:' .. batch .. ':ids')
  end
  for _, key in ipairs(keys) do
    if ended[ARGV[1]] then redis.call('EXPIRE', key, retention) else redis.call('PERSIST', key) end
  end
end
return 1
"""
# KEYS[1] a job hash that Redis lost; ARGV its fields as the worker took it. Only if still gone.
_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class _Write:
    __slots__ = ("args", "key", "record")

    def __init__(self, record: dict[str, Any], key: str, args: list[Any]) -> None:
        self.record, self.key, self.args = record, key, args


class RedisStore(Store):
    """The runner's store in service mode (see the module docstring)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, run_id: str, *, outage: float = 300.0,
                 retention: float = RETENTION_DAYS * 86400) -> None:
        super().__init__(run_id)
        self.client = client
        self.keys = keys
        self.outage = outage
        self.retention = retention  # seconds a record is kept after its request ended (0: forever)
        self._write = client.register_script(_WRITE)
        self._restore = client.register_script(_RESTORE)
        # The record of a request as its worker took it (``RedisSource.remembered``): the end of a
        # request whose record Redis lost meanwhile is written on a copy of it, not lost.
        self.remembered: Callable[[str], dict[str, str] | None] | None = None
        self._queue: deque[_Write] = deque()
        self._appended = 0  # writes queued so far
        self._written = 0  # ...of which these are in Redis
        self._wake = asyncio.Event()  # set when the queue has work
        self._progress = asyncio.Event()  # set (and replaced) each time writes reach Redis
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    # ------------------------------------------------------------------ the Store interface
    def append(self, record: dict[str, Any]) -> None:
        if self._failed is not None:
            raise self._failed
        mapping: dict[str, str] = {"updated_at": repr(record.get("t", time.time()))}
        if "s" in record:
            mapping["status"] = record["s"]
        for name in RESULT_FIELDS:
            if name in record:
                value = record[name]
                mapping[name] = "" if value is None else (repr(value) if isinstance(value, float)
                                                          else str(value))
        for name, value in (record.get("x") or {}).items():
            mapping[EXTRA + name] = json.dumps(value, default=str)
        args: list[Any] = [record.get("s", ""), str(record.get("generation", "")),
                           str(max(0, round(self.retention))), self.keys.prefix]
        for pair in mapping.items():
            args.extend(pair)
        self._queue.append(_Write(record, self.keys.job(record["k"]), args))
        self._appended += 1
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name="videobatch-redis-store")

    async def durable(self) -> None:
        """Return once every write appended so far is in Redis (raise if it cannot be)."""
        target = self._appended
        while self._written < target:
            if self._failed is not None:
                raise self._failed
            if self._writer is None or self._writer.done():  # (cancelled from outside)
                self._writer = asyncio.get_running_loop().create_task(
                    self._write_loop(), name="videobatch-redis-store")
            progress = self._progress
            await progress.wait()
        if self._failed is not None and self._written < target:
            raise self._failed

    async def close(self, jobs: Sequence[Job]) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for the writes queued (while Redis can take them), then stop the writer."""
        try:
            if self._failed is None:
                await self.durable()
        finally:
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer

    @property
    def location(self) -> str:
        return f"redis ({self.keys.prefix}*)"

    # ------------------------------------------------------------------ the writer
    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = [self._queue[n] for n in range(min(BATCH, len(self._queue)))]
                answers = await apatiently(functools.partial(self._send, batch),
                                           "record requests", self.outage)
                for write, written in zip(batch, answers, strict=True):
                    await self._settle(write, int(written))
                for _ in batch:
                    self._queue.popleft()
                self._written += len(batch)
                self._tell()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # Redis away too long, or refusing: no more records
            log.error("!!! could not record request transitions in Redis (%s); stopping", exc)
            self._failed = exc
            self._tell()
            raise

    def _tell(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    async def _send(self, batch: list[_Write]) -> list[Any]:
        """The writes in one round trip (EVALSHA; the script is loaded again if Redis lost it)."""
        for attempt in (1, 2):
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for write in batch:
                        pipe.evalsha(self._write.sha, 1, write.key, *write.args)
                    return list(await pipe.execute())
            except NoScriptError:  # a restarted Redis: every write of the batch was refused
                if attempt == 2:
                    raise
                self._write.sha = await self.client.script_load(_WRITE)
        raise AssertionError("unreachable")

    async def _settle(self, write: _Write, written: int) -> None:
        """Say what a write that did not apply means; write a lost request's end on its copy."""
        record, key = write.record, write.key
        if written == -1 and record.get("s") in _ENDS and await self._restored(record["k"], key):
            written = int(await apatiently(lambda: self._write(keys=[key], args=write.args),
                                           f"record {key}", self.outage))
        if written == -1:
            log.error("!!! request %s: its record is gone from Redis (did Redis lose its data?); "
                      "%s not recorded%s", record["k"], record.get("s", "an annotation"),
                      f" (provider task {record['task_id']})" if record.get("task_id") else "")
        elif not written and "s" in record:
            log.warning("request %s: not recording %s over its final state (another worker "
                        "finished it)", record["k"], record["s"])

    async def _restored(self, request_id: str, key: str) -> bool:
        fields = self.remembered(request_id) if self.remembered is not None else None
        if not fields:
            return False
        pairs = [item for pair in fields.items() for item in pair]
        restore: Callable[[], Awaitable[Any]] = lambda: self._restore(keys=[key], args=pairs)  # noqa: E731
        if await apatiently(restore, f"restore {key}", self.outage):
            log.error("!!! request %s: its record was gone from Redis (did Redis lose its data?); "
                      "written again from this worker's copy, with its end", request_id)
        return True
