"""A batch as a client reads it back: its rows in input order, how many are in each state and what
they spent (USD, ``videobatch._spend``), and its results table as CSV, parquet or JSON.

The routes ``GET /api/v1/batches/{batch_id}`` and ``GET /api/v1/batches/{batch_id}/results``
(``videobatch.service.api``) answer with these; the rows are the job hashes ``records`` lays out.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any, Literal

import pandas as pd
import redis.asyncio as aioredis
from fastapi import HTTPException
from fastapi.responses import Response

from .._jobs import TERMINAL, State
from .._spend import micro, usd
from .records import Keys, cost_spent, decode_hash, public_view
from .schemas import BatchCounts
from .tenants import Tenant

__all__ = ["batch_counts", "batch_rows", "results_response"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def batch_rows(client: aioredis.Redis, keys: Keys, batch_id: str,
                     tenant: Tenant) -> list[dict[str, str]]:
    """The batch's job hashes, decoded, in input order; 404 when there is no such batch, or it is
    another tenant's (the same answer: no way to tell one from the other)."""
    owner = await client.hget(keys.batch(batch_id), "tenant")
    ids = [_text(i) for i in await client.lrange(keys.batch_ids(batch_id), 0, -1)]
    if not ids or not tenant.sees(None if owner is None else _text(owner)):
        raise HTTPException(status_code=404, detail="Batch not found")
    async with client.pipeline(transaction=False) as pipe:
        for rid in ids:
            pipe.hgetall(keys.job(rid))
        raws = await pipe.execute()
    return [decode_hash(r) for r in raws]


def batch_counts(batch_id: str, rows: list[dict[str, str]]) -> BatchCounts:
    """How many of the batch's rows are in each state, and whether every one is over."""
    counts = Counter(r.get("status", "pending") for r in rows)
    done = all(r.get("status") in TERMINAL for r in rows)
    spent = sum(micro(cost_spent(r)) for r in rows)
    reserved = sum(micro(r.get("cost_estimated") or None) for r in rows
                   if r.get("status") == State.SUBMITTING.value)
    return BatchCounts(batch_id=batch_id, total=len(rows),
                       counts={s.value: counts.get(s.value, 0) for s in State}, done=done,
                       spent=usd(spent), reserved=usd(reserved))


def results_response(rows: list[dict[str, str]],
                     format: Literal["csv", "parquet", "json"]) -> Response:
    """The results table (one line per row, in the rows' order) in ``format``."""
    views = [public_view(r) for r in rows]
    table = pd.DataFrame([{**(v.get("request") or {}), **v.get("metadata", {}),
                           **{k: v[k] for k in v if k not in ("request", "metadata")}}
                          for v in views])
    if format == "json":
        return Response(table.to_json(orient="records"), media_type="application/json")
    if format == "parquet":
        buffer = io.BytesIO()
        table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(
            buffer, index=False)
        return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet")
    return Response(table.to_csv(index=False), media_type="text/csv")
