"""Google's wire format for Gemini Omni Flash on the Interactions API: the create body written,
interactions read, ``google.rpc.Status`` errors mapped. It sends nothing; ``client`` does.

The contract is ``docs/providers/google.md`` (section 3.B):

* create ``POST /v1beta/interactions`` with a snake_case body: ``model``, ``input`` (the prompt
  text, or a list of image parts then one text part carrying ``<FIRST_FRAME>`` / ``<LAST_FRAME>``
  tags), ``background: true`` (answer at once, poll), ``store: true`` (needed to poll),
  ``generation_config.video_config.task``, ``response_format {type: video, aspect_ratio,
  resolution, duration: "8s", delivery: "uri"}``, ``webhook_config.user_metadata`` carrying our
  idempotency key (the only place it can go: nothing can look it up, but a webhook event or the
  console shows it), ``labels``.
* interactions: ``{id, status, steps[{type: model_output, content[{type: video, mime_type,
  data | uri}]}], errors[]}``; status ``queued``, ``in_progress``, ``requires_action``,
  ``completed``, ``failed``, ``cancelled``, ``incomplete``, ``budget_exceeded``.
* errors: ``{"error": {"code", "message", "status", "details"}}``; a 429 ``RESOURCE_EXHAUSTED``
  may carry ``google.rpc.RetryInfo {retryDelay: "27s"}`` in ``details`` (read as Retry-After).
"""

from __future__ import annotations

import re
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
from ..base import Resolved, TaskState
from .options import GoogleOptions

__all__ = [
    "API_VERSION",
    "DONE_FAILED",
    "ENV_NAMES",
    "STATES",
    "create_body",
    "error_of",
    "file_id",
    "map_error",
    "retry_delay",
    "too_fast",
    "transport_error",
    "video_part",
]

API_VERSION = "v1beta"
ENV_NAMES = ("GOOGLE_API_KEY", "GEMINI_API_KEY")  # the official SDKs' order: GOOGLE_API_KEY wins
STATES = {
    "queued": TaskState.QUEUED,
    "in_progress": TaskState.RUNNING,
    "completed": TaskState.SUCCEEDED,
}
# Terminal without a result. requires_action waits for a tool result no video job will get.
DONE_FAILED = ("failed", "cancelled", "incomplete", "budget_exceeded", "requires_action")
_FILE_ID = re.compile(r"/files/([A-Za-z0-9_-]+)")
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def create_body(resolved: Resolved, prompt: str, images: list[tuple[str, str, str]], key: str,
                webhook_url: str | None) -> dict[str, Any]:
    """The create body. ``images``: ``(tag, base64, mime_type)`` in order (first frame, last)."""
    values = resolved.values
    options = resolved.options if isinstance(resolved.options, GoogleOptions) else GoogleOptions()
    text = " ".join([*(f"<{tag}>" for tag, _, _ in images), prompt]).strip()
    body: dict[str, Any] = {"model": resolved.model}
    if images:
        body["input"] = [*({"type": "image", "data": data, "mime_type": mime}
                           for _, data, mime in images), {"type": "text", "text": text}]
    else:
        body["input"] = text
    body["background"] = True
    body["store"] = True
    body["generation_config"] = {"video_config": {
        "task": "image_to_video" if images else "text_to_video"}}
    response_format: dict[str, Any] = {"type": "video"}
    for name in ("aspect_ratio", "resolution"):
        if values.get(name):
            response_format[name] = str(values[name])
    if values.get("duration") is not None:
        response_format["duration"] = f"{int(values['duration'])}s"
    response_format["delivery"] = "uri"  # inline is capped at ~4 MB
    body["response_format"] = response_format
    webhook: dict[str, Any] = {"user_metadata": {"videobatch_row": key}}
    if webhook_url:
        webhook["uris"] = [webhook_url]
    body["webhook_config"] = webhook
    if options.labels:
        body["labels"] = dict(options.labels)
    return body


def video_part(interaction: dict[str, Any]) -> dict[str, Any] | None:
    """The first ``video`` content part of the interaction's ``model_output`` steps, or None."""
    for step in interaction.get("steps") or ():
        if not isinstance(step, dict) or step.get("type") != "model_output":
            continue
        for part in step.get("content") or ():
            if isinstance(part, dict) and part.get("type") == "video" and (
                    part.get("data") or part.get("uri")):
                return part
    return None


def error_of(interaction: dict[str, Any]) -> str | None:
    """The interaction's ``errors[]`` in words, or None."""
    said = [str(e.get("message") or e.get("code")) for e in interaction.get("errors") or ()
            if isinstance(e, dict) and (e.get("message") or e.get("code") is not None)]
    return "; ".join(said) or None


def file_id(uri: str) -> str | None:
    """The Files API id in a ``…/files/{id}:download?alt=media`` (or ``files/{id}``) URI."""
    match = _FILE_ID.search("/" + uri.lstrip("/"))
    return match.group(1) if match else None


def _status_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else None


def retry_delay(error: dict[str, Any] | None) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` ``retryDelay`` ("27s", "1.5s") in ``details``."""
    for detail in (error or {}).get("details") or ():
        if isinstance(detail, dict) and detail.get("retryDelay") is not None:
            match = _DELAY.match(str(detail["retryDelay"]))
            if match:
                return float(match.group(1))
    return None


def too_fast(response: httpx.Response) -> float | None:
    """For the paced transport: every 429 is RESOURCE_EXHAUSTED (a rate, quota or concurrency
    limit, which Google does not tell apart reliably): wait its retryDelay, else Retry-After,
    else one second."""
    if response.status_code != 429:
        return None
    wait = retry_delay(_status_body(response))
    if wait is None:
        wait = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if wait is None else wait


def map_error(response: httpx.Response, *, submitting: bool, model: str | None,
              now: float) -> ProviderError:
    """The ``videobatch.errors`` class a google.rpc.Status answer belongs to, in Google's words."""
    status = response.status_code
    error = _status_body(response)
    canonical = str((error or {}).get("status") or "")
    said = str((error or {}).get("message") or "").strip()
    if error is None:
        snippet = " ".join(response.text[:120].split())
        said = f"HTTP {status}, unreadable answer" + (f": {snippet!r}" if snippet else "")
    where: dict[str, Any] = {"provider_code": canonical or None, "status_code": status,
                             "request_id": response.headers.get("x-request-id")}
    reasons = " ".join(str(d.get("reason") or "") for d in (error or {}).get("details") or ()
                       if isinstance(d, dict))
    if status in (401, 403) or canonical in ("UNAUTHENTICATED", "PERMISSION_DENIED") or \
            "API_KEY_INVALID" in reasons or (status == 400 and "api key not valid" in said.lower()):
        return AuthError(f"Google refused the API key ({said}). Set GEMINI_API_KEY (or "
                         "GOOGLE_API_KEY, which wins when both are set) to a Gemini API key of a "
                         "project with billing enabled, or pass api_key=.", **where)
    if status == 429 or canonical == "RESOURCE_EXHAUSTED":
        wait = retry_delay(error)
        if wait is None:
            wait = parse_retry_after(response.headers.get("Retry-After"), now=now)
        return RateLimited(f"Google's quota or rate limit was reached ({said})",
                           retry_after=wait, **where)
    if canonical == "FAILED_PRECONDITION" and any(
            word in said.lower() for word in ("billing", "free tier", "prepay", "credit")):
        return AccountError(f"Google account cannot take this work ({said}): enable billing for "
                            "the API key's project, then resume the run.", **where)
    if status == 404 or canonical == "NOT_FOUND":
        if submitting:
            return RejectedError(f"Google does not serve model {model or '?'} on the Gemini API "
                                 f"({said}); use gemini-omni-1.1-flash or gemini-omni-1.2-flash.",
                                 **where)
        return NotFoundError(f"Google has no such interaction ({said})", **where)
    if status >= 500 or status == 408 or (error is None and status < 400):
        return TransientError(f"Google server trouble ({said})",
                              retry_after=parse_retry_after(response.headers.get("Retry-After"),
                                                            now=now),
                              maybe_accepted=submitting, **where)
    return RejectedError(f"Google rejected the request: {said}", **where)


def transport_error(exc: httpx.TransportError, method: str, path: str,
                    submitting: bool) -> TransientError:
    """A request that got no answer: transient; a create may have arrived unless it was unsent."""
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout |
                        httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError)
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransientError(
        f"Google {method} {path} {what}: {str(exc) or type(exc).__name__}"
        + ("" if unsent else " (the request may have arrived)"),
        maybe_accepted=submitting and not unsent,
    )
