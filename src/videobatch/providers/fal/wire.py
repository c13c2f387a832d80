"""fal's wire format: model input bodies written, queue answers read, errors mapped, task ids kept.

One job: translate between videobatch's vocabulary (``VideoRequest``, ``TaskStatus``, the
``videobatch.errors`` classes) and fal's JSON. It sends nothing; ``client.py`` does. The contract is
``docs/providers/fal.md``:

* the submit body is the bare model input; its field names and value types differ per endpoint
  (``Shape``): the start image is ``image_url`` or ``start_image_url``, the end image
  ``end_image_url`` or ``tail_image_url``, the duration a string (``"5"``), a string with a unit
  (``"8s"``) or an integer. An endpoint this table does not know (one a user added to the catalogue)
  gets the common spelling: ``image_url``, ``end_image_url``, duration as a string.
* status bodies say ``IN_QUEUE`` / ``IN_PROGRESS`` / ``COMPLETED``; a failure is ``COMPLETED`` with
  ``error`` and ``error_type``; the result (``response_url``) passes the model's status code and
  body through (``{"video": {"url", ...}}`` on success).
* two error shapes: model errors ``{"detail": [{"loc", "msg", "type"}]}`` (or a plain string), and
  request errors ``{"detail": "...", "error_type": "..."}`` (+ ``X-Fal-Error-Type``).
* the task id videobatch stores is the submit answer's URLs, losslessly: the ``response_url`` when
  the status and cancel URLs are it plus ``/status`` and ``/cancel`` (checked, not assumed), else a
  small JSON object with the request id and the three URLs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    SlotsBusy,
    TransientError,
)
from ..base import Resolved, TaskState, TaskStatus, Video
from .options import FalOptions

__all__ = ["KEY_ENV", "SHAPES", "URL_TTL", "Shape", "TaskRef", "error_of", "map_error", "owner_app",
           "request_body", "shape_of", "task_status", "too_fast", "transport_error"]

KEY_ENV = "FAL_KEY"
URL_TTL = 7 * 24 * 3600  # fal's FAQ: output files stay "at least 7 days" by default
_POLICY = "content_policy_violation"
_LOCKED = ("balance", "locked", "billing", "credit", "payment")


@dataclass(frozen=True)
class Shape:
    """How one endpoint spells the shared fields (None: it does not take the field)."""

    image: str = "image_url"
    end_image: str | None = "end_image_url"
    duration: str | None = "str"  # "str" ("5"), "s" ("8s"), "int" (5), None (not sent)
    aspect_ratio: bool = True


_INT = Shape(duration="int")
_VEO = Shape(duration="s")
SHAPES: dict[str, Shape] = {
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": Shape(end_image="tail_image_url", aspect_ratio=False),
    "fal-ai/kling-video/v2.5-turbo/standard/image-to-video": Shape(end_image=None, aspect_ratio=False),
    "fal-ai/kling-video/v2.6/pro/image-to-video": Shape(image="start_image_url", aspect_ratio=False),
    "fal-ai/kling-video/v3/pro/image-to-video": Shape(image="start_image_url", aspect_ratio=False),
    "fal-ai/kling-video/v3/standard/image-to-video": Shape(image="start_image_url", aspect_ratio=False),
    "fal-ai/veo3.1": _VEO,
    "fal-ai/veo3.1/image-to-video": _VEO,
    "fal-ai/veo3.1/fast": _VEO,
    "fal-ai/wan/v2.7/text-to-video": _INT,
    "fal-ai/wan/v2.7/image-to-video": Shape(duration="int", aspect_ratio=False),
    "fal-ai/minimax/hailuo-2.3/standard/text-to-video": Shape(aspect_ratio=False),
    "fal-ai/minimax/hailuo-2.3/standard/image-to-video": Shape(end_image=None, aspect_ratio=False),
    "fal-ai/ltx-2.3/text-to-video": _INT,
    "fal-ai/ltx-2.3/image-to-video": _INT,
}


def shape_of(model: str | None) -> Shape:
    return SHAPES.get(model or "", Shape())


def request_body(resolved: Resolved) -> dict[str, Any]:
    """The model input JSON for one request (``resolved``: its values with the model's defaults)."""
    values = resolved.values
    shape = shape_of(resolved.model)
    body: dict[str, Any] = {}
    if values.get("prompt"):
        body["prompt"] = values["prompt"]
    if values.get("negative_prompt"):
        body["negative_prompt"] = values["negative_prompt"]
    duration = values.get("duration")
    if duration is not None and shape.duration is not None:
        body["duration"] = {"str": str(duration), "s": f"{duration}s", "int": int(duration)}[shape.duration]
    if values.get("aspect_ratio") and shape.aspect_ratio:
        body["aspect_ratio"] = values["aspect_ratio"]
    for name in ("resolution", "seed"):
        if values.get(name) is not None:
            body[name] = values[name]
    if values.get("audio") is not None:
        body["generate_audio"] = bool(values["audio"])
    for name in FalOptions.model_fields:
        if values.get(name) is not None:
            body[name] = values[name]
    if values.get("image"):  # by URL (or a data: URI): fal fetches it
        body[shape.image] = values["image"]
    if values.get("end_image") and shape.end_image:
        body[shape.end_image] = values["end_image"]
    return body


# ------------------------------------------------------------------ task ids


@dataclass(frozen=True)
class TaskRef:
    """One fal request: its id and the three URLs its submit answer gave."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str

    def encode(self) -> str:
        base = self.response_url
        if (self.status_url == f"{base}/status" and self.cancel_url == f"{base}/cancel"
                and base.rstrip("/").rsplit("/", 1)[-1] == self.request_id):
            return base
        return json.dumps({"request_id": self.request_id, "status_url": self.status_url,
                           "response_url": self.response_url, "cancel_url": self.cancel_url},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, task_id: str) -> TaskRef:
        text = task_id.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
                return cls(str(data["request_id"]), str(data["status_url"]),
                           str(data["response_url"]), str(data["cancel_url"]))
            except (ValueError, KeyError, TypeError):
                pass
        elif text.startswith(("http://", "https://")) and "/requests/" in text:
            return cls(text.rstrip("/").rsplit("/", 1)[-1], f"{text}/status", text, f"{text}/cancel")
        raise NotFoundError(f"{task_id!r} is not a fal task id videobatch wrote")

    @classmethod
    def from_answer(cls, data: Any) -> TaskRef:
        """The submit answer's id and URLs; an answer without them cannot be followed."""
        if not isinstance(data, dict) or not data.get("request_id") or not data.get("response_url"):
            raise ValueError("no request_id / response_url")
        response = str(data["response_url"])
        return cls(str(data["request_id"]), str(data.get("status_url") or f"{response}/status"),
                   response, str(data.get("cancel_url") or f"{response}/cancel"))

    @classmethod
    def from_endpoint(cls, queue_url: str, endpoint_id: str, request_id: str) -> TaskRef:
        """Only for a request found by listing, which gives no URLs: the documented rule
        (owner/app, plus one segment for ``workflows/`` and ``comfy/``)."""
        base = f"{queue_url}/{owner_app(endpoint_id)}/requests/{request_id}"
        return cls(request_id, f"{base}/status", base, f"{base}/cancel")


def owner_app(endpoint_id: str) -> str:
    parts = [p for p in endpoint_id.split("/") if p]
    keep = 3 if parts and parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


# ------------------------------------------------------------------ answers


def task_status(ref: TaskRef, data: Any, result: tuple[int, Any] | None, now: float) -> TaskStatus:
    """A status body (and, once ``COMPLETED``, the result's status code and body) as a TaskStatus."""
    raw = str(data.get("status") or "") if isinstance(data, dict) else ""
    task_id = ref.encode()
    if raw == "IN_QUEUE":
        return TaskStatus(task_id, TaskState.QUEUED)
    if raw != "COMPLETED":  # IN_PROGRESS, or a spelling fal never documented: keep waiting
        return TaskStatus(task_id, TaskState.RUNNING)
    assert isinstance(data, dict)
    error, error_type = data.get("error"), data.get("error_type")
    code, body = result if result is not None else (None, None)
    if not error and not error_type and code is not None and 200 <= code < 300:
        video = body.get("video") if isinstance(body, dict) else None
        url = video.get("url") if isinstance(video, dict) else None
        videos = (Video(url=str(url), id=ref.request_id),) if url else ()
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=videos, finished_at=now,
                          expires_at=now + URL_TTL if videos else None)
    said = error_of(body) if body is not None else ""
    parts = [str(error) if error else "", f"error_type {error_type}" if error_type else ""]
    if said:
        parts.append(said)
    if code is not None and not error:
        parts.insert(0, f"HTTP {code}")
    message = "; ".join(p for p in parts if p) or "fal reports the request failed"
    if _POLICY in message:
        message = f"fal's content policy refused it: {message}"
    return TaskStatus(task_id, TaskState.FAILED, message=message, finished_at=now)


def error_of(body: Any) -> str:
    """An error body in a few words: ``type: msg (at loc)`` for model errors, the text otherwise."""
    if not isinstance(body, dict):
        return ""
    detail = body.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = ".".join(str(p) for p in first.get("loc") or [] if p != "body")
        text = f"{first.get('type') or 'error'}: {first.get('msg') or ''}".strip()
        categories = first.get("categories")
        if categories:
            text += f" [{', '.join(map(str, categories))}]"
        return text + (f" (at {loc})" if loc else "")
    if isinstance(detail, str):
        kind = body.get("error_type")
        return f"{kind}: {detail}" if kind else detail
    return ""


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _type_of(response: httpx.Response, body: Any) -> str | None:
    kind = response.headers.get("X-Fal-Error-Type")
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            kind = kind or detail[0].get("type")
        kind = kind or body.get("error_type")
    return str(kind) if kind else None


def too_fast(response: httpx.Response) -> float | None:
    """For the paced transport: a 429 about the concurrency limit must not slow the request rate;
    any other 429 does (``Retry-After`` if given, else one second)."""
    if response.status_code != 429 or _type_of(response, _json(response)) == "concurrent_requests_limit":
        return None
    wait = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if wait is None else wait


def map_error(response: httpx.Response, *, submitting: bool, what: str, now: float) -> ProviderError:
    """The ``videobatch.errors`` class an error answer belongs to, with fal's own words."""
    status = response.status_code
    body = _json(response)
    said = error_of(body)
    if not said:
        snippet = " ".join(response.text[:160].split())
        said = f"HTTP {status}" + (f": {snippet!r}" if snippet else "")
    kind = _type_of(response, body)
    where: dict[str, Any] = {"provider_code": kind, "status_code": status,
                             "request_id": response.headers.get("x-fal-request-id")}
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
    if status == 403 and any(w in said.lower() for w in _LOCKED):
        return AccountError(f"fal's account cannot take requests ({said}): top up the balance, "
                            "then resume the run.", **where)
    if status in (401, 403):
        return AuthError(f"fal refused the key ({said}). Check {KEY_ENV} (or the key option): "
                         "it must be an API key of your fal account.", **where)
    if status == 429 and kind == "concurrent_requests_limit":
        return SlotsBusy(f"fal's concurrency limit is reached ({said})",
                         retry_after=max(1.0, retry_after or 1.0), **where)
    if status == 429:
        return RateLimited(f"fal says requests come too fast ({said})", retry_after=retry_after,
                           **where)
    if status == 404:
        if submitting:
            return RejectedError(f"fal has no endpoint {what} ({said}); check the model id", **where)
        return NotFoundError(f"fal has no such request ({said})", **where)
    if status >= 500 or status in (408, 409) or (body is None and status < 400):
        return TransientError(f"fal server trouble on {what} ({said})", retry_after=retry_after,
                              maybe_accepted=submitting, **where)
    if kind == _POLICY:
        return RejectedError(f"fal's content policy refused it: {said}", **where)
    return RejectedError(f"fal rejected the request: {said}", **where)


def transport_error(exc: httpx.TransportError, method: str, what: str,
                    submitting: bool) -> TransientError:
    """A request that got no answer: transient; a submit may have arrived unless it was unsent."""
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout |
                        httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError)
    how = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = str(exc) or type(exc).__name__
    return TransientError(f"fal {method} {what} {how}: {detail}"
                          + ("" if unsent else " (the request may have arrived)"),
                          maybe_accepted=submitting and not unsent)
