"""The HTTP gateway (FastAPI): the seed's endpoints plus batch endpoints, bearer-token auth.

    POST /api/v1/videos                    one request -> {request_id, status: "pending"}
    GET  /api/v1/videos/{request_id}       status, video_url, error (404 for unknown ids)
    POST /api/v1/batches                   many rows (JSON, or a CSV upload) -> {batch_id, ...}
    GET  /api/v1/batches/{batch_id}        counts per state
    GET  /api/v1/batches/{batch_id}/results?format=csv|parquet|json

Every endpoint needs ``Authorization: Bearer <token>`` with a token from ``VIDEOBATCH_API_TOKENS``
(comma-separated); without one the answer is 401 and nothing is touched. Bodies are validated
with the library's own rules (422 lists every problem). A client may send ``Idempotency-Key``: a
repeated POST with the same key returns the first answer instead of creating (and paying for)
another request.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pandas as pd
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InputError
from ..inputs import load_prompts
from ..jobs import State
from ..request import VideoRequest
from .queue import enqueue_fields
from .records import Keys, decode_hash, new_job_fields, public_view

__all__ = ["create_app"]

_FIELDS = ("prompt", "negative_prompt", "model", "duration", "aspect_ratio", "mode", "cfg_scale",
           "image", "image_tail", "camera_control")


class VideoCreate(BaseModel):
    """One video request (the seed's fields plus the library's request fields)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", max_length=2500)
    negative_prompt: str | None = Field(None, max_length=2500)
    model: str | None = None
    duration: int | None = None
    aspect_ratio: str | None = None
    mode: str | None = None
    cfg_scale: float | None = None
    image: str | None = None
    image_tail: str | None = None
    camera_control: dict[str, Any] | None = None
    webhook_url: str | None = Field(None, max_length=2048)
    metadata: dict[str, Any] | None = None


class VideoCreated(BaseModel):
    request_id: str
    status: str
    message: str


class VideoStatus(BaseModel):
    request_id: str
    status: str
    video_url: str | None = None
    error: str | None = None
    error_kind: str | None = None
    task_id: str | None = None
    attempts: int = 0
    batch_id: str | None = None
    created_at: float | None = None
    submitted_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)
    defaults: dict[str, Any] | None = None
    webhook_url: str | None = None


class BatchCreated(BaseModel):
    batch_id: str
    total: int
    request_ids: list[str]


class BatchCounts(BaseModel):
    batch_id: str
    total: int
    counts: dict[str, int]
    done: bool


# Module level: FastAPI resolves the (string) annotations of endpoints against module globals.
_BEARER = HTTPBearer(auto_error=False)


def _problems_response(problems: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": problems})


def create_app(redis_url: str | None = None, *, tokens: list[str] | None = None,
               prefix: str = "vb:") -> FastAPI:
    """The gateway app. ``tokens`` default to ``VIDEOBATCH_API_TOKENS``; with none, every request
    is refused (a service without tokens would be open to anyone)."""
    url = redis_url or os.environ.get("VIDEOBATCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    allowed = [t for t in (tokens if tokens is not None else
                           os.environ.get("VIDEOBATCH_API_TOKENS", "").split(",")) if t.strip()]
    keys = Keys(prefix)
    client = aioredis.Redis.from_url(url)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="videobatch", version="1", description=__doc__, lifespan=lifespan)
    async def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        token = credentials.credentials if credentials else ""
        if not any(hmac.compare_digest(token.encode(), t.strip().encode()) for t in allowed):
            raise HTTPException(status_code=401, detail="missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorized)]

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return _problems_response([{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()])

    async def _remembered(idem: str | None) -> str | None:
        if not idem:
            return None
        found = await client.get(keys.idem(idem))
        return found.decode() if isinstance(found, bytes) else found

    @app.post("/api/v1/videos", status_code=202, response_model=VideoCreated, dependencies=auth,
              responses={422: {"description": "invalid request (every problem listed)"}})
    async def create_video(body: VideoCreate,
                           idempotency_key: Annotated[str | None, Header(max_length=200)] = None
                           ) -> VideoCreated | JSONResponse:
        """Submit one video generation request (the seed's endpoint)."""
        fields = {k: v for k, v in body.model_dump(include=set(_FIELDS)).items()
                  if v is not None and v != ""}
        try:
            request = VideoRequest.model_validate(fields)
        except ValidationError as exc:
            return _problems_response([{"loc": list(e["loc"]) or [e.get("ctx", {}).get("field")],
                                        "msg": e["msg"], "allowed": e.get("ctx", {}).get("allowed")}
                                       for e in exc.errors()])
        previous = await _remembered(idempotency_key)
        if previous:
            return VideoCreated(request_id=previous, status="pending", message="already submitted")
        request_id = uuid.uuid4().hex
        if idempotency_key and not await client.set(keys.idem(idempotency_key), request_id, nx=True,
                                                    ex=7 * 86400):
            previous = await _remembered(idempotency_key)
            return VideoCreated(request_id=previous or request_id, status="pending",
                                message="already submitted")
        job = new_job_fields(request_id, request, webhook_url=body.webhook_url, metadata=body.metadata)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.job(request_id), mapping=job)
            pipe.xadd(keys.queue, enqueue_fields(request_id))
            await pipe.execute()
        return VideoCreated(request_id=request_id, status="pending",
                            message="Video generation request submitted")

    @app.get("/api/v1/videos/{request_id}", response_model=VideoStatus, dependencies=auth,
             responses={404: {"description": "no such request"}})
    async def get_video(request_id: str) -> VideoStatus:
        """Status of one request: pending, submitting, generating, completed or failed."""
        raw = await client.hgetall(keys.job(request_id))
        if not raw:
            raise HTTPException(status_code=404, detail="Request not found")
        return VideoStatus(**{k: v for k, v in public_view(decode_hash(raw)).items()
                              if k in VideoStatus.model_fields and k != "metadata"},
                           metadata=public_view(decode_hash(raw))["metadata"])

    async def _create_batch(frame_or_rows: Any, defaults: dict[str, Any] | None,
                            webhook_url: str | None) -> BatchCreated | JSONResponse:
        try:
            prompts = load_prompts(frame_or_rows, defaults=defaults)
        except InputError as exc:
            return _problems_response([{"row": p.row, "column": p.column, "msg": p.message,
                                        "allowed": p.allowed} for p in exc.problems])
        except Exception as exc:  # ConfigError for bad defaults, odd cell types
            return _problems_response([{"msg": str(exc)}])
        batch_id = uuid.uuid4().hex
        frame = prompts.frame
        meta_cols = [c for c in frame.columns if c not in _FIELDS and c != "webhook_url"]
        records = frame[meta_cols].to_dict("records") if meta_cols else [{}] * len(frame)
        hooks = (frame["webhook_url"].tolist() if "webhook_url" in frame.columns
                 else [None] * len(frame))
        ids = [uuid.uuid4().hex for _ in prompts.requests]
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.batch(batch_id), mapping={"total": len(ids), "source": prompts.source})
            pipe.rpush(keys.batch_ids(batch_id), *ids)
            for rid, key, request, meta, hook in zip(ids, prompts.keys, prompts.requests, records,
                                                      hooks, strict=True):
                url = hook if isinstance(hook, str) and hook.strip() else webhook_url
                pipe.hset(keys.job(rid), mapping=new_job_fields(
                    rid, request, batch_id=batch_id, row_key=key, webhook_url=url,
                    metadata={str(k): v for k, v in meta.items() if not pd.isna(v)}))
                pipe.xadd(keys.queue, enqueue_fields(rid))
            await pipe.execute()
        return BatchCreated(batch_id=batch_id, total=len(ids), request_ids=ids)

    @app.post("/api/v1/batches", status_code=202, response_model=BatchCreated, dependencies=auth,
              responses={422: {"description": "invalid rows (every problem listed)"}})
    async def create_batch(body: BatchCreate) -> BatchCreated | JSONResponse:
        """Submit many rows at once (the same columns as a prompts CSV)."""
        return await _create_batch(body.rows, body.defaults, body.webhook_url)

    @app.post("/api/v1/batches/csv", status_code=202, response_model=BatchCreated,
              dependencies=auth, responses={422: {"description": "invalid CSV (every problem listed)"}})
    async def create_batch_csv(file: UploadFile) -> BatchCreated | JSONResponse:
        """Submit a prompts CSV file (multipart upload, field name ``file``)."""
        data = await file.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return _problems_response([{"msg": f"the CSV is not UTF-8 (byte {exc.start}): save it as UTF-8"}])
        try:
            frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""], dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            return _problems_response([{"msg": f"unreadable CSV: {exc}"}])
        return await _create_batch(frame, None, None)

    async def _batch_rows(batch_id: str) -> list[dict[str, str]]:
        ids = [i.decode() if isinstance(i, bytes) else str(i)
               for i in await client.lrange(keys.batch_ids(batch_id), 0, -1)]
        if not ids:
            raise HTTPException(status_code=404, detail="Batch not found")
        async with client.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hgetall(keys.job(rid))
            raws = await pipe.execute()
        return [decode_hash(r) for r in raws]

    @app.get("/api/v1/batches/{batch_id}", response_model=BatchCounts, dependencies=auth,
             responses={404: {"description": "no such batch"}})
    async def get_batch(batch_id: str) -> BatchCounts:
        """How many rows of the batch are in each state."""
        rows = await _batch_rows(batch_id)
        counts = Counter(r.get("status", "pending") for r in rows)
        done = all(r.get("status") in (State.COMPLETED, State.FAILED, State.CANCELLED) for r in rows)
        return BatchCounts(batch_id=batch_id, total=len(rows),
                           counts={s.value: counts.get(s.value, 0) for s in State}, done=done)

    @app.get("/api/v1/batches/{batch_id}/results", dependencies=auth,
             responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {},
                                          "application/json": {}}},
                        404: {"description": "no such batch"}})
    async def batch_results(batch_id: str, format: str = "csv") -> Response:
        """The batch's results table as CSV, parquet or JSON."""
        rows = await _batch_rows(batch_id)
        views = [public_view(r) for r in rows]
        table = pd.DataFrame([{**(v.get("request") or {}), **v.get("metadata", {}),
                               **{k: v[k] for k in v if k not in ("request", "metadata")}}
                              for v in views])
        if format == "csv":
            return Response(table.to_csv(index=False), media_type="text/csv")
        if format == "json":
            return Response(table.to_json(orient="records"), media_type="application/json")
        if format == "parquet":
            buffer = io.BytesIO()
            table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(
                buffer, index=False)
            return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet")
        raise HTTPException(status_code=422, detail="format must be csv, parquet or json")

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, Any]:
        await client.ping()
        return {"ok": True}

    return app
