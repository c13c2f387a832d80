"""Jobs in Redis: key layout, job hash <-> Job, and the store the runner writes transitions to.

Keys (``prefix`` defaults to ``vb:``)::

    {prefix}meta                 hash: run_id (the service's idempotency namespace, made once)
    {prefix}job:{request_id}     hash: one request: status, request JSON, results, metadata
    {prefix}queue                stream: one entry per request to work on (consumer group "workers")
    {prefix}batch:{batch_id}     hash: created_at, total
    {prefix}batch:{batch_id}:ids list: the batch's request ids in input order
    {prefix}slots                sorted set: request ids holding a provider slot, scored by lease expiry
    {prefix}slots:epoch          hash: the lease set's epoch (id, when new slots open; ``slots``)
    {prefix}idem:{tenant}:{scope}:{key}  string: the id created for a tenant's Idempotency-Key
    {prefix}rate:{tenant}:{minute}  counter: a tenant's requests this minute (its rate limit)

Job and batch hashes hold the ``tenant`` that created them (``service.tenants``: a name or a keyed
hash, never a token); the API shows them to that tenant and the admin only.

Every transition is written to the job hash *before* the side effect it announces (``RedisStore``
uses a blocking client, so ``append`` returns only once Redis has it). Run Redis with
``appendonly yes`` and ``appendfsync always`` (or ``everysec``) so a Redis restart keeps them.
A record expires ``retention`` seconds after its request ended (default 30 days), its batch after
its last row ended.
While Redis is unreachable ``append`` waits for it (up to ``outage`` seconds) rather than letting a
paid request leave unrecorded. A terminal status is final: a write from a worker that lost its
lease (and still drives the request) never turns a completed request back into an earlier state.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._jobs import RESULT_FIELDS, Job, State, may_have_paid
from .._retry import RetryPolicy, RetryState
from .._store import Store
from ..errors import ConfigError
from ..request import VideoRequest

__all__ = ["RETENTION_DAYS", "Keys", "RedisStore", "cost_spent", "decode_hash", "ensure_run_id",
           "job_from_hash", "new_job_fields", "patiently", "public_view", "retention_from_env"]

_INT = {"attempts", "generation"}
_FLOAT = {"submitted_at", "completed_at", "video_duration", "expires_at", "created_at", "updated_at",
          "cost_estimated", "cost_earlier", "cost_actual", "cost_units"}
_EXTRA = "x:"  # hash fields written by observers (webhook outcome, ...)
_ENDS = {State.COMPLETED.value, State.FAILED.value, State.CANCELLED.value}
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)  # Redis down or restarting (incl. LOADING)

log = logging.getLogger("videobatch.service")
T = TypeVar("T")

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
RETENTION_ENV = "VIDEOBATCH_SERVICE_RETENTION_DAYS"
RETENTION_DAYS = 30.0  # default: a request's record is kept this long after it ended


def retention_from_env() -> float:
    """Seconds a record is kept after its request ended (``VIDEOBATCH_SERVICE_RETENTION_DAYS``,
    default 30; 0 keeps them forever)."""
    text = os.environ.get(RETENTION_ENV, "").strip()
    try:
        days = float(text) if text else RETENTION_DAYS
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise ConfigError(f"{RETENTION_ENV}={text!r}: give a number of days (0: keep forever)")
    return days * 86400


class Keys:
    def __init__(self, prefix: str = "vb:") -> None:
        self.prefix = prefix
        self.meta = f"{prefix}meta"
        self.queue = f"{prefix}queue"
        self.slots = f"{prefix}slots"
        self.group = "workers"

    def job(self, request_id: str) -> str:
        return f"{self.prefix}job:{request_id}"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def batch_ids(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}:ids"

    def idem(self, scoped_key: str) -> str:
        return f"{self.prefix}idem:{scoped_key}"

    def rate(self, tenant: str, minute: int) -> str:
        return f"{self.prefix}rate:{tenant}:{minute}"


def ensure_run_id(client: redis.Redis, keys: Keys) -> str:
    """The service-wide run id (part of every idempotency key), created by whoever comes first."""
    client.hsetnx(keys.meta, "run_id", uuid.uuid4().hex)
    run_id = client.hget(keys.meta, "run_id")
    assert run_id is not None
    return run_id.decode() if isinstance(run_id, bytes) else str(run_id)


def new_job_fields(request_id: str, request: VideoRequest, *, batch_id: str | None = None,
                   row_key: str | None = None, webhook_url: str | None = None,
                   metadata: dict[str, Any] | None = None,
                   tenant: str | None = None) -> dict[Any, Any]:
    """The hash of a new pending request (typed loosely: redis-py's stubs want invariant keys)."""
    now = time.time()
    fields: dict[Any, Any] = {
        "request_id": request_id,
        "status": State.PENDING.value,
        "request": request.model_dump_json(exclude_none=True),
        "metadata": json.dumps(metadata or {}, ensure_ascii=False, default=str),
        "attempts": "0",
        "generation": "0",
        "created_at": repr(now),
        "updated_at": repr(now),
    }
    if tenant:
        fields["tenant"] = tenant
    if batch_id:
        fields["batch_id"] = batch_id
    if row_key:
        fields["row_key"] = row_key
    if webhook_url:
        fields["webhook_url"] = webhook_url
    return fields


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def job_from_hash(fields: dict[str, str]) -> Job:
    """The runner's Job for a request stored in Redis (key = request id)."""
    request = VideoRequest.model_validate_json(fields["request"])
    job = Job(key=fields["request_id"], index=0, request=request, state=State(fields["status"]))
    for name in RESULT_FIELDS:
        raw = fields.get(name)
        if raw is None or raw == "":
            continue
        value: Any = int(raw) if name in _INT else float(raw) if name in _FLOAT else raw
        setattr(job, name, value)
    job.extras = {k[len(_EXTRA):]: json.loads(v) for k, v in fields.items() if k.startswith(_EXTRA)}
    return job


def public_view(fields: dict[str, str]) -> dict[str, Any]:
    """A job hash as the API shows it (typed, no internals; costs are numbers of USD)."""
    out: dict[str, Any] = {
        "request_id": fields.get("request_id"),
        "status": fields.get("status"),
        "video_url": fields.get("video_url") or None,
        "error": fields.get("error") or None,
    }
    for name in ("task_id", "error_kind", "video_id", "batch_id", "row_key", "webhook_url"):
        out[name] = fields.get(name) or None
    for name in ("attempts",):
        out[name] = int(fields.get(name) or 0)
    for name in ("created_at", "submitted_at", "completed_at", "expires_at", "video_duration",
                 "cost_estimated", "cost_actual", "cost_units"):
        out[name] = _number(fields.get(name))
    out["cost_spent"] = cost_spent(fields)
    out["request"] = json.loads(fields["request"]) if "request" in fields else None
    out["metadata"] = json.loads(fields.get("metadata") or "{}")
    for k, v in fields.items():
        if k.startswith(_EXTRA):
            out[k[len(_EXTRA):]] = json.loads(v)
    return out


def _number(raw: str | None) -> float | None:
    return float(raw) if raw else None


def cost_spent(fields: dict[str, str]) -> float | None:
    """What a request has cost or may have cost in USD (``videobatch._spend``), as a number: its
    earlier submissions, and its latest one once a task exists or may (actual where the provider
    reported it, else the estimate). None: nothing paid, or no price known."""
    earlier = _number(fields.get("cost_earlier"))
    try:
        paid = may_have_paid(State(fields.get("status", "pending")), fields.get("task_id") or None)
    except ValueError:
        paid = False
    latest = None
    if paid:
        latest = _number(fields.get("cost_actual"))
        latest = _number(fields.get("cost_estimated")) if latest is None else latest
    if latest is None:
        return earlier
    return round((earlier or 0.0) + latest, 6)


def patiently(call: Callable[[], T], what: str, outage: float = 300.0) -> T:
    """``call()`` on a blocking client, waiting (up to ``outage`` seconds) while Redis is away."""
    tries = RetryState(RetryPolicy(attempts=None, base=0.05, cap=1.0, jitter=0.0, deadline=outage))
    while True:
        try:
            return call()
        except UNAVAILABLE as exc:
            delay = tries.failed()
            if delay is None:
                raise
            if tries.failures == 1:
                log.warning("Redis unavailable (%s); waiting for it to %s", exc, what)
            time.sleep(delay)


class RedisStore(Store):
    """The runner's store in service mode: each transition is one guarded HSET on the job's hash."""

    def __init__(self, client: redis.Redis, keys: Keys, run_id: str, *, outage: float = 300.0,
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

    def append(self, record: dict[str, Any]) -> None:
        mapping: dict[str, str] = {"updated_at": repr(record.get("t", time.time()))}
        if "s" in record:
            mapping["status"] = record["s"]
        for name in RESULT_FIELDS:
            if name in record:
                value = record[name]
                mapping[name] = "" if value is None else (repr(value) if isinstance(value, float)
                                                          else str(value))
        for name, value in (record.get("x") or {}).items():
            mapping[_EXTRA + name] = json.dumps(value, default=str)
        args: list[Any] = [record.get("s", ""), str(record.get("generation", "")),
                           str(max(0, round(self.retention))), self.keys.prefix]
        for pair in mapping.items():
            args.extend(pair)
        key = self.keys.job(record["k"])
        # Blocking on purpose: the transition must be stored before its side effect.
        written = patiently(lambda: self._write(keys=[key], args=args), f"record {key}", self.outage)
        if written == -1 and record.get("s") in _ENDS and self._restored(record["k"], key):
            written = patiently(lambda: self._write(keys=[key], args=args), f"record {key}",
                                self.outage)
        if written == -1:
            log.error("!!! request %s: its record is gone from Redis (did Redis lose its data?); "
                      "%s not recorded%s", record["k"], record.get("s", "an annotation"),
                      f" (provider task {record['task_id']})" if record.get("task_id") else "")
        elif not written and "s" in record:
            log.warning("request %s: not recording %s over its final state (another worker "
                        "finished it)", record["k"], record["s"])

    def _restored(self, request_id: str, key: str) -> bool:
        fields = self.remembered(request_id) if self.remembered is not None else None
        if not fields:
            return False
        pairs = [item for pair in fields.items() for item in pair]
        if patiently(lambda: self._restore(keys=[key], args=pairs), f"restore {key}", self.outage):
            log.error("!!! request %s: its record was gone from Redis (did Redis lose its data?); "
                      "written again from this worker's copy, with its end", request_id)
        return True

    @property
    def location(self) -> str:
        return f"redis ({self.keys.prefix}*)"
