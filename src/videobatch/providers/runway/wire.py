"""Runway's wire format: create bodies written, answers read (tasks, errors), and nothing sent.

One job: translate between videobatch's vocabulary (``VideoRequest``, ``TaskStatus``, the
``videobatch.errors`` classes) and Runway's JSON (docs/providers/runway.md). ``client.py`` sends.

* ``POST /v1/text_to_video`` or ``/v1/image_to_video`` with a camelCase body keyed by ``model``
  (``promptText``, ``ratio`` as a pixel size, ``duration``, ``seed``, ``audio``,
  ``negativePrompt``, ``contentModeration``, ``promptImage``: a string, or first/last keyframes as
  ``[{"uri", "position"}]``); the answer is ``{"id", "estimatedCost"?}``: no status, no key of ours.
* ``GET /v1/tasks/{id}``: ``status`` PENDING | THROTTLED (queued) | RUNNING | SUCCEEDED (``output``
  URLs, signed and expiring in 24-48 h) | FAILED (``failure``, ``failureCode``) | CANCELLED.
* Errors are ``{"error": text, "issues"?: [...], "docUrl"?}``. 429 on a create is the daily task
  cap (an account matter, not a rate); 503 sheds load before anything is made; any other 5xx, a
  lost or unreadable answer to a create may hide a created, billed task.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from ..._retry import parse_retry_after
from ...errors import (
    AccountError,
    AuthError,
    NotFoundError,
    ProviderError,
    RateLimited,
    RejectedError,
    TransientError,
)
from ...request import VideoRequest
from ..base import Resolved, TaskState, TaskStatus, Video
from . import shapes
from .options import RunwayOptions

__all__ = [
    "IMAGE_TO_VIDEO",
    "OUTPUT_TTL",
    "SECRET_ENV",
    "TEXT_TO_VIDEO",
    "VERSION",
    "cancel_outcome",
    "map_error",
    "parse_created",
    "parse_task",
    "request_body",
    "request_problems",
    "too_fast",
    "transport_error",
]

SECRET_ENV = "RUNWAYML_API_SECRET"  # noqa: S105 (the variable's name, not a key)
VERSION = "2024-11-06"  # X-Runway-Version, required on every request
TEXT_TO_VIDEO, IMAGE_TO_VIDEO = "/v1/text_to_video", "/v1/image_to_video"
OUTPUT_TTL = 24 * 3600  # output URLs expire within 24-48 h: the short end
_STATES = {"PENDING": TaskState.QUEUED, "THROTTLED": TaskState.QUEUED, "RUNNING": TaskState.RUNNING,
           "SUCCEEDED": TaskState.SUCCEEDED, "FAILED": TaskState.FAILED, "CANCELLED": TaskState.FAILED}


def _options(resolved: Resolved) -> RunwayOptions:
    return resolved.options if isinstance(resolved.options, RunwayOptions) else RunwayOptions()


def _ratio(request: VideoRequest, resolved: Resolved) -> tuple[str | None, str | None]:
    values, card = resolved.values, resolved.card
    given = _options(resolved).ratio
    if card is None:
        return given, None
    return shapes.pick_ratio(card, image=bool(request.image), aspect_ratio=values.get("aspect_ratio"),
                             resolution=values.get("resolution"), given=given,
                             aspect_given=request.aspect_ratio is not None)


def request_problems(request: VideoRequest, resolved: Resolved) -> list[tuple[str, str, str]]:
    """What Runway would refuse in this row's body: ``(column, message, allowed)`` each."""
    found: list[tuple[str, str, str]] = []
    model = resolved.model
    _, why = _ratio(request, resolved)
    if why:
        found.append(("aspect_ratio", why, "an aspect ratio (and resolution) the model has a size for"))
    limit = shapes.prompt_limit(model)
    for column in ("prompt", "negative_prompt"):
        text = getattr(request, column) or ""
        if shapes.utf16_length(text) > limit:
            found.append((column, f"{column} is {shapes.utf16_length(text)} UTF-16 units long, "
                          f"Runway's {model} takes at most {limit}", f"at most {limit} characters"))
    if model == "gen4.5" and not request.prompt:
        found.append(("prompt", "Runway's gen4.5 needs a prompt for image-to-video too", "a prompt"))
    if request.end_image and not request.image:
        found.append(("end_image", "Runway takes a last frame only together with a first one",
                      "an image column as well"))
    for column in ("image", "end_image"):
        value = getattr(request, column)
        message = shapes.image_problem(value) if value else None
        if message:
            found.append((column, message, shapes.IMAGES_ALLOWED))
    return found


async def request_body(request: VideoRequest, resolved: Resolved) -> tuple[str, dict[str, Any]]:
    """The endpoint path and the JSON body creating ``request`` (``resolved``: its values with its
    model's defaults filled in, options typed). Values the model does not take are not sent."""
    values, card = resolved.values, resolved.card
    takes = card.fields if card is not None else frozenset()
    options = _options(resolved)
    body: dict[str, Any] = {"model": resolved.model}
    if request.prompt:
        body["promptText"] = request.prompt
    ratio, why = _ratio(request, resolved)
    if why:
        raise RejectedError(f"Runway would refuse this row: {why}")
    if ratio:
        body["ratio"] = ratio
    if values.get("duration") is not None:
        body["duration"] = int(values["duration"])
    if values.get("seed") is not None and "seed" in takes:
        body["seed"] = int(values["seed"])
    if values.get("audio") is not None and "audio" in takes:
        body["audio"] = bool(values["audio"])
    if request.negative_prompt and "negative_prompt" in takes:
        body["negativePrompt"] = request.negative_prompt
    if options.public_figure_threshold:
        body["contentModeration"] = {"publicFigureThreshold": options.public_figure_threshold}
    if not request.image:
        return TEXT_TO_VIDEO, body
    first = await shapes.image_wire("image", request.image)
    if request.end_image:
        last = await shapes.image_wire("end_image", request.end_image)
        body["promptImage"] = [{"uri": first, "position": "first"}, {"uri": last, "position": "last"}]
    else:
        body["promptImage"] = first
    return IMAGE_TO_VIDEO, body


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def parse_created(response: httpx.Response) -> str:
    """The task id of a create's 200 answer; unreadable: the task may exist (maybe_accepted)."""
    data = _json(response)
    task_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(task_id, str) or not task_id:
        raise TransientError("Runway accepted the create but its answer has no readable task id; "
                             "a task may have been created and billed", maybe_accepted=True,
                             status_code=response.status_code, request_id=_request_id(response))
    return task_id


def cancel_outcome(data: Any) -> bool | None:
    """What a task read back after its DELETE says (``Provider.cancel``'s answer): True when it
    shows the task stopped at no cost; None when stopped (or ended) with a cost, or a cost it does
    not show; False when the task is still open (the DELETE did not take)."""
    status = data.get("status") if isinstance(data, dict) else None
    if status in ("PENDING", "THROTTLED", "RUNNING"):
        return False
    if status != "CANCELLED":
        return None
    cost = data.get("cost")
    credits = cost.get("credits") if isinstance(cost, dict) else None
    unpaid = isinstance(credits, int | float) and not isinstance(credits, bool) and credits == 0
    return True if unpaid else None


def _seconds(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _failure(data: dict[str, Any], status: str) -> str:
    cost = (data.get("cost") or {}).get("credits") if isinstance(data.get("cost"), dict) else None
    billed = f"; cost {cost:g} credits" if isinstance(cost, int | float) else ""
    if status == "CANCELLED":
        return f"Runway reports the task cancelled or deleted{billed}"
    code = data.get("failureCode")
    text = str(data.get("failure") or "the task failed")
    if not code:
        return f"{text}{billed}"
    hint = ""
    if str(code).startswith("SAFETY.INPUT"):
        hint = " (input moderation: do not resend as is)"
    elif str(code).startswith("SAFETY.OUTPUT"):
        hint = " (output moderation: another prompt or seed may pass)"
    elif str(code).startswith("INTERNAL"):
        hint = " (Runway-side: retrying is reasonable)"
    return f"{text} [failureCode {code}]{hint}{billed}"


def parse_task(data: Any, *, now: float | None = None, duration: float | None = None) -> TaskStatus:
    """A ``GET /v1/tasks/{id}`` body as a ``TaskStatus``; an unknown status reads as running (the
    task is polled on, never given up)."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise TransientError("Runway answered without a readable task", maybe_accepted=False)
    status = str(data.get("status") or "")
    state = _STATES.get(status, TaskState.RUNNING)
    videos: tuple[Video, ...] = ()
    if status == "SUCCEEDED":
        videos = tuple(Video(url=url, duration=duration) for url in (data.get("output") or [])
                       if isinstance(url, str) and url)
    read_at = time.time() if now is None else now
    return TaskStatus(
        task_id=data["id"],
        state=state,
        videos=videos,
        message=_failure(data, status) if state is TaskState.FAILED else None,
        created_at=_seconds(data.get("createdAt")),
        expires_at=read_at + OUTPUT_TTL if videos else None,
    )


def _request_id(response: httpx.Response) -> str | None:
    return response.headers.get("x-request-id") or None


def too_fast(response: httpx.Response) -> float | None:
    """For the paced transport: a 429 to a create is the daily task cap, which says nothing about
    the request rate (waiting seconds does not help); a 429 to anything else is "slow down"."""
    try:
        method = response.request.method
    except RuntimeError:  # an answer made without a request: read it as a create's, to be safe
        method = "POST"
    if response.status_code != 429 or method == "POST":
        return None
    wait = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if wait is None else wait


def map_error(response: httpx.Response, *, submitting: bool, model: str | None,
              now: float) -> ProviderError:
    """The ``videobatch.errors`` class an error answer belongs to, with Runway's own words."""
    status = response.status_code
    data = _json(response)
    said = str(data.get("error") or "").strip() if isinstance(data, dict) else ""
    issues = data.get("issues") if isinstance(data, dict) else None
    if isinstance(issues, list) and issues:
        said += ": " + "; ".join(
            f"{'.'.join(map(str, i.get('path') or [])) or 'body'}: {i.get('message', '')}".strip()
            for i in issues[:5] if isinstance(i, dict))
    if not said:
        snippet = " ".join(response.text[:120].split())
        said = f"HTTP {status}" + (f", {snippet!r}" if snippet else "")
    where: dict[str, Any] = {"status_code": status, "request_id": _request_id(response)}
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
    if status == 401:
        return AuthError(f"Runway refused the API key ({said}). Check {SECRET_ENV} (or the "
                         "api_secret option): a key from the Runway developer portal.", **where)
    if "enough credits" in said.lower():
        return AccountError(f"Runway says the credit balance is too low ({said}). Buy credits, "
                            "then resume the run.", **where)
    if status == 429 and submitting:
        return AccountError(f"Runway refused a new task ({said}): the daily task limit of this "
                            f"model ({model or '?'}) is reached (a rolling 24 hours). Resume the run "
                            "later; tasks already running finish.", **where)
    if status == 429:
        return RateLimited(f"Runway says requests come too fast ({said})", retry_after=retry_after,
                           **where)
    if status == 404 and not submitting:
        return NotFoundError(f"Runway has no such task ({said}): it was deleted, or cancelled "
                             "(a cancel at Runway: whether it was charged, Runway does not say)",
                             **where)
    if status == 403:
        return RejectedError(f"Runway refused model {model or '?'} for this key ({said}); choose a "
                             "model your organization may use.", **where)
    if status == 408 or status == 503:  # never reached Runway's work / load shed before creation
        return TransientError(f"Runway is busy ({said})", retry_after=retry_after,
                              maybe_accepted=False, **where)
    if status >= 500 or status < 400:
        return TransientError(f"Runway server trouble ({said})" + (
            "; the task may have been created and billed" if submitting else ""),
            retry_after=retry_after, maybe_accepted=submitting, **where)
    return RejectedError(f"Runway rejected the request: {said}", **where)


def transport_error(exc: httpx.TransportError, method: str, path: str,
                    submitting: bool) -> TransientError:
    """A request that got no answer: transient; a create may have arrived unless it was unsent."""
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout |
                        httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError)
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = str(exc) or type(exc).__name__
    return TransientError(
        f"Runway {method} {path} {what}: {detail}"
        + ("" if unsent or not submitting else " (the task may have been created and billed)"),
        maybe_accepted=submitting and not unsent,
    )
