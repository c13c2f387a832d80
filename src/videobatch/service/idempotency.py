"""Creating requests exactly once: the Redis transaction behind ``Idempotency-Key``.

A client may send ``Idempotency-Key`` with a POST. The first time, the request (its hashes and
queue entries, written by ``write``) and the key are stored in one transaction; a repeat with the
same key, tenant and body (its ``fingerprint``) gets the first id back and stores nothing; the same
key with another body is 409. Keys are remembered ``IDEMPOTENCY_TTL`` seconds, per tenant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from fastapi import HTTPException
from redis.exceptions import WatchError

from .records import Keys
from .tenants import Tenant

__all__ = ["IDEMPOTENCY_TTL", "create_once", "file_fingerprint", "fingerprint"]

IDEMPOTENCY_TTL = 7 * 86400  # seconds an Idempotency-Key is remembered


def fingerprint(data: Any) -> str:
    """What identifies a body (bytes, or a JSON-able value) for an Idempotency-Key."""
    raw = data if isinstance(data, bytes) else json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def file_fingerprint(path: Path, extra: str | None) -> str:
    """``fingerprint`` of an uploaded file (read in chunks) and one form field."""
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        while chunk := raw.read(1 << 16):
            digest.update(chunk)
    digest.update((extra or "").encode())
    return digest.hexdigest()[:32]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def create_once(client: aioredis.Redis, keys: Keys, tenant: Tenant, scope: str,
                      idempotency_key: str | None, body_print: str, new_id: str,
                      write: Callable[[Any], None]) -> tuple[str, bool]:
    """Run ``write`` (it queues commands on a pipeline) in one transaction, with the
    Idempotency-Key only if the key is new. Returns (id, created): ``new_id``, or the id the key
    was first used for (409 if it was used with another body)."""
    idem = keys.idem(f"{tenant.id}:{scope}:{idempotency_key}") if idempotency_key else None
    async with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                if idem is not None:
                    await pipe.watch(idem)
                    found = await pipe.get(idem)
                    if found is not None:
                        first_id, _, first_print = _text(found).partition(" ")
                        if first_print != body_print:
                            raise HTTPException(status_code=409, detail=(
                                "this Idempotency-Key was used with a different body; "
                                "use a new key for a new request"))
                        return first_id, False
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(idem, f"{new_id} {body_print}", ex=IDEMPOTENCY_TTL)
                write(pipe)
                await pipe.execute()
                return new_id, True
            except WatchError:  # the same key arrived concurrently: read what it made
                continue
