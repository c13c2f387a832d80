"""The Google-compatible test server's HTTP side (``GoogleApp``): routes, auth, error bodies, faults.

It speaks the Gemini API's Interactions API as ``docs/providers/google.md`` documents it:
``POST /v1beta/interactions`` (create; ``background: true`` answers at once, ``false`` holds the
request until the video is done), ``GET /v1beta/interactions/{id}``, ``POST …/{id}/cancel``,
``DELETE …/{id}``, and the Files API for generated videos: ``GET /v1beta/files/{id}`` (``state``
``PROCESSING`` then ``ACTIVE``) and ``GET /v1beta/files/{id}:download?alt=media``, which needs the
key and answers with a 302 to a signed storage link (``/_storage/...``) that needs none (a request
carrying the key there is counted in ``key_leaks``). Old paths answer as Google does now:
``:generateContent`` for an Omni model is a 400 "This model only supports Interactions API.", a
retired Veo id on ``:predictLongRunning`` a 404.

Auth is the ``x-goog-api-key`` header (``?key=`` works too, counted in ``key_in_query``): missing
-> 403 ``PERMISSION_DENIED``, wrong -> 401 ``UNAUTHENTICATED``. Every error is a
``google.rpc.Status`` body whose ``code`` equals the HTTP status; 429s carry ``RetryInfo``.
A completed job asked for ``delivery: "uri"`` shows the video inline as base64 on GET (the
preview-guide caveat; ``get_delivery="uri"`` shows the URI instead). Faults follow
``videobatch.testing.faults`` (``code_NNNN`` kinds are Kling's and are refused here). Test
endpoints: ``GET /_test/counters``, ``GET /_test/tasks``, ``POST /_test/config``,
``POST /_test/reset``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .faults import FaultRule, Faults, parse_rules
from .google_sim import LIVE_MODELS, RETIRED, Project, SimConfig, SimError, SimInteraction

__all__ = ["GoogleApp", "create_app"]

_SETTINGS = {f.name for f in fields(SimConfig)}


class _DroppedResponse(Response):
    """Starts a 200 answer, sends a few bytes, then the connection is closed mid-body."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"id": "v1_', "more_body": True})


def _rules(spec: str | dict[str, Any] | None) -> list[FaultRule]:
    rules = parse_rules(spec)
    for rule in rules:
        if rule.kind.startswith("code_"):
            raise ValueError(f"fault {rule.kind}: business codes are Kling's; the Google server "
                             "has rate_limit, server_error, policy, garbage, slow, lost, lost_500, fail")
    return rules


class GoogleApp:
    """The server's state (config, project, faults) and its Starlette routes."""

    def __init__(self, config: SimConfig | None = None,
                 faults: str | dict[str, Any] | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults(_rules(faults), seed=self.config.seed)
        self.project = Project(self.config)
        self.videos = Path(tempfile.mkdtemp(prefix="google-files-"))
        self._signed: dict[str, str] = {}  # file id -> storage signature
        base = "/v1beta"
        self.app = Starlette(routes=[
            Route(f"{base}/interactions", self.create, methods=["POST"]),
            Route(f"{base}/interactions/{{id}}", self.get, methods=["GET"]),
            Route(f"{base}/interactions/{{id}}", self.delete, methods=["DELETE"]),
            Route(f"{base}/interactions/{{id}}/cancel", self.cancel, methods=["POST"]),
            Route(f"{base}/files/{{name}}", self.file, methods=["GET"]),
            Route(f"{base}/models/{{call}}", self.old_paths, methods=["POST"]),
            Route("/_storage/{file_id}.mp4", self.storage, methods=["GET"]),
            Route("/_test/counters", self.counters, methods=["GET"]),
            Route("/_test/tasks", self.tasks, methods=["GET"]),
            Route("/_test/config", self.configure, methods=["POST"]),
            Route("/_test/reset", self.reset, methods=["POST"]),
        ])

    # -- gate ----------------------------------------------------------------------------------

    @staticmethod
    def _error(error: SimError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.code)

    def _gate(self, request: Request, scope: str) -> Response | None:
        """Auth, rate and injected 'before' faults; a response if the request stops here."""
        project = self.project
        project.counters.requests += 1
        key = request.headers.get("x-goog-api-key")
        if key is None and "key" in request.query_params:
            project.counters.key_in_query += 1
            key = request.query_params["key"]
        if not key:
            return self._error(project.reject(SimError(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers "
                "without established identity). Please use API Key or other form of API consumer "
                "identity to call this API.", reason="auth_missing")))
        if key.strip() != self.config.api_key:
            return self._error(project.reject(SimError(
                401, "UNAUTHENTICATED", "Request had invalid authentication credentials.",
                reason="auth_wrong")))
        try:
            project.take_token()
        except SimError as exc:
            return self._error(exc)
        fault = self.faults.pick("before", scope)
        if fault is None:
            return None
        delay = self.config.retry_delay or 1.0
        error = {
            "rate_limit": SimError(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, "
                                   "please check your plan and billing details.", retry_delay=delay),
            "rate_limit_bare": SimError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted "
                                        "(e.g. check quota)."),
            "server_error": SimError(500, "INTERNAL", "An internal error has occurred."),
            "policy": SimError(400, "INVALID_ARGUMENT", "The request was blocked: it violates the "
                               "usage policies (simulated)."),
        }[fault]
        error.reason = f"fault_{fault}"
        return self._error(project.reject(error))

    async def _after(self, scope: str, response: Response) -> Response:
        fault = self.faults.pick("after", scope)
        if fault == "garbage":
            return Response(b'{"id": "v1_', media_type="application/json")
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        elif fault == "lost":
            return _DroppedResponse()
        elif fault == "lost_500":
            return self._error(SimError(503, "UNAVAILABLE", "The service is currently unavailable."))
        return response

    # -- interactions --------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        stop = self._gate(request, "create")
        if stop is not None:
            return stop
        try:
            body = await request.json()
        except ValueError:
            return self._error(self.project.reject(SimError(
                400, "INVALID_ARGUMENT", "Invalid JSON payload received.", reason="invalid")))
        try:
            interaction = self.project.create(body)
        except SimError as exc:
            return self._error(exc)
        if self.faults.pick("task", "task"):
            interaction.fails = True
            interaction.fail_message = "Video generation failed (simulated)"
        if body.get("background") is not True:  # held open until the video is done
            await asyncio.sleep(max(0.0, interaction.done_at - time.monotonic()))
        answer = await self._interaction(request, interaction, creating=True)
        return await self._after("create", JSONResponse(answer))

    async def get(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        self.project.counters.polls += 1
        try:
            interaction = self.project.get(request.path_params["id"])
        except SimError as exc:
            return self._error(exc)
        return await self._after("query", JSONResponse(await self._interaction(request, interaction)))

    async def cancel(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        try:
            interaction = self.project.get(request.path_params["id"])
        except SimError as exc:
            return self._error(exc)
        now = time.monotonic()
        if interaction.status(now) in ("queued", "in_progress"):
            interaction.cancelled_at = now
            self.project.counters.cancels += 1
        return JSONResponse(await self._interaction(request, interaction))

    async def delete(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        try:
            interaction = self.project.get(request.path_params["id"])
        except SimError as exc:
            return self._error(exc)
        interaction.body["store"] = False  # gone for GET
        return JSONResponse({})

    async def _interaction(self, request: Request, interaction: SimInteraction, *,
                           creating: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        status = interaction.status(now)
        data: dict[str, Any] = {"id": interaction.id, "status": status, "object": "interaction",
                                "model": interaction.body.get("model")}
        if status == "failed":
            data["errors"] = [{"code": 13, "message": interaction.fail_message}]
        if status != "completed":
            return data
        fmt = interaction.body.get("response_format") or {}
        uri = fmt.get("delivery") == "uri" and (creating or self.config.get_delivery == "uri")
        video: dict[str, Any] = {"type": "video", "mime_type": "video/mp4"}
        if uri:
            base = str(request.base_url).rstrip("/")
            video["uri"] = f"{base}/v1beta/files/{interaction.file_id}:download?alt=media"
        else:
            path = await self._render(interaction)
            video["data"] = base64.b64encode(path.read_bytes()).decode("ascii")
            self.project.counters.inline_videos += 1
        data["steps"] = [{"type": "user_input", "content": [{"type": "text", "text": interaction.prompt}]},
                         {"type": "thought", "content": [{"type": "thought", "text": "..."}]},
                         {"type": "model_output", "content": [video]}]
        data["usage"] = {"output_tokens_by_modality": [{"modality": "video", "tokens": 57920}]}
        return data

    async def _render(self, interaction: SimInteraction) -> Path:
        path = self.videos / f"{interaction.file_id}.mp4"
        if not path.exists():
            from ..providers.local.render import render_clip  # the project's own tiny-MP4 renderer

            fmt = interaction.body.get("response_format") or {}
            await run_in_threadpool(render_clip, path, interaction.prompt or interaction.id,
                                    seconds=self.config.video_seconds,
                                    aspect_ratio=str(fmt.get("aspect_ratio") or "16:9"))
        return path

    # -- files and storage ---------------------------------------------------------------------

    async def file(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        file_id, _, action = request.path_params["name"].partition(":")
        interaction = self.project.files.get(file_id)
        if interaction is None or action not in ("", "download"):
            return self._error(self.project.reject(SimError(
                404, "NOT_FOUND", f"File {file_id} not found.", reason="no_file")))
        state = self.project.file_state(interaction, time.monotonic())
        base = str(request.base_url).rstrip("/")
        if not action:
            self.project.counters.file_checks += 1
            info = {"name": f"files/{file_id}", "mimeType": "video/mp4", "state": state,
                    "uri": f"{base}/v1beta/files/{file_id}", "source": "GENERATED"}
            if state == "ACTIVE":
                info["downloadUri"] = f"{base}/v1beta/files/{file_id}:download?alt=media"
            return JSONResponse(info)
        if request.query_params.get("alt") != "media":
            return self._error(SimError(400, "INVALID_ARGUMENT", "download needs alt=media."))
        if state != "ACTIVE":
            return self._error(SimError(400, "FAILED_PRECONDITION",
                                        f"File {file_id} is not in an ACTIVE state."))
        signature = self._signed.setdefault(file_id, secrets.token_hex(8))
        return RedirectResponse(f"{base}/_storage/{file_id}.mp4?sig={signature}", status_code=302)

    async def storage(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if "x-goog-api-key" in request.headers or "key" in request.query_params:
            self.project.counters.key_leaks += 1
        interaction = self.project.files.get(file_id)
        if interaction is None or request.query_params.get("sig") != self._signed.get(file_id):
            return Response(b"<Error><Code>AccessDenied</Code></Error>", status_code=403,
                            media_type="application/xml")
        self.project.counters.downloads += 1
        return FileResponse(await self._render(interaction), media_type="video/mp4")

    async def old_paths(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        model, _, method = request.path_params["call"].partition(":")
        if model in RETIRED:
            error = SimError(404, "NOT_FOUND", f"models/{model} is no longer available.")
        elif model in LIVE_MODELS:
            error = SimError(400, "INVALID_ARGUMENT", "This model only supports Interactions API.")
        else:
            error = SimError(404, "NOT_FOUND", f"models/{model} is not found for API version "
                             f"v1beta, or is not supported for {method or 'this method'}.")
        return self._error(self.project.reject(error))

    # -- test endpoints ------------------------------------------------------------------------

    async def counters(self, request: Request) -> Response:
        return JSONResponse({**self.project.snapshot(), "faults_injected": self.faults.injected,
                             "faults": self.faults.describe()})

    async def tasks(self, request: Request) -> Response:
        """Every interaction, oldest first: its prompt, status and our key from the metadata."""
        now = time.monotonic()
        return JSONResponse([{
            "id": i.id, "prompt": i.prompt, "status": i.status(now), "model": i.body.get("model"),
            "metadata": (i.body.get("webhook_config") or {}).get("user_metadata"),
            "response_format": i.body.get("response_format"),
        } for i in self.project.interactions.values()])

    async def configure(self, request: Request) -> Response:
        """Body: settings (``SimConfig`` field names), fault rules ``{kind[@scope]: value}``,
        ``faults`` (a spec string or mapping) and ``replace_faults`` (drop the old rules)."""
        try:
            changes = dict(await request.json())
            settings = {k: v for k, v in changes.items() if k in _SETTINGS}
            rules = _rules(changes.pop("faults", None))
            rules += _rules({k: v for k, v in changes.items()
                             if k not in _SETTINGS and k != "replace_faults"})
            self.config.update(settings)
            self.faults.set(rules, replace=bool(changes.get("replace_faults")))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        config = {k: v for k, v in asdict(self.config).items() if k != "api_key"}
        return JSONResponse({"config": config, "faults": self.faults.describe()})

    async def reset(self, request: Request) -> Response:
        """Forget all interactions and counters, and drop every fault rule."""
        self.project = Project(self.config)
        self.faults = Faults(seed=self.config.seed)
        return JSONResponse({"reset": True})


def create_app(config: SimConfig | None = None,
               faults: str | dict[str, Any] | None = None) -> Starlette:
    return GoogleApp(config, faults).app
