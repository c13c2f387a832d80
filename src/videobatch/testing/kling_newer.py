"""Kling's newer API design on the test server: its routes, and its tasks in the newer shape.

Served beside ``/v1`` on the same account (``kling_sim.Account``; bodies checked by
``kling_bodies.check_newer``), as docs/providers/kling.md §4 and §7b record it, with the sample
bodies in tests/fixtures/providers/kling/new_*.json:

* ``POST /text-to-video/{model}``, ``POST /image-to-video/{model}``: answer ``data: {id, status,
  message, create_time, update_time, external_id}``; external ids are unique across both designs.
* ``GET /tasks?task_ids=a,b`` or ``?external_task_ids=x,y`` (exactly one; ``data`` an array). The
  server's ``lookup`` setting serves ``?external_task_ids=`` as it does the /v1 lookup:
  ``answered``, ``refused`` (400 / 1201) or ``ignored`` (the account's 30 newest tasks, as if the
  parameter were not there).
* ``POST /tasks``: ``start_time`` / ``end_time`` (ms strings; default the last 30 days), ``cursor``
  (overrides the times), ``limit`` 1-500, ``filters`` on status; ``data: {result, count,
  next_cursor, has_more}``, newest first.

These endpoints see every task of the account in the newer shape (``id``, ``status: succeeded``,
``external_id``, ``outputs``, ``billing``): both designs' and other systems' ("all product kinds
at one URL"); the ``/v1`` endpoints see only tasks created through ``/v1`` and other systems'.
Kling does not say whether its two designs see each other's tasks; the client assumes neither.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import kling_billing as billing
from . import kling_bodies as bodies
from .kling_sim import Account, SimConfig, SimError, SimTask

__all__ = ["by_external_ids", "by_ids", "create", "create_task", "task_json", "tasks_cursor", "tasks_query", "window"]

_STATUS = {"succeed": "succeeded"}  # the newer spelling


class Server(Protocol):
    """What the routes use of ``kling_app.KlingApp``."""

    config: SimConfig
    account: Account

    def _gate(self, request: Request, scope: str) -> Response | None: ...
    def _ok(self, data: Any) -> JSONResponse: ...
    def _error(self, error: SimError) -> JSONResponse: ...
    async def _after(self, scope: str, response: Response) -> Response: ...
    def _task_fault(self, task: SimTask) -> None: ...


def task_json(task: SimTask, now: float, files_url: str) -> dict[str, Any]:
    """The task as the newer design's ``/tasks`` endpoints show it."""
    status = task.status(now)
    data: dict[str, Any] = {
        "id": task.task_id,
        "status": _STATUS.get(status, status),
        "message": task.fail_message if status == "failed" else "",
        "create_time": task.created_ms,
        "update_time": task.created_ms + int(1000 * (min(now, task.done_at) - task.started)),
        "external_id": task.external_task_id or "",
        "outputs": [],
        "billing": [],
    }
    if status == "succeed":
        data["outputs"] = [{"type": "video", "id": f"v-{task.task_id}",
                            "url": f"{files_url}/files/{task.task_id}.mp4",
                            "watermark_url": "", "duration": str(task.seconds())}]
        if task.units is not None:  # what it was charged (kling_billing), in resource-pack units
            data["billing"] = [{"charge_type": "unit", "amount": billing.text(task.units),
                                "package_type": "video"}]
    return data

def create_task(account: Account, endpoint: str, model: str, body: Any) -> SimTask:
    """``POST /{endpoint}/{model}``: checked as documented (``kling_bodies.check_newer``), then
    accepted like a /v1 create (limits, unique external id, paid-duplicate count)."""
    try:
        bodies.check_newer(endpoint, model, body, account.config.retired)
    except bodies.Refusal as refusal:
        raise account.reject(SimError(refusal.code, refusal.message, reason=refusal.reason)) from None
    contents = body.get("contents") or []
    prompt = str(body.get("prompt") or next(
        (c.get("text") for c in contents if c.get("type") == "prompt"), "") or "")
    marker = account.config.blocked_marker
    if marker and marker in prompt:
        raise account.reject(SimError(1301, "Failure to pass the risk control system: the "
                                      "prompt contains blocked content", reason="policy"))
    options = body.get("options") or {}
    content = {"model": model, "endpoint": endpoint, "prompt": body.get("prompt"),
               "contents": contents, "settings": body.get("settings") or {}}
    kind = "image2video" if endpoint == "image-to-video" else "text2video"
    return account.accept(kind, body, options.get("external_task_id"), model, prompt, content,
                          design="newer")


def by_ids(account: Account, ids: list[str]) -> list[SimTask]:
    return [account.tasks[i] for i in ids if i in account.tasks]


def by_external_ids(account: Account, ids: list[str]) -> list[SimTask]:
    return by_ids(account, [account.by_external[i] for i in ids if i in account.by_external])


def window(account: Account, start_ms: int, end_ms: int) -> list[SimTask]:
    """Every task created in ``[start_ms, end_ms]``, newest first (the cursor listing)."""
    return [t for t in reversed(account.tasks_in_order()) if start_ms <= t.created_ms <= end_ms]


async def create(app: Server, request: Request) -> Response:
    stop = app._gate(request, "create")
    if stop is not None:
        return stop
    try:
        body = await request.json()
    except ValueError:
        return app._error(app.account.reject(SimError(
            1200, "Invalid request parameters: the body is not JSON", reason="invalid")))
    endpoint = request.url.path.strip("/").split("/")[0]
    try:
        task = create_task(app.account, endpoint, request.path_params["model"], body)
    except SimError as exc:
        return app._error(exc)
    app._task_fault(task)
    answer = {k: v for k, v in task_json(task, time.monotonic(), "").items()
              if k in ("id", "status", "message", "create_time", "update_time", "external_id")}
    return await app._after("create", app._ok(answer))

async def tasks_query(app: Server, request: Request) -> Response:
    """``GET /tasks?task_ids=`` or ``?external_task_ids=`` (comma lists, exactly one)."""
    stop = app._gate(request, "query")
    if stop is not None:
        return stop
    params, account = request.query_params, app.account
    base, now = str(request.base_url).rstrip("/"), time.monotonic()
    try:
        if ("task_ids" in params) == ("external_task_ids" in params):
            raise account.reject(SimError(1201, "Invalid parameters: give task_ids or "
                                          "external_task_ids, not both", reason="invalid"))
        if "task_ids" in params:
            account.counters.polls_single += 1
            tasks = by_ids(account, _ids(params["task_ids"]))
            for task in tasks:
                account.touched(task)
        elif app.config.lookup == "refused":
            raise account.reject(SimError(
                1201, "Invalid parameters: external_task_ids is not supported",
                reason="lookup_refused"))
        elif app.config.lookup == "ignored":  # as if the parameter were not there
            account.counters.polls_external += 1
            account.counters.lookups_ignored += 1
            tasks = window(account, 0, 2**62)[:30]
        else:
            account.counters.polls_external += 1
            tasks = by_external_ids(account, _ids(params["external_task_ids"]))
    except SimError as exc:
        return app._error(exc)
    return await app._after("query", app._ok([task_json(t, now, base) for t in tasks]))

async def tasks_cursor(app: Server, request: Request) -> Response:
    """``POST /tasks``: the account's tasks in a creation-time window, newest first, by cursor."""
    stop = app._gate(request, "query")
    if stop is not None:
        return stop
    account = app.account
    base, now = str(request.base_url).rstrip("/"), time.monotonic()
    try:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SimError(1200, "Invalid request parameters: the body is not a JSON object")
        account.counters.polls_list += 1
        cursor = str(body.get("cursor") or "")
        if cursor:  # a cursor overrides the times (documented)
            start_s, end_s, offset_s = cursor.split(":")
            start, end, offset = int(start_s), int(end_s), int(offset_s)
        else:
            end = int(body.get("end_time") or time.time() * 1000)
            start = int(body.get("start_time") or end - 30 * 24 * 3600 * 1000)
            offset = 0
        limit = int(body.get("limit", 100))
        if not 1 <= limit <= 500 or start >= end:
            raise SimError(1201, "Invalid parameters: limit must be 1-500 and start_time "
                                 "earlier than end_time")
        wanted = {v for f in body.get("filters") or [] if f.get("key") == "status"
                  for v in f.get("values") or []}
    except SimError as exc:
        exc.reason = "invalid"
        return app._error(account.reject(exc))
    except (TypeError, ValueError, AttributeError):
        return app._error(account.reject(SimError(1201, "Invalid parameters: cursor, times, "
                                                   "limit or filters", reason="invalid")))
    tasks = [task_json(t, now, base) for t in window(account, start, end)]
    if wanted:
        tasks = [t for t in tasks if t["status"] in wanted]
    page, more = tasks[offset:offset + limit], offset + limit < len(tasks)
    data = {"result": page, "count": len(page), "has_more": more,
            "next_cursor": f"{start}:{end}:{offset + limit}" if more else ""}
    return await app._after("query", app._ok(data))


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
