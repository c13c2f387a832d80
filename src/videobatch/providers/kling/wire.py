"""Kling's wire format: the create body written, and answers read (envelope, task objects, errors).

One job: translate between videobatch's vocabulary (``VideoRequest``, ``TaskStatus``, the
``videobatch.errors`` classes) and Kling's JSON. It sends nothing; ``client.py`` does, and asks
this module what to send and what an answer means. The contract is ``shared/kling-api.md``:

* create bodies are flat (``model_name`` always, ``mode``, ``duration`` as a string,
  ``aspect_ratio`` for text2video only — the image decides it otherwise —, ``sound`` for audio,
  ``external_task_id``, ...), from the request resolved against Kling's catalogue (defaults filled
  in, options typed); ``image`` / ``image_tail`` (the end image) are URLs passed through or bare
  base64 (``images.wire_value``); what Kling would refuse in them (over-long prompts, images out of
  bounds) is found before paying.

* envelope ``{"code": 0, "message": ..., "request_id": ..., "data": ...}``; ``code != 0`` is an
  error even with HTTP 200. Every mapped error carries Kling's ``request_id`` (to quote to
  Kling's support) next to the HTTP status and the business code.
* task objects ``{task_id, task_status, task_status_msg, task_info: {external_task_id},
  created_at, updated_at (ms), task_result: {videos: [{id, url, duration}]}}``; result URLs
  expire 30 days after the task was created.
* "too fast" is code 1302 (HTTP 429); the other 429 codes are quota (1100-1102), busy slots (1303)
  and the IP whitelist (1304), which must not slow the request rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from ..._retry import parse_retry_after
from ...errors import (
    AccountError,
    AuthError,
    ModelRefused,
    NotFoundError,
    Problem,
    ProviderError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from ...request import VideoRequest
from ..base import Resolved, TaskState, TaskStatus, Video
from . import images
from .options import KlingOptions

__all__ = [
    "ACCESS_ENV",
    "API_KEY_ENV",
    "IMAGE2VIDEO",
    "KINDS",
    "MAX_TEXT",
    "RESULT_TTL",
    "SECRET_ENV",
    "TEXT2VIDEO",
    "body_problems",
    "code_of",
    "created_ms",
    "envelope_of",
    "external_id",
    "is_duplicate",
    "map_error",
    "parse_task",
    "request_body",
    "too_fast",
    "transport_error",
    "units",
]

ACCESS_ENV, SECRET_ENV, API_KEY_ENV = "KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_API_KEY"
MAX_TEXT = 2500  # characters of prompt / negative_prompt
RESULT_TTL = 30 * 24 * 3600  # Kling deletes result files after 30 days
TEXT2VIDEO, IMAGE2VIDEO = "text2video", "image2video"
KINDS = (TEXT2VIDEO, IMAGE2VIDEO)
_STATES = {
    "submitted": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "succeed": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
}


async def request_body(request: VideoRequest, resolved: Resolved, key: str,
                       callback_url: str | None) -> tuple[str, dict[str, Any]]:
    """The endpoint kind (text2video / image2video) and the JSON body creating ``request``
    (``resolved``: its values with its model's defaults, options typed)."""
    values = resolved.values
    options = resolved.options if isinstance(resolved.options, KlingOptions) else KlingOptions()
    kind = IMAGE2VIDEO if (request.image or request.end_image) else TEXT2VIDEO
    body: dict[str, Any] = {"model_name": resolved.model}  # always: Kling's default is a retired model
    if values.get("mode"):
        body["mode"] = values["mode"]
    if values.get("duration") is not None:
        body["duration"] = str(values["duration"])
    if kind == TEXT2VIDEO and values.get("aspect_ratio"):
        body["aspect_ratio"] = values["aspect_ratio"]
    if request.prompt:
        body["prompt"] = request.prompt
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if values.get("audio") is not None:
        body["sound"] = "on" if values["audio"] else "off"
    if options.voice_list:
        body["voice_list"] = options.voice_list
    if options.watermark is not None:
        body["watermark_info"] = {"enabled": options.watermark}
    if options.cfg_scale is not None:
        body["cfg_scale"] = options.cfg_scale
    if options.camera_control is not None:
        body["camera_control"] = options.camera_control
    for column, field in (("image", "image"), ("image_tail", "end_image")):
        value = getattr(request, field)
        if value:
            body[column] = await images.wire_value(field, value)
    if callback_url:
        body["callback_url"] = callback_url
    body["external_task_id"] = key
    return kind, body


def body_problems(requests: Sequence[VideoRequest]) -> list[Problem]:
    """What Kling would refuse in these rows' create bodies (row numbers 1-based), found before
    anything is paid."""
    problems: list[Problem] = []
    for row, req in enumerate(requests, start=1):
        for column in ("prompt", "negative_prompt"):
            text = getattr(req, column) or ""
            if len(text) > MAX_TEXT:
                problems.append(Problem(row, column, f"{column} is {len(text)} characters "
                                        f"long, Kling accepts at most {MAX_TEXT}",
                                        allowed=f"at most {MAX_TEXT} characters"))
        for column in ("image", "end_image"):
            value = getattr(req, column)
            message = images.problem(value) if value else None
            if message:
                problems.append(Problem(row, column, message, allowed=images.ALLOWED))
        if req.end_image and (req.options or {}).get("camera_control") is not None:
            problems.append(Problem(row, "camera_control", "Kling does not accept "
                                    "camera_control together with an end image",
                                    allowed="one of end_image or camera_control"))
    return problems


def envelope_of(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's envelope, or None if it is not one (not JSON, or no ``code``)."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) and "code" in data else None


def code_of(envelope: dict[str, Any] | None) -> int | None:
    if envelope is None:
        return None
    try:
        return int(envelope["code"])
    except (TypeError, ValueError):
        return None


def too_fast(response: httpx.Response) -> float | None:
    """For the paced transport: seconds every request should wait after this HTTP 429 answer, or
    None when it is not about the request rate (quota, busy slots, whitelist)."""
    code = code_of(envelope_of(response))
    if response.status_code != 429 or code not in (1302, None):
        return None
    wait = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if wait is None else wait


def map_error(response: httpx.Response, envelope: dict[str, Any] | None, code: int | None, *,
              submitting: bool, model: str | None, now: float) -> ProviderError:
    """The ``videobatch.errors`` class an error answer belongs to, with Kling's own words."""
    status = response.status_code
    said = str(envelope.get("message") or "").strip() if envelope else ""
    if envelope is None:
        snippet = " ".join(response.text[:120].split())
        said = f"HTTP {status}, unreadable answer" + (f": {snippet!r}" if snippet else "")
    request_id = envelope.get("request_id") if envelope else None
    where: dict[str, Any] = {"provider_code": code, "status_code": status,
                             "request_id": str(request_id) if request_id else None}
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
    if (code is not None and 1000 <= code <= 1004) or (code is None and status == 401):
        hint = " Check this machine's clock too." if code in (1003, 1004) else ""
        return AuthError(f"Kling refused the credentials ({said}). Check {API_KEY_ENV} (a console "
                         f"API key), or {ACCESS_ENV} and {SECRET_ENV} (or the api_key / access_key "
                         "and secret_key options): a key pair must be the same pair from the Kling "
                         "developer console, and keys work only on their region's host "
                         f"(-P region=cn for China-site keys).{hint}", **where)
    if code in (1100, 1101, 1102):
        return AccountError(f"Kling account cannot take new tasks ({said}): the balance or "
                            "resource pack is the problem. Top it up, then resume the run.",
                            **where)
    if code == 1304:
        return AccountError(f"Kling refused this machine's IP address ({said}): add it to the "
                            "API key's IP whitelist, then resume the run.", **where)
    if code == 1103:
        return ModelRefused(f"Kling denied access to model {model or '?'} ({said}); choose a "
                            "model your account may use.", model=model, **where)
    if submitting and (code == 1203 or (code is None and status == 404)):
        # On a create, the resource that does not exist is the model (Kling: "such as the model").
        return ModelRefused(f"Kling says model {model or '?'} does not exist ({said}): it was "
                            "probably retired. `python -m videobatch models --provider kling` lists "
                            "the current ones; choose one (or update your catalogue file) and resume.",
                            model=model, **where)
    if code in (1300, 1301):
        return RejectedError(f"Kling's content policy refused this prompt: {said}", **where)
    if code == 1302 or (code is None and status == 429):
        return RateLimited(f"Kling says requests come too fast ({said})",
                           retry_after=retry_after, **where)
    if code == 1303:
        return SlotsBusy(f"every Kling parallel-task slot is taken ({said})",
                         retry_after=max(1.0, retry_after or 1.0), **where)
    if code == 1203 or (code is None and status == 404):
        return NotFoundError(f"Kling has no such task ({said})", **where)
    if status >= 500 or (code is not None and code >= 5000) or (envelope is None and status < 400):
        return TransientError(f"Kling server trouble ({said})", retry_after=retry_after,
                              maybe_accepted=submitting, **where)
    return RejectedError(f"Kling rejected the request: {said}", **where)


def transport_error(exc: httpx.TransportError, method: str, path: str,
                    submitting: bool) -> TransientError:
    """A request that got no answer: transient; a create may have arrived unless it was unsent."""
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout |
                        httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError)
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = str(exc) or type(exc).__name__
    return TransientError(
        f"Kling {method} {path} {what}: {detail}"
        + ("" if unsent else " (the request may have arrived)"),
        maybe_accepted=submitting and not unsent,
    )


def is_duplicate(exc: ProviderError) -> bool:
    """A create refused because its external_task_id was used before (Kling documents only that
    the id must be unique per account: any 1200/1201 refusal naming the field is read so)."""
    return exc.provider_code in (1200, 1201) and "external_task_id" in exc.message.lower()


def external_id(item: Any) -> str | None:
    """The ``task_info.external_task_id`` a task object carries, or None."""
    info = item.get("task_info") if isinstance(item, dict) else None
    value = info.get("external_task_id") if isinstance(info, dict) else None
    return str(value) if value not in (None, "") else None


def created_ms(item: Any) -> float | None:
    """A task object's ``created_at`` (ms since the epoch), or None if it has no readable one."""
    return _float(item.get("created_at")) if isinstance(item, dict) else None


def parse_task(data: Any, *, submitting: bool = False, key: str | None = None) -> TaskStatus:
    """A task object as a ``TaskStatus``; ``key`` is the idempotency key when the object lacks one
    (a create answer). Unreadable: TransientError (a create may still have made the task)."""
    if not isinstance(data, dict) or not data.get("task_id"):
        raise TransientError("Kling answered without a readable task object",
                             maybe_accepted=submitting)
    raw = str(data.get("task_status") or "submitted")
    state = _STATES.get(raw, TaskState.RUNNING)
    created = _seconds(data.get("created_at"))
    videos: list[Video] = []
    for item in ((data.get("task_result") or {}).get("videos") or []):
        if isinstance(item, dict) and item.get("url"):
            videos.append(Video(url=str(item["url"]), id=_text(item.get("id")),
                                duration=_float(item.get("duration"))))
    return TaskStatus(
        task_id=str(data["task_id"]),
        state=state,
        videos=tuple(videos),
        message=_text(data.get("task_status_msg")) if state is TaskState.FAILED else None,
        created_at=created,
        finished_at=_seconds(data.get("updated_at")) if state.done else None,
        expires_at=created + RESULT_TTL if (created is not None and videos) else None,
        idempotency_key=external_id(data) or key,
    )


def units(data: Any) -> float | None:
    """The units a legacy task object says were deducted for it: ``final_unit_deduction``, a
    string in Kling's documentation ("3"; a number is read too). None when absent or unreadable."""
    value = _float(data.get("final_unit_deduction")) if isinstance(data, dict) else None
    return value if value is not None and value >= 0 else None


def _seconds(ms: Any) -> float | None:
    value = _float(ms)
    return value / 1000.0 if value is not None else None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
