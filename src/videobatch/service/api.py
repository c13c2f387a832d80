"""The HTTP gateway (FastAPI): the seed's endpoints plus batch endpoints, bearer-token auth.

    POST /api/v1/videos                    one request -> {request_id, status: "pending"}
    GET  /api/v1/videos/{request_id}       status, video_url, error (404 for unknown ids)
    POST /api/v1/batches                   many rows as JSON -> {batch_id, total, request_ids}
    POST /api/v1/batches/csv               a prompts CSV (multipart field ``file``) -> the same
    GET  /api/v1/batches/{batch_id}        counts per state
    GET  /api/v1/batches/{batch_id}/results?format=csv|parquet|json

Every ``/api/`` endpoint needs ``Authorization: Bearer <token>`` with a tenant's token
(``service.tenants``); without one the answer is 401 before the body is even read, and nothing is
touched. A tenant sees only its own requests and batches: another's id is 404, exactly like an
unknown one; the admin token sees all (records stored before tenants existed: the admin only).
The OpenAPI spec (``/openapi.json``) and docs (``/docs``) are public.
Bodies are validated with the library's own rules (422 lists every problem, by row for batches).
A client may send ``Idempotency-Key``: a repeated POST with the same key (and tenant) returns the
first answer instead of creating (and paying for) another request; the same key with a different
body is refused (409). Creation is one Redis transaction: a request is enqueued exactly when its
202 answer is sent. While Redis is unreachable the API answers 503 with ``Retry-After``; under load
a request waits (bounded) for one of the pool's Redis connections instead.

Hostile input (``service.checks``, with ``limits``, ``images``, ``addresses``): a body over the
size limit is 413 unread; too many rows, too long a prompt, too much metadata are 422; an image
may be only an http(s) URL, image bytes sent with the request or a file of the operator's image
folder (never a path of the host); webhook and image URLs may not name internal addresses.
Browsers: no cross-origin page may call it unless the operator lists its origin (``service.cors``).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import redis.asyncio as aioredis
from fastapi import FastAPI, Form, Header, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from .._inputs import load_prompts
from ..delivery.webhooks import check_urls
from ..errors import ConfigError, InputError, Problem
from ..providers import rules_of
from ..request import REQUEST_FIELDS, VideoRequest, request_errors
from . import callbacks
from .addresses import AddressPolicy
from .auth import BearerGate, Caller
from .batch_views import batch_counts, batch_rows, results_response
from .checks import Cache, RequestChecks
from .cors import CorsPolicy
from .idempotency import create_once, file_fingerprint, fingerprint
from .images import ImageRules
from .limits import BodyLimit, ServiceLimits, copy_in_chunks, count_csv_rows
from .queue import enqueue_fields
from .records import UNAVAILABLE, Keys, decode_hash, new_job_fields, public_view
from .redis_loss import acheck_persistence
from .schemas import (
    BatchCounts,
    BatchCreate,
    BatchCreated,
    VideoCreate,
    VideoCreated,
    VideoStatus,
    check_webhook_url,
    problems_response,
    row_problems,
)
from .tenants import Tenant, Tenants

__all__ = ["create_app"]

_NOT_METADATA = frozenset({*REQUEST_FIELDS, "webhook_url"})
# What of a create body becomes the request (the earlier spellings are read as they were).
_REQUEST_BODY = {*REQUEST_FIELDS, "options", "mode", "cfg_scale", "image_tail", "camera_control"}


_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    429: {"description": "the tenant's requests_per_minute is used up; retry after Retry-After"},
    503: {"description": "Redis is unreachable; retry after Retry-After seconds"},
}
_POSTS: dict[int | str, dict[str, Any]] = {
    **_COMMON,
    400: {"description": "the body cannot be read (not UTF-8 JSON, or a broken upload)"},
    409: {"description": "Idempotency-Key reused for another body"},
    413: {"description": "the body is over VIDEOBATCH_SERVICE_MAX_BODY_BYTES"},
}
# Module level, like every name in the endpoints' signatures (Caller, the bodies): FastAPI resolves
# the (string) annotations of endpoints against module globals.
IdemKey = Annotated[str | None, Header(max_length=200, description="repeat-safe POST key")]


def _cell(value: Any) -> Any:
    """A JSON-safe metadata value (numpy scalars unwrapped, NaN dropped as None)."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, list | dict):
        with contextlib.suppress(TypeError, ValueError):
            value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain_frame(source: Any, rows: list[dict[str, Any]] | None) -> pd.DataFrame | None:
    """The rows as a table without the library's checks, or None if even that fails."""
    try:
        return pd.DataFrame(rows) if rows is not None else pd.read_csv(
            source, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


REDIS_CONNECTIONS_ENV = "VIDEOBATCH_SERVICE_REDIS_CONNECTIONS"
FETCH_IMAGES_ENV = "VIDEOBATCH_SERVICE_FETCH_IMAGES"  # 0: image URLs are not fetched to check them
REDIS_WAIT = 10.0  # seconds a request waits for a free Redis connection before 503


def _pool_size() -> int:
    text = os.environ.get(REDIS_CONNECTIONS_ENV, "").strip()
    if not text:
        return 100
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{REDIS_CONNECTIONS_ENV}={text!r}: give a whole number of at least 1")
    return int(text)


def create_app(redis_url: str | None = None, *, tokens: list[str] | None = None,
               prefix: str = "vb:", provider: str = "local", limits: ServiceLimits | None = None,
               addresses: AddressPolicy | None = None, images: ImageRules | None = None,
               redis_connections: int | None = None, tenants: Tenants | None = None,
               cors: CorsPolicy | None = None, fetch_images: bool | None = None) -> FastAPI:
    """The gateway app. ``tenants`` default to the environment (``service.tenants``), with
    ``tokens`` (each a tenant) in place of ``VIDEOBATCH_API_TOKENS`` if given; with no token,
    every request is refused (a service without tokens would be open to anyone). ``provider``: the
    one the workers use; requests are checked against its options and models before they are queued.
    ``limits``, ``addresses`` (the policy for webhook and image URLs), ``images`` (the image
    rules), ``redis_connections`` (the Redis pool's size; requests wait for a free one) and
    ``cors`` (the web origins that may call it) default to the ``VIDEOBATCH_SERVICE_*``
    environment variables (see the README). ``fetch_images``: fetch each image URL a client sends
    to check it is an image, through the address policy (default: yes, unless
    ``VIDEOBATCH_SERVICE_FETCH_IMAGES=0``)."""
    rules = rules_of(provider)
    context = {"rules": rules}
    url = redis_url or os.environ.get("VIDEOBATCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    tenants = tenants if tenants is not None else Tenants.from_env(tokens)
    limits = limits or ServiceLimits.from_env()
    addresses = addresses or AddressPolicy.from_env()
    images = images or ImageRules.from_env(addresses)
    if fetch_images is None:
        fetch_images = os.environ.get(FETCH_IMAGES_ENV, "1").strip().lower() not in ("0", "no", "false")
    checks = RequestChecks(limits, images, addresses, fetch=fetch_images)
    keys = Keys(prefix)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=redis_connections or _pool_size(), timeout=REDIS_WAIT)
    client = aioredis.Redis.from_pool(pool)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with contextlib.suppress(*UNAVAILABLE):  # unreachable now: 503s say so
            await acheck_persistence(client)  # a loud warning if a restart would lose everything
        yield
        await client.aclose()

    app = FastAPI(title="videobatch", version="1", description=__doc__, lifespan=lifespan)
    app.state.tenants, app.state.keys, app.state.redis = tenants, keys, client
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes, max_json_values=limits.max_json_values)
    app.add_middleware(BearerGate, tenants=tenants)  # 401 before anything is read
    (cors if cors is not None else CorsPolicy.from_env()).install(app)  # preflights need no token

    @app.exception_handler(ValidationError)
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: ValidationError | RequestValidationError) -> JSONResponse:
        return problems_response([{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()])

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the queue (Redis) is unavailable; retry shortly"},
                            status_code=503, headers={"Retry-After": "1"})

    for error in UNAVAILABLE:
        app.add_exception_handler(error, _unavailable)

    @app.post("/api/v1/videos", status_code=202, response_model=VideoCreated,
              responses={**_POSTS, 422: {"description": "invalid request (every problem listed)"}})
    async def create_video(body: VideoCreate, tenant: Caller, response: Response,
                           idempotency_key: IdemKey = None) -> VideoCreated | JSONResponse:
        """Submit one video generation request (the seed's endpoint)."""
        stored, problems = await checks.video(body, tenant.id)
        fields = {k: v for k, v in body.model_dump(include=_REQUEST_BODY).items()
                  if v is not None and v != ""}
        fields.update(stored)
        try:
            request = VideoRequest.model_validate(fields, context=context)
        except ValidationError as exc:
            problems += [{"loc": list(e["loc"]) or [e.get("ctx", {}).get("field")],
                          "msg": e["msg"], "allowed": e.get("ctx", {}).get("allowed")}
                         for e in request_errors(exc)]
        if problems:
            return problems_response(problems)
        job = new_job_fields(uuid.uuid4().hex, request, webhook_url=body.webhook_url,
                             metadata=body.metadata, tenant=tenant.id)

        def write(pipe: Any) -> None:
            pipe.hset(keys.job(job["request_id"]), mapping=job)
            pipe.xadd(keys.queue, enqueue_fields(job["request_id"]))

        request_id, created = await create_once(client, keys, tenant, "videos", idempotency_key,
                                               fingerprint(body.model_dump(mode="json")),
                                            job["request_id"], write)
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
            return VideoCreated(request_id=request_id, status="pending", message="already submitted")
        return VideoCreated(request_id=request_id, status="pending",
                            message="Video generation request submitted")

    @app.get("/api/v1/videos/{request_id}", response_model=VideoStatus,
             responses={**_COMMON, 404: {"description": "no such request"}})
    async def get_video(request_id: str, tenant: Caller) -> VideoStatus:
        """Status of one request: pending, submitting, generating, completed or failed."""
        fields = decode_hash(await client.hgetall(keys.job(request_id)))
        if not fields or not tenant.sees(fields.get("tenant")):  # another's: as if unknown
            raise HTTPException(status_code=404, detail="Request not found")
        view = public_view(fields)
        return VideoStatus(**{k: v for k, v in view.items() if k in VideoStatus.model_fields})

    async def _create_batch(tenant: Tenant, idempotency_key: str | None, body_print: str,
                            source: Any, defaults: dict[str, Any] | None, webhook_url: str | None,
                            raw_rows: list[dict[str, Any]] | None = None,
                            name: str | None = None) -> tuple[bool, BatchCreated | JSONResponse]:
        problems: list[Problem] = []
        prompts = None
        cache: Cache = {}
        if defaults:  # run-wide cells: checked (and images stored) like a row's
            defaults, refused = await checks.defaults(defaults, cache)
            problems.extend(refused)
        try:
            prompts = await run_in_threadpool(load_prompts, source, defaults=defaults, rules=rules)
        except InputError as exc:
            problems.extend(exc.problems)
        except ConfigError as exc:  # bad defaults
            problems.append(Problem(None, "defaults", str(exc)))
        given = prompts.frame if prompts is not None else await run_in_threadpool(
            _plain_frame, source, raw_rows)  # rows the library refused: check their URLs too
        stored: dict[int, dict[str, str]] = {}
        if given is not None:
            problems.extend(check_urls(given))
            stored, refused = await checks.rows(given, webhook_url, cache, tenant.id)
            problems.extend(refused)
        frame = prompts.frame if prompts is not None else None
        metas: list[dict[str, Any]] = []
        if raw_rows is not None:  # JSON rows: metadata keeps its JSON types
            metas = [{str(k): v for k, v in r.items() if k not in _NOT_METADATA} for r in raw_rows]
        elif frame is not None:
            columns = [c for c in frame.columns if c not in _NOT_METADATA]
            metas = [{str(k): _cell(v) for k, v in r.items()} for r in frame[columns].to_dict("records")]
        metas = [{k: v for k, v in meta.items() if v is not None and v == v} for meta in metas]
        problems.extend(checks.metadata(metas))
        if problems or prompts is None or frame is None:
            return False, problems_response(row_problems(problems))
        requests = [request.model_copy(update=stored[n]) if n in stored else request
                    for n, request in enumerate(prompts.requests, start=1)]
        hooks = (frame["webhook_url"].tolist() if "webhook_url" in frame.columns
                 else [None] * len(frame))
        batch_id = uuid.uuid4().hex
        ids = [uuid.uuid4().hex for _ in requests]

        def write(pipe: Any) -> None:
            pipe.hset(keys.batch(batch_id), mapping={"total": len(ids), "created_at": repr(time.time()),
                                                     "source": name or prompts.source,
                                                     "tenant": tenant.id})
            pipe.rpush(keys.batch_ids(batch_id), *ids)
            for rid, key, request, meta, hook in zip(ids, prompts.keys, requests, metas,
                                                      hooks, strict=True):
                url = hook.strip() if isinstance(hook, str) and hook.strip() else webhook_url
                pipe.hset(keys.job(rid), mapping=new_job_fields(
                    rid, request, batch_id=batch_id, row_key=key, webhook_url=url, metadata=meta,
                    tenant=tenant.id))
                pipe.xadd(keys.queue, enqueue_fields(rid))

        found, created = await create_once(client, keys, tenant, "batches", idempotency_key,
                                           body_print, batch_id, write)
        if created:
            return False, BatchCreated(batch_id=batch_id, total=len(ids), request_ids=ids)
        first = [_text(i) for i in await client.lrange(keys.batch_ids(found), 0, -1)]
        return True, BatchCreated(batch_id=found, total=len(first), request_ids=first)

    @app.post("/api/v1/batches", status_code=202, response_model=BatchCreated,
              responses={**_POSTS, 422: {"description": "invalid rows (every problem listed)"}})
    async def create_batch(body: BatchCreate, tenant: Caller, response: Response,
                           idempotency_key: IdemKey = None) -> BatchCreated | JSONResponse:
        """Submit many rows at once (the same columns as a prompts CSV)."""
        max_rows = min(limits.max_rows, tenant.max_rows or limits.max_rows)
        if len(body.rows) > max_rows:
            return problems_response([{"loc": ["body", "rows"], "msg": (
                f"{len(body.rows)} rows; at most {max_rows} are accepted per batch: split it")}])
        replayed, answer = await _create_batch(tenant, idempotency_key,
                                               fingerprint(body.model_dump(mode="json")), body.rows,
                                               body.defaults, body.webhook_url, raw_rows=body.rows)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return answer

    @app.post("/api/v1/batches/csv", status_code=202, response_model=BatchCreated,
              responses={**_POSTS, 422: {"description": "invalid CSV (every problem listed)"}})
    async def create_batch_csv(file: UploadFile, tenant: Caller, response: Response,
                               webhook_url: Annotated[str | None, Form(max_length=2048)] = None,
                               idempotency_key: IdemKey = None) -> BatchCreated | JSONResponse:
        """Submit a prompts CSV file (multipart upload, field ``file``; optional field
        ``webhook_url`` for rows without their own ``webhook_url`` cell)."""
        try:
            webhook_url = check_webhook_url(webhook_url)
        except ValueError as exc:
            return problems_response([{"loc": ["body", "webhook_url"], "msg": str(exc)}])
        max_rows = min(limits.max_rows, tenant.max_rows or limits.max_rows)
        with tempfile.TemporaryDirectory(prefix="videobatch-upload-") as tmp:
            path = Path(tmp) / "upload.csv"  # the library reads CSV files (encodings, line numbers)
            with path.open("wb") as out:
                await run_in_threadpool(copy_in_chunks, file.file, out)
            with path.open("rb") as raw:  # counted as a stream: a huge file stops early
                rows = await run_in_threadpool(count_csv_rows, raw, max_rows)
            if rows > max_rows:
                return problems_response([{"loc": ["body", "file"], "msg": (
                    f"more than {max_rows} rows; at most {max_rows} are accepted per "
                    "batch: split the file")}])
            digest = await run_in_threadpool(file_fingerprint, path, webhook_url)
            replayed, answer = await _create_batch(
                tenant, idempotency_key, digest, str(path),
                None, webhook_url, name=file.filename or "upload.csv")
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return answer

    @app.get("/api/v1/batches/{batch_id}", response_model=BatchCounts,
             responses={**_COMMON, 404: {"description": "no such batch"}})
    async def get_batch(batch_id: str, tenant: Caller) -> BatchCounts:
        """How many rows of the batch are in each state."""
        return batch_counts(batch_id, await batch_rows(client, keys, batch_id, tenant))

    @app.get("/api/v1/batches/{batch_id}/results",
             responses={**_COMMON, 200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {},
                                                     "application/json": {}}},
                        404: {"description": "no such batch"}})
    async def batch_results(batch_id: str, tenant: Caller,
                            format: Literal["csv", "parquet", "json"] = "csv") -> Response:
        """The batch's results table (input order) as CSV, parquet or JSON."""
        return results_response(await batch_rows(client, keys, batch_id, tenant), format)

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, Any]:
        await client.ping()
        return {"ok": True}

    app.include_router(callbacks.router())  # Kling's task callbacks: a poll now, never a verdict
    return app
