"""Kling's newer API design on the wire: create paths and bodies written, task objects and the
``/tasks`` answers read. It sends nothing; ``client.py`` does.

The contract is ``docs/providers/kling.md`` §4 and §7b (Kling's newer documentation, e.g.
kling.ai/document-api/api/video/motion-control, "Query Task (By task ID)" and "(By Cursor)"):

* create: ``POST /text-to-video/{model}`` or ``POST /image-to-video/{model}`` (the model is in the
  path), body ``{prompt, settings: {resolution, aspect_ratio, duration (int), audio native/off,
  multi_shot}, options: {external_task_id, callback_url, watermark_info: {enabled}}}``; an image
  row sends ``contents: [{type: prompt, text}, {type: first_frame, url}, {type: last_frame, url}]``
  instead of ``prompt`` (the image decides the aspect ratio; a ``url`` may be a URL or bare
  base64, as the documented image inputs say). Answer ``data: {id, status, create_time,
  update_time, external_id}``.
* task objects ``{id, status: submitted|processing|succeeded|failed, message, create_time,
  update_time (ms), external_id, outputs: [{type: video, id, url, duration}], billing:
  [{charge_type, amount, package_type}]}``: ``units`` reads what a task was charged.
* lookup ``GET /tasks?task_ids=a,b`` or ``?external_task_ids=x,y`` (one of the two): ``data`` is an
  array. Only an object whose own ``external_id`` equals the key is ever taken (``read_lookup``).
* listing ``POST /tasks`` ``{start_time, end_time (ms strings), cursor, limit ≤ 500}`` →
  ``data: {result[], count, next_cursor, has_more}``; a non-empty cursor overrides the times.

*Unsure*, and the safe reading taken: ``settings.multi_shot`` defaults to **true** on kling-3.0,
so it is sent (false unless the row asks) whenever the model's card has that option; the design
is the card's ``api`` option (``newer``), never guessed from a model name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import TransientError
from ...request import VideoRequest
from ..base import Resolved, TaskState, TaskStatus, Video
from . import images
from .options import KlingOptions
from .wire import RESULT_TTL, _float, _seconds, _text  # the same readings of Kling's values

__all__ = [
    "DESIGN",
    "IMAGE_TO_VIDEO",
    "MAX_BATCH",
    "MAX_LIMIT",
    "TEXT_TO_VIDEO",
    "created_ms",
    "cursor_body",
    "external_id",
    "is_newer",
    "parse_task",
    "read_cursor_page",
    "read_lookup",
    "request_body",
    "units",
]

DESIGN = "newer"  # the value of a card's ``api`` option that picks this design
TEXT_TO_VIDEO, IMAGE_TO_VIDEO = "text-to-video", "image-to-video"
MAX_LIMIT = 500  # POST /tasks: documented maximum of ``limit``
MAX_BATCH = 20  # ids per GET /tasks query: comma batches are documented, their size is not
_STATES = {
    "submitted": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "succeeded": TaskState.SUCCEEDED,
    "succeed": TaskState.SUCCEEDED,  # the legacy spelling, accepted (lenient reading)
    "failed": TaskState.FAILED,
}


def is_newer(values: Mapping[str, Any]) -> bool:
    """Whether a resolved row goes to the newer design (its card's ``api`` option says so)."""
    return values.get("api") == DESIGN


async def request_body(request: VideoRequest, resolved: Resolved, key: str,
                       callback_url: str | None) -> tuple[str, dict[str, Any]]:
    """The create path (``/text-to-video/kling-3.0``, ...) and its JSON body."""
    values = resolved.values
    options = resolved.options if isinstance(resolved.options, KlingOptions) else KlingOptions()
    image = bool(request.image or request.end_image)
    path = f"/{IMAGE_TO_VIDEO if image else TEXT_TO_VIDEO}/{resolved.model}"
    settings: dict[str, Any] = {}
    if values.get("resolution"):
        settings["resolution"] = values["resolution"]
    if not image and values.get("aspect_ratio"):
        settings["aspect_ratio"] = values["aspect_ratio"]
    if values.get("duration") is not None:
        settings["duration"] = int(values["duration"])
    if values.get("audio") is not None:
        settings["audio"] = "native" if values["audio"] else "off"
    if values.get("multi_shot") is not None:
        settings["multi_shot"] = bool(values["multi_shot"])
    opts: dict[str, Any] = {}
    if callback_url:
        opts["callback_url"] = callback_url
    opts["external_task_id"] = key
    if options.watermark is not None:
        opts["watermark_info"] = {"enabled": options.watermark}
    body: dict[str, Any] = {}
    if image:
        contents: list[dict[str, Any]] = []
        if request.prompt:
            contents.append({"type": "prompt", "text": request.prompt})
        for kind, field in (("first_frame", "image"), ("last_frame", "end_image")):
            value = getattr(request, field)
            if value:
                contents.append({"type": kind, "url": await images.wire_value(field, value)})
        body["contents"] = contents
    else:
        body["prompt"] = request.prompt
    body["settings"] = settings
    body["options"] = opts
    return path, body


def external_id(item: Any) -> str | None:
    """The ``external_id`` a newer-design task object carries, or None."""
    value = item.get("external_id") if isinstance(item, dict) else None
    return str(value) if value not in (None, "") else None


def created_ms(item: Any) -> float | None:
    return _float(item.get("create_time")) if isinstance(item, dict) else None


def parse_task(data: Any, *, submitting: bool = False, key: str | None = None) -> TaskStatus:
    """A newer-design task object as a ``TaskStatus`` (``key``: the idempotency key when the
    object does not carry one). Unreadable: TransientError (a create may still have made it)."""
    if not isinstance(data, dict) or not data.get("id"):
        raise TransientError("Kling answered without a readable task object",
                             maybe_accepted=submitting)
    state = _STATES.get(str(data.get("status") or "submitted"), TaskState.RUNNING)
    created = _seconds(data.get("create_time"))
    videos = tuple(
        Video(url=str(out["url"]), id=_text(out.get("id")), duration=_float(out.get("duration")))
        for out in (data.get("outputs") or [])
        if isinstance(out, dict) and out.get("type", "video") == "video" and out.get("url"))
    return TaskStatus(
        task_id=str(data["id"]),
        state=state,
        videos=videos,
        message=_text(data.get("message")) if state is TaskState.FAILED else None,
        created_at=created,
        finished_at=_seconds(data.get("update_time")) if state.done else None,
        expires_at=created + RESULT_TTL if (created is not None and videos) else None,
        idempotency_key=external_id(data) or key,
    )


def units(data: Any) -> float | None:
    """The units a newer-design task object says it was charged: the sum of its ``billing[]``
    amounts (strings, e.g. "6.4") of ``charge_type`` ``unit`` (resource-pack units). None when it
    lists no charge, or any charge is not in units (``cash``, from an account balance in a
    currency the object does not name): then only the estimate can be counted."""
    billing = data.get("billing") if isinstance(data, dict) else None
    if not isinstance(billing, list) or not billing:
        return None
    total = 0.0
    for item in billing:
        amount = _float(item.get("amount")) if isinstance(item, dict) else None
        if amount is None or amount < 0 or item.get("charge_type", "unit") != "unit":
            return None
        total += amount
    return total


def read_lookup(data: Any, key: str) -> tuple[dict[str, Any] | None, bool]:
    """What an answer to ``GET /tasks?external_task_ids=key`` proves: ``(task, answered)``.

    ``(task, True)``: the object carrying exactly ``key``. ``(None, True)``: an empty array, Kling
    has none. ``(None, False)``: objects about other tasks (the parameter ignored), objects without
    an external id, or not an array at all: it proves nothing.
    """
    if data in (None, []):
        return None, True
    if not isinstance(data, list):
        return None, False
    for item in data:
        if isinstance(item, dict) and item.get("id") and external_id(item) == key:
            return item, True
    return None, False


def cursor_body(start_ms: int, end_ms: int, cursor: str, limit: int) -> dict[str, Any]:
    """The ``POST /tasks`` body for one page (times are ms strings, as documented)."""
    body: dict[str, Any] = {"start_time": str(start_ms), "end_time": str(end_ms),
                            "limit": max(1, min(MAX_LIMIT, limit))}
    if cursor:
        body["cursor"] = cursor
    return body


def read_cursor_page(data: Any) -> tuple[list[Any], str, bool]:
    """A cursor page's ``(result, next_cursor, has_more)``; TransientError when it is no page."""
    if not isinstance(data, dict) or not isinstance(data.get("result", []), list):
        raise TransientError(f"Kling answered its task listing with a {type(data).__name__}, "
                             "not a page", maybe_accepted=False)
    return list(data.get("result") or []), str(data.get("next_cursor") or ""), bool(data.get("has_more"))
