"""Jobs in Redis: key layout, job hash <-> Job, and the store the runner writes transitions to.

Keys (``prefix`` defaults to ``vb:``)::

    {prefix}meta                 hash: run_id (the service's idempotency namespace, made once)
    {prefix}job:{request_id}     hash: one request: status, request JSON, results, metadata
    {prefix}queue                stream: one entry per request to work on (consumer group "workers")
    {prefix}batch:{batch_id}     hash: created_at, total
    {prefix}batch:{batch_id}:ids list: the batch's request ids in input order
    {prefix}slots                sorted set: request ids holding a provider slot, scored by lease expiry
    {prefix}idem:{token}         string: request id created for a client's Idempotency-Key

Every transition is written to the job hash *before* the side effect it announces (``RedisStore``
uses a blocking client, so ``append`` returns only once Redis has it). Run Redis with
``appendonly yes`` and ``appendfsync always`` (or ``everysec``) so a Redis restart keeps them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from ..jobs import RESULT_FIELDS, Job, State
from ..request import VideoRequest
from ..store import Store

__all__ = ["Keys", "RedisStore", "ensure_run_id", "job_from_hash", "new_job_fields"]

_INT = {"attempts", "generation"}
_FLOAT = {"submitted_at", "completed_at", "video_duration", "expires_at", "created_at", "updated_at"}
_EXTRA = "x:"  # hash fields written by observers (webhook outcome, ...)


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

    def idem(self, token: str) -> str:
        return f"{self.prefix}idem:{token}"


def ensure_run_id(client: redis.Redis, keys: Keys) -> str:
    """The service-wide run id (part of every idempotency key), created by whoever comes first."""
    client.hsetnx(keys.meta, "run_id", uuid.uuid4().hex)
    run_id = client.hget(keys.meta, "run_id")
    assert run_id is not None
    return run_id.decode() if isinstance(run_id, bytes) else str(run_id)


def new_job_fields(request_id: str, request: VideoRequest, *, batch_id: str | None = None,
                   row_key: str | None = None, webhook_url: str | None = None,
                   metadata: dict[str, Any] | None = None) -> dict[Any, Any]:
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
    """A job hash as the API shows it (typed, no internals)."""
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
    for name in ("created_at", "submitted_at", "completed_at", "expires_at", "video_duration"):
        raw = fields.get(name)
        out[name] = float(raw) if raw else None
    out["request"] = json.loads(fields["request"]) if "request" in fields else None
    out["metadata"] = json.loads(fields.get("metadata") or "{}")
    for k, v in fields.items():
        if k.startswith(_EXTRA):
            out[k[len(_EXTRA):]] = json.loads(v)
    return out


class RedisStore(Store):
    """The runner's store in service mode: each transition is an HSET on the job's hash."""

    def __init__(self, client: redis.Redis, keys: Keys, run_id: str) -> None:
        super().__init__(run_id)
        self.client = client
        self.keys = keys

    def append(self, record: dict[str, Any]) -> None:
        mapping: dict[Any, Any] = {"updated_at": repr(record.get("t", time.time()))}
        if "s" in record:
            mapping["status"] = record["s"]
        for name in RESULT_FIELDS:
            if name in record:
                value = record[name]
                mapping[name] = "" if value is None else (repr(value) if isinstance(value, float)
                                                          else str(value))
        for name, value in (record.get("x") or {}).items():
            mapping[_EXTRA + name] = json.dumps(value, default=str)
        self.client.hset(self.keys.job(record["k"]), mapping=mapping)

    @property
    def location(self) -> str:
        return f"redis ({self.keys.prefix}*)"
