"""The Runway-compatible test server's HTTP side (``RunwayApp``): routes, auth, body checks, faults.

It speaks Runway's developer API as docs/providers/runway.md and the fixture bodies in
tests/fixtures/providers/runway/ describe it: ``POST /v1/text_to_video`` and
``/v1/image_to_video`` (200 ``{"id", "estimatedCost"}``), ``GET /v1/tasks/{id}``, ``DELETE
/v1/tasks/{id}`` (204), ``GET /v1/organization``; ``Authorization: Bearer <key>`` (401 otherwise)
and ``X-Runway-Version: 2024-11-06`` (400 otherwise: the real answer is *unsure*). Bodies Runway
would refuse are refused (``validate``: unknown or retired model, ratio or duration the model does
not take, fields it does not take, over-long prompts, images that are not https URLs on a domain or
≤ 5 MB JPEG/PNG/WebP data URIs, keyframe positions the model does not allow). Results are small
real MP4 files. The account behind it is ``runway_sim``; starting a server, ``runway_server``.

Faults (``videobatch.testing.faults`` kinds, as Runway would show them): ``rate_limit`` /
``rate_limit_bare`` 429 with / without ``Retry-After`` (to a create: the daily-cap body, no task);
``server_error`` 503, nothing created; ``policy`` the create is accepted and the task ends FAILED
``SAFETY.INPUT.TEXT`` (Runway moderates in the task, and charges for it); ``garbage`` a 200 that is
not JSON, ``slow`` a late answer, ``lost`` a dropped connection, ``lost_500`` a 500, each *after*
the task was created; ``fail`` the task ends FAILED ``INTERNAL.BAD_OUTPUT``. Test endpoints:
``GET /_test/counters``, ``GET /_test/tasks``, ``POST /_test/config``, ``POST /_test/reset``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .faults import CODES, Faults, parse_rules
from .runway_sim import MODELS, RETIRED, Account, Model, SimConfig, SimError, invalid

__all__ = ["RunwayApp", "create_app", "validate"]

_SETTINGS = {f.name for f in fields(SimConfig)}
VERSION = "2024-11-06"
_ENDPOINTS = {"text_to_video": "text", "image_to_video": "image"}
_DATA_PREFIXES = ("data:image/jpeg;base64,", "data:image/png;base64,", "data:image/webp;base64,")


class _DroppedResponse(Response):
    """Starts a 200 answer, sends a few bytes, then the connection is closed mid-body."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})


def _image_problem(uri: Any) -> str | None:
    if not isinstance(uri, str) or not uri:
        return "must be a non-empty string"
    if uri.startswith("runway://"):
        return None
    if uri.startswith(_DATA_PREFIXES):
        return "data URIs are capped at 5 MB" if len(uri) > 5 * 1024 * 1024 else None
    if not uri.startswith("https://") or len(uri) > 2048:
        return "must be an https URL of at most 2048 characters, a runway:// URI or an image data URI"
    host = urlsplit(uri).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None if host else "has no host"
    return "must name a domain, not an IP address"


def _check_images(spec: Model, images: Any) -> None:
    if isinstance(images, str):
        images = [{"uri": images, "position": "first"}]
    if not isinstance(images, list) or not images or not all(isinstance(i, dict) for i in images):
        raise invalid("promptImage", "Required: a string or an array of {uri, position}")
    positions = [i.get("position") for i in images]
    allowed = [["first"], ["first", "last"]] if spec.last_frame else [["first"]]
    if positions not in allowed:
        raise invalid("promptImage", f"positions {positions} not allowed for this model")
    for item in images:
        why = _image_problem(item.get("uri"))
        if why:
            raise invalid("promptImage", f"uri {why}")


def validate(endpoint: str, body: Any) -> tuple[str, Model]:
    """Raise the 400 Runway gives for a body it refuses; else the model's id and table entry."""
    if not isinstance(body, dict):
        raise invalid("body", "Invalid input: expected object", "invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or model in RETIRED or model not in MODELS:
        raise invalid("model", "Invalid input: No matching discriminator", "invalid_union")
    spec, kind = MODELS[model], _ENDPOINTS[endpoint]
    ratios = spec.text if kind == "text" else spec.image
    if not ratios:
        raise invalid("model", f"Invalid input: {model} does not take {endpoint}", "invalid_union")
    known = {"model", "promptText", "ratio", "duration", *spec.keys} | ({"promptImage"} if kind == "image" else set())
    extra = sorted(set(body) - known)
    if extra:
        raise invalid(extra[0], f"Unrecognized key for {model}: {extra[0]}", "unrecognized_keys")
    prompt = body.get("promptText")
    if prompt is None and (kind == "text" or spec.prompt_required_image):
        raise invalid("promptText", "Required", "invalid_type")
    if prompt is not None and (not isinstance(prompt, str) or not prompt
                               or len(prompt.encode("utf-16-le")) // 2 > spec.prompt_max):
        raise invalid("promptText", f"Must be 1 to {spec.prompt_max} characters", "too_big")
    if body.get("ratio") not in ratios:
        raise invalid("ratio", f"Invalid option: expected one of {'|'.join(ratios)}", "invalid_value")
    duration = body.get("duration")
    if duration is None and spec.default_duration is None:
        raise invalid("duration", "Required", "invalid_type")
    if duration is not None and (isinstance(duration, bool) or duration not in spec.durations):
        raise invalid("duration", f"Invalid input: expected one of {spec.durations}", "invalid_value")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4294967295):
        raise invalid("seed", "Expected an integer from 0 to 4294967295", "invalid_type")
    if "audio" in body and not isinstance(body["audio"], bool):
        raise invalid("audio", "Expected boolean", "invalid_type")
    if "negativePrompt" in body and not isinstance(body["negativePrompt"], str):
        raise invalid("negativePrompt", "Expected string", "invalid_type")
    moderation = body.get("contentModeration")
    if moderation is not None and (not isinstance(moderation, dict)
                                   or moderation.get("publicFigureThreshold", "auto") not in ("auto", "low")):
        raise invalid("contentModeration", "publicFigureThreshold must be auto or low", "invalid_value")
    if kind == "image":
        _check_images(spec, body.get("promptImage"))
    return model, spec


class RunwayApp:
    """The server's state (config, account, faults) and its Starlette routes."""

    def __init__(self, config: SimConfig | None = None,
                 faults: str | dict[str, Any] | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults(parse_rules(faults), seed=self.config.seed)
        self.account = Account(self.config)
        self.files = Path(tempfile.mkdtemp(prefix="runway-files-"))
        self.app = Starlette(routes=[
            Route("/v1/{endpoint:str}", self.create, methods=["POST"]),
            Route("/v1/tasks/{task_id}", self.get_task, methods=["GET"]),
            Route("/v1/tasks/{task_id}", self.delete_task, methods=["DELETE"]),
            Route("/v1/organization", self.organization, methods=["GET"]),
            Route("/files/{task_id}.mp4", self.download, methods=["GET"]),
            Route("/_test/counters", self.counters, methods=["GET"]),
            Route("/_test/tasks", self.tasks, methods=["GET"]),
            Route("/_test/config", self.configure, methods=["POST"]),
            Route("/_test/reset", self.reset, methods=["POST"]),
        ])

    @staticmethod
    def _error(error: SimError) -> JSONResponse:
        headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
        return JSONResponse(error.body, status_code=error.status, headers=headers)

    def _gate(self, request: Request, scope: str) -> tuple[Response | None, bool]:
        """Auth, version and injected 'before' faults: ``(answer if it stops here, policy)``."""
        self.account.counters.requests += 1
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.config.api_secret:
            return self._error(self.account.reject(SimError(401, "Invalid API key", reason="auth"))), False
        if request.headers.get("x-runway-version") != VERSION:
            return self._error(self.account.reject(SimError(
                400, "X-Runway-Version header is required (2024-11-06)", reason="version"))), False
        fault = self.faults.pick("before", scope)
        if fault is None or fault == "policy":
            return None, fault == "policy"
        wait = 1 if fault == "rate_limit" else None
        error = {
            "rate_limit": SimError(429, "Your daily task limit has been reached." if scope == "create"
                                   else "Too many requests.", retry_after=wait),
            "rate_limit_bare": SimError(429, "Your daily task limit has been reached." if scope == "create"
                                        else "Too many requests."),
            "server_error": SimError(503, "Service Unavailable"),
        }.get(fault) or SimError(CODES[int(fault[5:])][0], CODES[int(fault[5:])][1])
        error.reason = f"fault_{fault}"
        return self._error(self.account.reject(error)), False

    async def _after(self, scope: str, response: Response) -> Response:
        fault = self.faults.pick("after", scope)
        if fault == "garbage":
            return Response(b'{"id": "', media_type="application/json")
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        elif fault == "lost":
            return _DroppedResponse()
        elif fault == "lost_500":
            return JSONResponse({"error": "Internal server error"}, status_code=500)
        return response

    async def create(self, request: Request) -> Response:
        endpoint = request.path_params["endpoint"]
        if endpoint not in _ENDPOINTS:
            return JSONResponse({"error": "Not found"}, status_code=404)
        stop, policy = self._gate(request, "create")
        if stop is not None:
            return stop
        try:
            body = await request.json()
        except ValueError:
            return self._error(self.account.reject(invalid("body", "Invalid JSON", "invalid_type")))
        try:
            task = self.account.create(endpoint, body, validate)
        except SimError as exc:
            if exc.reason == "invalid":
                self.account.reject(exc)
            return self._error(exc)
        if policy:
            task.failure = ("Prompt flagged", "SAFETY.INPUT.TEXT")
        elif self.faults.pick("task", "task"):
            task.failure, task.refunded = ("Generation failed (simulated)", "INTERNAL.BAD_OUTPUT"), True
        return await self._after("create", JSONResponse(
            {"id": task.id, "estimatedCost": {"credits": task.credits}}))

    async def get_task(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.polls += 1
        try:
            task = self.account.get(request.path_params["task_id"])
        except SimError as exc:
            return self._error(exc)
        base = str(request.base_url).rstrip("/")
        return await self._after("query", JSONResponse(task.to_json(time.monotonic(), base)))

    async def delete_task(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        try:
            self.account.delete(request.path_params["task_id"])
        except SimError as exc:
            return self._error(exc)
        return Response(status_code=204)

    async def organization(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        cfg, now = self.config, time.monotonic()
        used = {m: sum(1 for t in self.account.tasks.values() if t.model == m and now - t.created < 86400)
                for m in MODELS}
        return JSONResponse({
            "creditBalance": None if cfg.credits is None else int(cfg.credits - self.account.spent),
            "tier": {"maxMonthlyCreditSpend": 10000, "models": {m: {
                "maxConcurrentGenerations": cfg.max_concurrent, "maxDailyGenerations": cfg.max_daily}
                for m in MODELS}},
            "usage": {"models": {m: {"dailyGenerations": n} for m, n in used.items() if n}}})

    async def download(self, request: Request) -> Response:
        task = self.account.tasks.get(request.path_params["task_id"])
        if task is None or task.deleted or task.status(time.monotonic()) != "SUCCEEDED":
            return JSONResponse({"error": "no such video"}, status_code=404)
        path = self.files / f"{task.id}.mp4"
        if not path.exists():
            from ..providers.local.render import render_clip  # the project's own tiny-MP4 renderer

            w, _, h = str(task.body.get("ratio") or "16:9").partition(":")
            await run_in_threadpool(render_clip, path, str(task.body.get("promptText") or task.id),
                                    seconds=self.config.video_seconds,
                                    aspect_ratio="16:9" if int(w) >= int(h) else "9:16")
        self.account.counters.downloads += 1
        return FileResponse(path, media_type="video/mp4")

    async def counters(self, request: Request) -> Response:
        return JSONResponse({**self.account.snapshot(), "faults_injected": self.faults.injected,
                             "faults": self.faults.describe()})

    async def tasks(self, request: Request) -> Response:
        """Every task, oldest first: what it was asked and what became of it."""
        now, base = time.monotonic(), str(request.base_url).rstrip("/")
        return JSONResponse([{
            "id": t.id, "model": t.model, "prompt": t.body.get("promptText"), "body": t.body,
            "status": t.status(now), "deleted": t.deleted, "cost": t.cost(now),
            "url": f"{base}/files/{t.id}.mp4?_jwt=test-signature" if t.status(now) == "SUCCEEDED" else None,
        } for t in sorted(self.account.tasks.values(), key=lambda t: t.created)])

    async def configure(self, request: Request) -> Response:
        """Body: settings (``SimConfig`` field names), fault rules ``{kind[@scope]: value}``,
        ``faults`` (a spec string or mapping) and ``replace_faults`` (drop the old rules)."""
        try:
            changes = dict(await request.json())
            settings = {k: v for k, v in changes.items() if k in _SETTINGS}
            rules = parse_rules(changes.pop("faults", None))
            rules += parse_rules({k: v for k, v in changes.items()
                                  if k not in _SETTINGS and k != "replace_faults"})
            self.config.update(settings)
            self.faults.set(rules, replace=bool(changes.get("replace_faults")))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        config = {k: v for k, v in asdict(self.config).items() if k != "api_secret"}
        return JSONResponse({"config": config, "faults": self.faults.describe()})

    async def reset(self, request: Request) -> Response:
        """Forget all tasks and counters, and drop every fault rule."""
        self.account = Account(self.config)
        self.faults = Faults(seed=self.config.seed)
        return JSONResponse({"reset": True})


def create_app(config: SimConfig | None = None,
               faults: str | dict[str, Any] | None = None) -> Starlette:
    return RunwayApp(config, faults).app
