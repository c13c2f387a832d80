"""The Kling-compatible test server's HTTP side (``KlingApp``): routes, auth, envelopes, fault hooks.

Both of Kling's API designs are served on one account: the ``/v1`` routes here, the newer design's
(the model in the path, ``GET`` / ``POST /tasks``) in ``kling_newer``; create bodies of both are
checked by ``kling_bodies``. ``POST /_test/audit`` with ``{"rows": {key: task_id}}`` counts the rows
whose task does not carry their key (``wrong_adoptions``; ``foreign_adopted`` of them hold another
system's task); ``foreign_polled`` counts other systems' tasks a client asked for by id.

It speaks Kling's video API (``/v1/videos/text2video`` and ``/image2video``: create, get by
task_id, get by ``?external_task_id=``, list by ``?pageNum&pageSize``), checks the JWT like Kling
(HS256 with the configured secret, ``iss``/``exp``/``nbf``; 401 with codes 1000-1004), validates
bodies (1201 naming the field), enforces a parallel-task limit (1303), a request rate (1302) and
unique ``external_task_id`` per account, and serves small real MP4 files as results. Faults are
injected per ``videobatch.testing.faults``. Test endpoints: ``GET /_test/counters``,
``GET /_test/tasks`` (every task, oldest first: external id, prompt, status, result URL, whether
another system made it), ``POST /_test/config`` (settings and fault rules), ``POST /_test/reset``.
The account behind it (tasks, limits, counters) is ``kling_sim``; starting and stopping a server
(thread, child process, command line) is ``kling_server``.

The lookup by external id is served as the ``lookup`` setting says: ``answered`` (the task, or
404 / 1203), ``refused`` (400 / 1201 "Invalid parameters: external_task_id is not supported"; the
list and the get-by-task_id keep working) or ``ignored`` (the parameter is dropped and the first
list page comes back, as if it were a plain list request). ``foreign_tasks=N`` puts N finished tasks
of other systems on the account (some with external ids of their own, some without), so list pages
are not only the client's; ``list_order`` is ``newest`` (default) or ``oldest`` first.

What the server assumes about the lookup and the list, and why. Kling's own page for the single-task
query says only that ``task_id`` (in the path) and ``external_task_id`` are "choose one of the two"
ways to ask; mirrors of it show no wire form for the external id (docs.kkiai.com/Other-Model-APIs/
kling-platform-api/text-to-video/query-task-single.html, doc.aimanyi.top/api-386109649.html). An
apidoc mirror (github betasecond/KlingDemo, APIDoc.md) and public Kotlin clients send it as a query
parameter on the collection path, ``GET /v1/videos/{kind}?external_task_id=X``, which is what this
server answers; other public clients put the id in the path with ``?external_task_id=true``, a form
the server does not know (it is read as a task id: 1203). No public source says what a server that
does not support the parameter does, so both behaviours seen in live calls (shared/kling-api.md)
are modes here. The list, ``GET /v1/videos/{kind}?pageNum=&pageSize=``: pageNum 1-1000 (default
1), pageSize 1-500 (default 30), else 1201 (the KlingDemo mirror; microfox-ai/microfox
packages/kling-ai docs and docs.kapon.cloud/kling/task-query use the same defaults). No source
states the order; the mirror's example page happens to list the older task first, live notes say
newest first, so newest first is the default and ``oldest`` exists to test a client that assumes.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import kling_newer
from .faults import Faults, parse_rules
from .kling_callbacks import CallbackSender
from .kling_sim import KINDS, Account, SimConfig, SimError, SimTask

__all__ = ["KlingApp", "create_app"]

_SETTINGS = {f.name for f in fields(SimConfig)}


class _DroppedResponse(Response):
    """Starts a 200 answer, sends a few bytes, then the connection is closed mid-body."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"code": 0, "mess', "more_body": True})
        # Returning without finishing makes the server close the connection.


class KlingApp:
    """The server's state (config, account, faults) and its Starlette routes."""

    def __init__(self, config: SimConfig | None = None,
                 faults: str | dict[str, Any] | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults(parse_rules(faults), seed=self.config.seed)
        self.account = Account(self.config)
        self.callbacks = CallbackSender(self.config)
        self.files = Path(tempfile.mkdtemp(prefix="kling-files-"))
        self.app = Starlette(routes=[
            Route("/v1/videos/{kind}", self.create, methods=["POST"]),
            Route("/v1/videos/{kind}", self.query, methods=["GET"]),
            Route("/v1/videos/{kind}/{task_id}", self.get_one, methods=["GET"]),
            Route("/text-to-video/{model}", self.create_newer, methods=["POST"]),
            Route("/image-to-video/{model}", self.create_newer, methods=["POST"]),
            Route("/tasks", self.tasks_query, methods=["GET"]),
            Route("/tasks", self.tasks_cursor, methods=["POST"]),
            Route("/_test/audit", self.audit, methods=["POST"]),
            Route("/files/{task_id}.mp4", self.download, methods=["GET"]),
            Route("/_test/counters", self.counters, methods=["GET"]),
            Route("/_test/tasks", self.tasks, methods=["GET"]),
            Route("/_test/config", self.configure, methods=["POST"]),
            Route("/_test/reset", self.reset, methods=["POST"]),
        ])

    # -- envelope ------------------------------------------------------------------------------

    @staticmethod
    def _ok(data: Any) -> JSONResponse:
        return JSONResponse({"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex,
                             "data": data})

    @staticmethod
    def _error(error: SimError) -> JSONResponse:
        headers = {"Retry-After": str(int(error.retry_after))} if error.retry_after else None
        return JSONResponse({"code": error.code, "message": error.message,
                             "request_id": uuid.uuid4().hex, "data": None},
                            status_code=error.status, headers=headers)

    def _auth(self, request: Request) -> SimError | None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            return SimError(1001, reason="auth_1001")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return SimError(1002, reason="auth_1002")
        if self.config.api_key is not None and token.strip() == self.config.api_key:
            return None  # a console API key, sent as is
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # short test secrets
                claims = jwt.decode(token.strip(), self.config.secret_key, algorithms=["HS256"],
                                    options={"require": ["iss", "exp", "nbf"],
                                             "verify_exp": False, "verify_nbf": False})
        except jwt.InvalidSignatureError:
            return SimError(1000, "Authentication failed: signature mismatch", reason="auth_1000")
        except jwt.PyJWTError:
            return SimError(1002, reason="auth_1002")
        if claims.get("iss") != self.config.access_key:
            return SimError(1000, "Authentication failed: unknown access key", reason="auth_1000")
        now = time.time()
        if float(claims["nbf"]) > now:
            return SimError(1003, reason="auth_1003")
        if float(claims["exp"]) <= now:
            return SimError(1004, reason="auth_1004")
        return None

    def _gate(self, request: Request, scope: str) -> Response | None:
        """Auth, rate and injected 'before' faults; a response if the request stops here."""
        self.account.counters.requests += 1
        if request.path_params.get("kind", KINDS[0]) not in KINDS:
            return self._error(self.account.reject(SimError(1202, reason="bad_path")))
        error = self._auth(request)
        if error is not None:
            return self._error(self.account.reject(error))
        try:
            self.account.take_token()
        except SimError as exc:
            return self._error(exc)
        fault = self.faults.pick("before", scope)
        if fault is None:
            return None
        error = {
            "rate_limit": SimError(1302, retry_after=1),
            "rate_limit_bare": SimError(1302),
            "server_error": SimError(5000),
            "policy": SimError(1301, "Failure to pass the risk control system"),
        }.get(fault) or SimError(int(fault[5:]))
        error.reason = f"fault_{fault}"
        return self._error(self.account.reject(error))

    async def _after(self, scope: str, response: Response) -> Response:
        fault = self.faults.pick("after", scope)
        if fault == "garbage":
            return Response(b'{"code": 0, "data": {"task_id": ', media_type="application/json")
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        elif fault == "lost":
            return _DroppedResponse()
        elif fault == "lost_500":
            return self._error(SimError(5000))
        return response

    # -- routes --------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        stop = self._gate(request, "create")
        if stop is not None:
            return stop
        try:
            body = await request.json()
        except ValueError:
            return self._error(self.account.reject(SimError(
                1200, "Invalid request parameters: the body is not JSON", reason="invalid")))
        base = str(request.base_url).rstrip("/")
        try:
            task = self.account.create(request.path_params["kind"], body, base)
        except SimError as exc:
            return self._error(exc)
        self._task_fault(task)
        self.callbacks.schedule(task, body.get("callback_url"), base)
        return await self._after("create", self._ok(task.to_json(time.monotonic(), base)))

    def _task_fault(self, task: SimTask) -> None:
        """The ``fail`` fault: the accepted task will end failed."""
        if self.faults.pick("task", "task"):
            task.fails = True
            task.fail_message = "Video generation failed (simulated)"

    async def get_one(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        self.account.counters.polls_single += 1
        try:
            task = self.account.get(request.path_params["kind"], request.path_params["task_id"])
        except SimError as exc:
            return self._error(exc)
        self.account.touched(task)
        base = str(request.base_url).rstrip("/")
        return await self._after("query", self._ok(task.to_json(time.monotonic(), base)))

    async def query(self, request: Request) -> Response:
        stop = self._gate(request, "query")
        if stop is not None:
            return stop
        kind, params = request.path_params["kind"], request.query_params
        base, now = str(request.base_url).rstrip("/"), time.monotonic()
        try:
            if "external_task_id" in params:
                self.account.counters.polls_external += 1
                data: Any = self._lookup(kind, params, now, base)
            elif "task_id" in params:
                self.account.counters.polls_single += 1
                task = self.account.get(kind, params["task_id"])
                self.account.touched(task)
                data = task.to_json(now, base)
            else:
                self.account.counters.polls_list += 1
                data = self._page(kind, params, now, base)
        except SimError as exc:
            return self._error(exc)
        return await self._after("query", self._ok(data))

    def _lookup(self, kind: str, params: QueryParams, now: float, base: str) -> Any:
        """``?external_task_id=X``, served the way ``config.lookup`` says."""
        if self.config.lookup == "refused":
            raise self.account.reject(SimError(
                1201, "Invalid parameters: external_task_id is not supported",
                reason="lookup_refused"))
        if self.config.lookup == "ignored":  # as if the parameter were not there
            self.account.counters.lookups_ignored += 1
            return self._page(kind, params, now, base)
        return self.account.get_external(kind, params["external_task_id"]).to_json(now, base)

    def _page(self, kind: str, params: QueryParams, now: float,
              base: str) -> list[dict[str, Any]]:
        try:
            number = int(params.get("pageNum", "1"))
            size = int(params.get("pageSize", "30"))
        except ValueError:
            number = size = 0
        return [t.to_json(now, base) for t in self.account.page(kind, number, size)]

    async def create_newer(self, request: Request) -> Response:
        return await kling_newer.create(self, request)

    async def tasks_query(self, request: Request) -> Response:
        return await kling_newer.tasks_query(self, request)

    async def tasks_cursor(self, request: Request) -> Response:
        return await kling_newer.tasks_cursor(self, request)

    async def audit(self, request: Request) -> Response:
        """Body ``{"rows": {row key: task id}}``: which rows hold a task that is not their own."""
        try:
            rows = dict((await request.json())["rows"])
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"expected {{'rows': {{key: task_id}}}}: {exc}"}, status_code=400)
        return JSONResponse(self.account.audit({str(k): str(v) for k, v in rows.items()}))

    async def download(self, request: Request) -> Response:
        task = self.account.tasks.get(request.path_params["task_id"])
        if task is None or task.status(time.monotonic()) != "succeed":
            return JSONResponse({"error": "no such video"}, status_code=404)
        self.account.touched(task)
        path = self.files / f"{task.task_id}.mp4"
        if not path.exists():
            from ..providers.local.render import render_clip  # the project's own tiny-MP4 renderer

            await run_in_threadpool(
                render_clip, path, str(task.body.get("prompt") or task.task_id),
                seconds=self.config.video_seconds,
                aspect_ratio=str(task.body.get("aspect_ratio")
                                 or (task.body.get("settings") or {}).get("aspect_ratio") or "16:9"))
        self.account.counters.downloads += 1
        return FileResponse(path, media_type="video/mp4")

    async def counters(self, request: Request) -> Response:
        return JSONResponse({**self.account.snapshot(), "faults_injected": self.faults.injected,
                             "faults": self.faults.describe()})

    async def tasks(self, request: Request) -> Response:
        """Every task on the account, oldest first: who created it and what became of it."""
        now, base = time.monotonic(), str(request.base_url).rstrip("/")
        return JSONResponse([{
            "task_id": t.task_id, "kind": t.kind, "external_task_id": t.external_task_id,
            "prompt": t.body.get("prompt"), "status": t.status(now), "foreign": t.foreign,
            "design": t.design, "units": t.units,
            "url": f"{base}/files/{t.task_id}.mp4" if t.status(now) == "succeed" else None,
        } for t in self.account.tasks_in_order()])

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
            self.account.add_foreign(self.config.foreign_tasks)
            self.account.hold_slots(self.config.foreign_slots)
            self.faults.set(rules, replace=bool(changes.get("replace_faults")))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        config = {k: v for k, v in asdict(self.config).items() if k != "secret_key"}
        return JSONResponse({"config": config, "faults": self.faults.describe()})

    async def reset(self, request: Request) -> Response:
        """Forget all tasks and counters, and drop every fault rule."""
        self.account = Account(self.config)
        self.faults = Faults(seed=self.config.seed)
        return JSONResponse({"reset": True})


def create_app(config: SimConfig | None = None,
               faults: str | dict[str, Any] | None = None) -> Starlette:
    return KlingApp(config, faults).app

