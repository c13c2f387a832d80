"""The fal-compatible test server's HTTP side (``FalApp``): routes, auth, answers, fault hooks.

It speaks fal's queue API on one host (``docs/providers/fal.md``, fixtures in
``tests/fixtures/providers/fal``): ``POST /{endpoint id}`` (the bare model input; the answer carries
``request_id`` and the ``status_url`` / ``response_url`` / ``cancel_url`` built on owner/app only),
``GET .../requests/{id}/status`` (202 while ``IN_QUEUE`` / ``IN_PROGRESS``, 200 once
``COMPLETED``, failures as ``COMPLETED`` + ``error`` / ``error_type``), ``GET .../requests/{id}``
(the model's code and body; gone ``result_ttl`` s after completion), ``PUT .../cancel`` (200 ``OK``
when removed from the queue, 202 ``CANCELLATION_REQUESTED``, 400 ``ALREADY_COMPLETED``, 404
``NOT_FOUND``), and the Platform API's ``GET /v1/models/requests/by-endpoint`` (cursor pages,
``expand=payloads``). Auth is ``Authorization: Key <key>`` (401 otherwise; 403 when ``locked``).
Every answer carries ``x-fal-request-id``; request errors carry ``X-Fal-Error-Type``.

Faults (``videobatch.testing.faults``), as fal would show them: ``rate_limit`` 429 with
``Retry-After``; ``rate_limit_bare`` 429 ``concurrent_requests_limit`` without it; ``server_error``
503 ``runner_scheduling_failure`` before anything is created; ``policy`` a create accepted that ends
with a ``content_policy_violation`` 422 (fal does not refuse at submit); ``garbage`` / ``slow`` /
``lost`` / ``lost_500`` after the request *was* created; ``fail`` the request ends with a request
error. ``code_NNNN`` (Kling's business codes) has no meaning here and is refused.
Test endpoints: ``GET /_test/counters``, ``GET /_test/tasks``, ``POST /_test/config``,
``POST /_test/reset``.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import time
import uuid
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .fal_sim import ENDPOINTS, Account, SimConfig, SimTask, owner_app
from .faults import Faults, parse_rules

__all__ = ["FalApp", "create_app"]

_SETTINGS = {f.name for f in fields(SimConfig)}


class _DroppedResponse(Response):
    """Starts a 200 answer, sends a few bytes, then the connection is closed mid-body."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"status": "IN_Q', "more_body": True})


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status,
                        headers={"x-fal-request-id": str(uuid.uuid4()), **(headers or {})})


def _request_error(status: int, detail: str, error_type: str, **headers: str) -> JSONResponse:
    return _answer({"detail": detail, "error_type": error_type}, status,
                   {"X-Fal-Error-Type": error_type, **headers})


def _rules(spec: Any) -> list[Any]:
    rules = parse_rules(spec)
    for rule in rules:
        if rule.kind.startswith("code_"):
            raise ValueError(f"fault {rule.kind}: fal has no business codes")
    return rules


class FalApp:
    """The server's state (config, account, faults) and its Starlette routes."""

    def __init__(self, config: SimConfig | None = None, faults: str | dict[str, Any] | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults(_rules(faults), seed=self.config.seed)
        self.account = Account(self.config)
        self.files = Path(tempfile.mkdtemp(prefix="fal-files-"))
        self.app = Starlette(routes=[
            Route("/_test/counters", self.counters, methods=["GET"]),
            Route("/_test/tasks", self.tasks, methods=["GET"]),
            Route("/_test/config", self.configure, methods=["POST"]),
            Route("/_test/reset", self.reset, methods=["POST"]),
            Route("/files/{request_id}.mp4", self.download, methods=["GET"]),
            Route("/v1/models/requests/by-endpoint", self.listing, methods=["GET"]),
            Route("/{path:path}/requests/{request_id}/status", self.status, methods=["GET"]),
            Route("/{path:path}/requests/{request_id}/cancel", self.cancel, methods=["PUT"]),
            Route("/{path:path}/requests/{request_id}", self.result, methods=["GET"]),
            Route("/{path:path}", self.submit, methods=["POST"]),
        ])

    # -- gate -----------------------------------------------------------------------------------

    def _gate(self, request: Request, scope: str) -> tuple[Response | None, str | None]:
        """Auth, rate and injected 'before' faults: an answer if the request stops here, and the
        fault picked (``policy`` lets a create through, to end refused)."""
        self.account.counters.requests += 1
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Key" or key.strip() != self.config.key:
            self.account.reject("auth")
            return _answer({"detail": "Invalid or missing API key (Authorization: Key <FAL_KEY>)"}, 401), None
        if self.config.locked:
            self.account.reject("locked")
            return _answer({"detail": "User is locked. Reason: Exhausted balance. Top up your "
                                      "balance at fal.ai/dashboard/billing."}, 403), None
        wait = self.account.take_token()
        if wait is not None:
            self.account.reject("rate_limit")
            headers = {"Retry-After": str(max(1, round(wait)))} if self.config.retry_after else {}
            return _answer({"detail": "Too many requests"}, 429, headers), None
        fault = self.faults.pick("before", scope)
        if fault is not None and fault != "policy":
            self.account.reject(f"fault_{fault}")
        if fault == "rate_limit":
            return _answer({"detail": "Too many requests"}, 429, {"Retry-After": "1"}), fault
        if fault == "rate_limit_bare":
            return _answer({"detail": [{"loc": ["body"], "msg": "Concurrent requests limit exceeded.",
                                        "type": "concurrent_requests_limit"}]}, 429,
                           {"X-Fal-Needs-Retry": "1"}), fault
        if fault == "server_error":
            return _request_error(503, "No runner could be scheduled", "runner_scheduling_failure"), fault
        return None, fault

    async def _after(self, scope: str, response: Response) -> Response:
        fault = self.faults.pick("after", scope)
        if fault == "garbage":
            return Response(b'{"request_id": ', media_type="application/json")
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        elif fault == "lost":
            return _DroppedResponse()
        elif fault == "lost_500":
            return _request_error(500, "Internal server error", "internal_error")
        return response

    def _task(self, request: Request) -> SimTask | None:
        task = self.account.tasks.get(request.path_params["request_id"])
        if task is None or owner_app(task.endpoint) != request.path_params["path"].strip("/"):
            return None
        return task

    def _urls(self, request: Request, task: SimTask) -> dict[str, str]:
        base = f"{str(request.base_url).rstrip('/')}/{owner_app(task.endpoint)}/requests/{task.request_id}"
        return {"request_id": task.request_id, "response_url": base, "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel"}

    # -- the queue API --------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        stop, fault = self._gate(request, "create")
        if stop is not None:
            return stop
        endpoint = request.path_params["path"].strip("/")
        if endpoint not in ENDPOINTS:
            self.account.reject("unknown_endpoint")
            return _answer({"detail": f"Application '{endpoint}' not found"}, 404)
        try:
            body = await request.json()
        except ValueError:
            self.account.reject("not_json")
            return _answer({"detail": [{"loc": ["body"], "msg": "Invalid JSON", "type": "json_invalid"}]}, 422)
        fail = self.faults.pick("task", "task") is not None
        task = self.account.create(endpoint, body, policy=fault == "policy", fail=fail)
        return await self._after("create", _answer({"status": "IN_QUEUE", **self._urls(request, task),
                                                    "queue_position": 0}))

    async def status(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.polls += 1
        task = self._task(request)
        if task is None:
            return _answer({"detail": "Request not found"}, 404)
        now = self.account.advance()
        state = task.state(now)
        body: dict[str, Any] = {"status": state, **self._urls(request, task)}
        if state == "IN_QUEUE":
            position = [t for t in self.account.tasks.values() if t.state(now) == "IN_QUEUE"
                        and not t.foreign and t.sent < task.sent]
            body["queue_position"] = len(position)
        else:
            body["logs"] = None
        if state == "COMPLETED":
            body["metrics"] = {} if task.outcome else {"inference_time": round(task.run_seconds, 3)}
            if task.error is not None:
                body["error"], kind = task.error
                if kind:
                    body["error_type"] = kind
        return await self._after("query", _answer(body, 200 if state == "COMPLETED" else 202))

    async def result(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.results += 1
        task = self._task(request)
        now = self.account.advance()
        if task is None or (task.done_at is not None and now > task.done_at + self.config.result_ttl):
            return _answer({"detail": "Request not found"}, 404)
        if task.state(now) != "COMPLETED":
            return _answer({"detail": "Request is still in progress"}, 400)
        if task.outcome is not None:
            code, body = task.outcome
            return await self._after("query", _answer(body, code))
        url = f"{str(request.base_url).rstrip('/')}/files/{task.request_id}.mp4"
        return await self._after("query", _answer({"video": {
            "url": url, "content_type": "video/mp4", "file_name": "output.mp4", "file_size": 1024}}))

    async def cancel(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.cancels += 1
        task = self._task(request)
        if task is None:
            return _answer({"status": "NOT_FOUND"}, 404)
        said = self.account.cancel(task)
        return _answer({"status": said}, {"OK": 200, "CANCELLATION_REQUESTED": 202}.get(said, 400))

    async def listing(self, request: Request) -> Response:
        stop, _ = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.listings += 1
        params = request.query_params
        endpoints = {e.strip() for v in params.getlist("endpoint_id") for e in v.split(",") if e.strip()}
        try:
            limit = int(params.get("limit", "50"))
            offset = int(base64.b64decode(params["cursor"]).decode()) if params.get("cursor") else 0
            start = _when(params.get("start"))
            end = _when(params.get("end"))
        except ValueError as exc:
            return _answer({"detail": f"Invalid query: {exc}"}, 422)
        if not endpoints or len(endpoints) > 50 or not 1 <= limit <= 100:
            return _answer({"detail": "endpoint_id (1-50) is required; limit must be 1-100"}, 422)
        if start is None:
            start = time.time() - 24 * 3600
        expand = "payloads" in params.getlist("expand")
        shown = self.account.listed(endpoints, start, end)
        page = shown[offset:offset + limit]
        base = str(request.base_url).rstrip("/")
        items = [self._item(t, expand, base) for t in page]
        more = offset + limit < len(shown)
        return _answer({"items": items, "next_cursor": base64.b64encode(str(offset + limit).encode()).decode()
                        if more else None, "has_more": more})

    def _item(self, task: SimTask, expand: bool, base: str) -> dict[str, Any]:
        done = task.state(self.account.advance()) == "COMPLETED"
        item: dict[str, Any] = {
            "request_id": task.request_id, "endpoint_id": task.endpoint, "sent_at": task.wall(task.sent),
            "started_at": task.wall(task.started), "ended_at": task.wall(task.done_at) if done else None,
            "status_code": (task.outcome[0] if task.outcome else 200) if done else None,
            "duration": round(task.run_seconds, 3) if done else None}
        if expand:
            item["json_input"] = task.body
            if done:
                item["json_output"] = task.outcome[1] if task.outcome else {"video": {
                    "url": f"{base}/files/{task.request_id}.mp4", "content_type": "video/mp4"}}
        return item

    # -- files and test endpoints ---------------------------------------------------------------

    async def download(self, request: Request) -> Response:
        task = self.account.tasks.get(request.path_params["request_id"])
        if task is None or task.outcome is not None or task.state(self.account.advance()) != "COMPLETED":
            return JSONResponse({"detail": "no such file"}, status_code=404)
        path = self.files / f"{task.request_id}.mp4"
        if not path.exists():
            from ..providers.local.render import render_clip  # the project's own tiny-MP4 renderer

            await run_in_threadpool(render_clip, path, str(task.body.get("prompt") or task.request_id),
                                    seconds=self.config.video_seconds,
                                    aspect_ratio=str(task.body.get("aspect_ratio") or "16:9"))
        self.account.counters.downloads += 1
        return FileResponse(path, media_type="video/mp4")

    async def counters(self, request: Request) -> Response:
        return JSONResponse({**self.account.snapshot(), "faults_injected": self.faults.injected,
                             "faults": self.faults.describe()})

    async def tasks(self, request: Request) -> Response:
        """Every request on the account, oldest first."""
        now = self.account.advance()
        return JSONResponse([{
            "request_id": t.request_id, "endpoint_id": t.endpoint, "prompt": t.body.get("prompt"),
            "body": t.body, "status": t.state(now), "failed": t.outcome is not None, "foreign": t.foreign,
        } for t in sorted(self.account.tasks.values(), key=lambda t: t.sent)])

    async def configure(self, request: Request) -> Response:
        """Body: settings (``SimConfig`` names), fault rules ``{kind[@scope]: value}``, ``faults``
        (a spec string or mapping) and ``replace_faults``."""
        try:
            changes = dict(await request.json())
            rules = _rules(changes.pop("faults", None))
            rules += _rules({k: v for k, v in changes.items() if k not in _SETTINGS and k != "replace_faults"})
            self.config.update({k: v for k, v in changes.items() if k in _SETTINGS})
            self.account.add_foreign(self.config.foreign_tasks)
            self.faults.set(rules, replace=bool(changes.get("replace_faults")))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        config = {k: v for k, v in asdict(self.config).items() if k != "key"}
        return JSONResponse({"config": config, "faults": self.faults.describe()})

    async def reset(self, request: Request) -> Response:
        self.account = Account(self.config)
        self.faults = Faults(seed=self.config.seed)
        return JSONResponse({"reset": True})


def _when(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


def create_app(config: SimConfig | None = None, faults: str | dict[str, Any] | None = None) -> Starlette:
    return FalApp(config, faults).app
