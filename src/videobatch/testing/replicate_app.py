"""The Replicate-compatible test server's HTTP side (``ReplicateApp``): routes, auth, errors, fault hooks.

It speaks Replicate's prediction API under ``/v1`` (``docs/providers/replicate.md``): create for an
official model (``POST /v1/models/{owner}/{name}/predictions``) or a version
(``POST /v1/predictions`` with ``version`` ``owner/name:<64 hex>``), both answering 201 with the
prediction; get (``GET /v1/predictions/{id}``); cancel (``POST /v1/predictions/{id}/cancel``); and
the list (``GET /v1/predictions``, newest first, ``page_size`` a page, ``created_after`` /
``created_before`` filters, a ``next`` URL with a cursor). Auth is ``Authorization: Bearer <token>``
(401 with the recorded body otherwise); errors are the recorded shapes (``detail`` and ``status``,
``title`` where Replicate sends one; the 429 has only ``detail``). It serves small real MP4 files as
outputs. Faults come from ``videobatch.testing.faults``: ``rate_limit`` (429, ``Retry-After``),
``rate_limit_bare`` (429 without it), ``server_error`` (500, nothing created), ``policy`` (created,
then ``failed`` with the moderation error: Replicate moderates inside the prediction, not at the
door), ``garbage`` / ``slow`` / ``lost`` / ``lost_500`` (created, the answer spoilt), ``fail`` (the
prediction ends ``failed``). Test endpoints: ``GET /_test/counters``, ``GET /_test/tasks`` (every
prediction, oldest first), ``POST /_test/config``, ``POST /_test/reset``.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .faults import Faults, parse_rules
from .replicate_sim import Account, SimConfig, SimError, parse_time

__all__ = ["ReplicateApp", "create_app"]

_SETTINGS = {f.name for f in fields(SimConfig)}
_UNAUTHENTICATED = {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                    "status": 401}
_VERSION = 64  # hex digits of a version id


class _DroppedResponse(Response):
    """Starts a 201 answer, sends a few bytes, then the connection is closed mid-body."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})


class ReplicateApp:
    """The server's state (config, account, faults) and its Starlette routes."""

    def __init__(self, config: SimConfig | None = None, faults: str | dict[str, Any] | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults(parse_rules(faults), seed=self.config.seed)
        self.account = Account(self.config)
        self.files = Path(tempfile.mkdtemp(prefix="replicate-files-"))
        self.app = Starlette(routes=[
            Route("/v1/models/{owner}/{name}/predictions", self.create_official, methods=["POST"]),
            Route("/v1/predictions", self.create_version, methods=["POST"]),
            Route("/v1/predictions", self.list, methods=["GET"]),
            Route("/v1/predictions/{id}", self.get_one, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/files/{id}.mp4", self.download, methods=["GET"]),
            Route("/_test/counters", self.counters, methods=["GET"]),
            Route("/_test/tasks", self.tasks, methods=["GET"]),
            Route("/_test/config", self.configure, methods=["POST"]),
            Route("/_test/reset", self.reset, methods=["POST"]),
        ])

    @staticmethod
    def _error(error: SimError) -> JSONResponse:
        headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
        return JSONResponse(error.body, status_code=error.status, headers=headers)

    def _gate(self, request: Request, scope: str) -> tuple[Response | None, str | None]:
        """Auth, rate and injected 'before' faults: a response if the request stops here, and the
        fault that lets it through (``policy``)."""
        self.account.counters.requests += 1
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.config.token:
            return self._error(self.account.reject(SimError(401, dict(_UNAUTHENTICATED), reason="auth"))), None
        try:
            self.account.take_token()
        except SimError as exc:
            return self._error(exc), None
        fault = self.faults.pick("before", scope)
        if fault in (None, "policy"):
            return None, fault
        error = {"rate_limit": SimError(429, {"detail": "Request was throttled. Your rate limit resets in ~1s."},
                                        retry_after=1),
                 "rate_limit_bare": SimError(429, {"detail": "Request was throttled. Your rate limit resets in ~1s."}),
                 }.get(str(fault)) or SimError(500, {"title": "Internal Server Error", "status": 500})
        error.reason = f"fault_{fault}"
        return self._error(self.account.reject(error)), None

    async def _after(self, scope: str, response: Response) -> Response:
        fault = self.faults.pick("after", scope)
        if fault == "garbage":
            return Response(b'{"id": "', status_code=201, media_type="application/json")
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        elif fault == "lost":
            return _DroppedResponse()
        elif fault == "lost_500":
            return self._error(SimError(500, {"title": "Internal Server Error", "status": 500}))
        return response

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- routes --------------------------------------------------------------------------------

    async def create_official(self, request: Request) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        return await self._create(request, lambda body: (model, "hidden"), versioned=False)

    async def create_version(self, request: Request) -> Response:
        return await self._create(request, _version_of, versioned=True)

    async def _create(self, request: Request, model_of: Any, *, versioned: bool) -> Response:
        stop, fault = self._gate(request, "create")
        if stop is not None:
            return stop
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            model, version = model_of(body)
        except SimError as exc:
            return self._error(self.account.reject(exc))
        try:
            pred = self.account.create(model, version, body, request.headers.get("cancel-after"),
                                       versioned=versioned, flagged=fault == "policy",
                                       fails=bool(self.faults.pick("task", "task")))
        except SimError as exc:  # counted by the account
            return self._error(exc)
        answer = JSONResponse(pred.to_json(time.time(), self._base(request)), status_code=201)
        return await self._after("create", answer)

    async def get_one(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.polls += 1
        try:
            pred = self.account.get(request.path_params["id"])
        except SimError as exc:
            return self._error(exc)
        return await self._after("query", JSONResponse(pred.to_json(time.time(), self._base(request))))

    async def cancel(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        try:
            pred = self.account.cancel(request.path_params["id"])
        except SimError as exc:
            return self._error(exc)
        return JSONResponse(pred.to_json(time.time(), self._base(request)))

    async def list(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.lists += 1
        if self.config.list_outage:
            return self._error(self.account.reject(SimError(503, {"title": "Service Unavailable", "status": 503},
                                                            reason="list_outage")))
        params, base = request.query_params, self._base(request)
        bounds: dict[str, float | None] = {}
        for name in ("created_after", "created_before"):
            value = params.get(name)
            bounds[name] = parse_time(value) if value else None
            if value and bounds[name] is None:
                return self._error(self.account.reject(SimError(400, {
                    "title": "Invalid query", "detail": f"{name} must be an ISO 8601 date-time", "status": 400},
                    reason="invalid")))
        # The cursor is the creation time of the last prediction shown (stable while new ones arrive).
        try:
            before = float(base64.urlsafe_b64decode(params.get("cursor", "") + "==").decode() or "inf")
        except ValueError:
            before = float("inf")
        chosen = [p for p in self.account.newest_first(bounds["created_after"], bounds["created_before"])
                  if p.created < before]
        size = max(1, int(self.config.page_size))
        page = chosen[:size]
        nxt = None
        if len(chosen) > size:
            query = {k: v for k, v in params.items() if k != "cursor"}
            query["cursor"] = base64.urlsafe_b64encode(repr(page[-1].created).encode()).decode().rstrip("=")
            nxt = f"{base}/v1/predictions?{urlencode(query)}"
        now = time.time()
        return await self._after("query", JSONResponse({
            "next": nxt, "previous": None, "results": [p.to_json(now, base) for p in page]}))

    async def download(self, request: Request) -> Response:
        pred = self.account.predictions.get(request.path_params["id"])
        if pred is None or pred.status(time.time()) != "succeeded":
            return JSONResponse({"detail": "Not found."}, status_code=404)
        path = self.files / f"{pred.id}.mp4"
        if not path.exists():
            from ..providers.local.render import render_clip  # the project's own tiny-MP4 renderer

            ratio = pred.input.get("aspect_ratio")
            await run_in_threadpool(render_clip, path, str(pred.input.get("prompt") or pred.id),
                                    seconds=self.config.video_seconds,
                                    aspect_ratio=ratio if ratio in ("16:9", "9:16", "1:1") else "16:9")
        self.account.counters.downloads += 1
        return FileResponse(path, media_type="video/mp4")

    async def counters(self, request: Request) -> Response:
        return JSONResponse({**self.account.snapshot(), "faults_injected": self.faults.injected,
                             "faults": self.faults.describe()})

    async def tasks(self, request: Request) -> Response:
        """Every prediction on the account, oldest first: who made it and what became of it."""
        now, base = time.time(), self._base(request)
        return JSONResponse([{
            "id": p.id, "model": p.model, "prompt": p.input.get("prompt"), "input": p.input,
            "status": p.status(now), "foreign": p.foreign,
            "url": f"{base}/files/{p.id}.mp4" if p.status(now) == "succeeded" else None,
        } for p in sorted(self.account.predictions.values(), key=lambda p: p.created)])

    async def configure(self, request: Request) -> Response:
        """Body: settings (``SimConfig`` field names), fault rules ``{kind[@scope]: value}``,
        ``faults`` (a spec string or mapping) and ``replace_faults`` (drop the old rules)."""
        try:
            changes = dict(await request.json())
            settings = {k: v for k, v in changes.items() if k in _SETTINGS}
            rules = parse_rules(changes.pop("faults", None))
            rules += parse_rules({k: v for k, v in changes.items() if k not in _SETTINGS and k != "replace_faults"})
            self.config.update(settings)
            self.account.add_foreign(self.config.foreign_predictions)
            self.faults.set(rules, replace=bool(changes.get("replace_faults")))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        config = {k: v for k, v in asdict(self.config).items() if k != "token"}
        return JSONResponse({"config": config, "faults": self.faults.describe()})

    async def reset(self, request: Request) -> Response:
        """Forget all predictions and counters, and drop every fault rule."""
        self.account = Account(self.config)
        self.faults = Faults(seed=self.config.seed)
        return JSONResponse({"reset": True})


def _version_of(body: Any) -> tuple[str, str]:
    """``owner/name:<64 hex>`` from a version create's body, or Replicate's refusal."""
    version = body.get("version") if isinstance(body, dict) else None
    name, _, digits = str(version or "").partition(":")
    if len(digits) != _VERSION or any(c not in "0123456789abcdef" for c in digits):
        raise SimError(422, {"title": "Invalid version or not permitted",
                             "detail": "The specified version does not exist (or perhaps you don't "
                                       "have permission to use it?)", "status": 422}, reason="invalid")
    return name, digits


def create_app(config: SimConfig | None = None, faults: str | dict[str, Any] | None = None) -> Starlette:
    return ReplicateApp(config, faults).app
