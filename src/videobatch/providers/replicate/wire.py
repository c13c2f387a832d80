"""Replicate's wire format: the prediction's ``input`` written, and answers read (predictions, errors).

One job: translate between videobatch's vocabulary (``VideoRequest``, ``TaskStatus``, the
``videobatch.errors`` classes) and Replicate's JSON (``docs/providers/replicate.md``). It sends
nothing; ``client.py`` does.

* A model is ``owner/name`` (an official model: ``POST /v1/models/{owner}/{name}/predictions`` with
  ``{"input": …}``) or ``owner/name:<version>`` (``POST /v1/predictions`` with ``{"version": …,
  "input": …}``). Every model names its inputs its own way (``start_image``, ``first_frame_image``,
  ``last_frame``, ``seconds``, ...): ``INPUTS`` maps the neutral fields onto them per model; a model
  it does not know (one a user added to the catalogue) gets ``Inputs()``'s common names. Options
  go in under their own names (they are named after the model inputs). Every value the catalogue
  fills in is sent, so the bill never depends on a default on Replicate's side.
* Images go as ``http(s)`` URLs or ``data:`` URLs of at most 256 KB (a local file that small is
  sent as one); anything else is refused before paying.
* Predictions: ``status`` ``starting`` (queued or booting), ``processing``, ``succeeded``,
  ``failed``, ``canceled``, ``aborted`` (the last three are terminal failures); ``output`` is a URL
  string or a list of them; input, output and the files are deleted an hour after an API
  prediction (``data_removed``).
* Errors are RFC 7807-like bodies (``title``/``detail``/``status``, any of them missing; the 429
  body has only ``detail``); the text is kept when the body is not JSON.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ..._retry import parse_retry_after
from ...errors import (
    AccountError,
    AuthError,
    NotFoundError,
    Problem,
    ProviderError,
    RateLimited,
    RejectedError,
    TransientError,
)
from ...request import VideoRequest
from ..base import Resolved, TaskState, TaskStatus, Video
from .options import ReplicateOptions

__all__ = ["DATA_URL_LIMIT", "INPUTS", "RETENTION", "TOKEN_ENV", "Inputs", "body_problems", "create_call",
           "map_error", "parse_prediction", "parse_time", "prediction_input", "too_fast",
           "transport_error", "wanted_input"]

TOKEN_ENV = "REPLICATE_API_TOKEN"  # noqa: S105 (the variable's name, not a token)
DATA_URL_LIMIT = 256 * 1024  # bytes of a file sent inline as a data: URL
RETENTION = 3600  # seconds: an API prediction's input, output and files are deleted after an hour
_STATES = {"starting": TaskState.QUEUED, "processing": TaskState.RUNNING,
           "succeeded": TaskState.SUCCEEDED, "failed": TaskState.FAILED,
           "canceled": TaskState.FAILED, "aborted": TaskState.FAILED}
_PROMPT_OPTIONAL = {"wan-video/wan-2.5-i2v"}  # the doc says every other video model requires one
_MAX_PROMPT = {"kwaivgi/kling-v3-video": 2500}
_RESETS_IN = re.compile(r"~\s*(\d+(?:\.\d+)?)\s*s")


@dataclass(frozen=True)
class Inputs:
    """Where one model takes the neutral fields (None: it does not take that field)."""

    image: str | None = "image"
    end_image: str | None = "end_image"
    duration: str = "duration"
    aspect_ratio: str | None = "aspect_ratio"
    resolution: str | None = "resolution"
    audio: str | None = "generate_audio"
    negative_prompt: str | None = "negative_prompt"
    seed: str | None = "seed"
    end_needs_image: bool = True  # an end image only with a start image
    ratios: Mapping[str, str] = field(default_factory=dict)  # neutral aspect ratio -> its value


_KLING = Inputs(image="start_image", end_image=None, resolution=None, seed=None)
_VEO = Inputs(end_image="last_frame")
_SORA = Inputs(image="input_reference", end_image=None, duration="seconds", audio=None, seed=None,
               negative_prompt=None, ratios={"9:16": "portrait", "16:9": "landscape"})
_SEEDANCE_2 = Inputs(end_image="last_frame_image", negative_prompt=None)
_LUMA = Inputs(image="start_image", end_image="end_image", resolution=None, audio=None, seed=None,
               negative_prompt=None, end_needs_image=False)
INPUTS: dict[str, Inputs] = {
    "kwaivgi/kling-v3-video": Inputs(image="start_image", end_image="end_image", resolution=None, seed=None),
    "kwaivgi/kling-o1": Inputs(image="start_image", end_image="end_image", resolution=None, audio=None,
                               seed=None, negative_prompt=None),
    "kwaivgi/kling-v2.6": _KLING,
    "kwaivgi/kling-v2.5-turbo-pro": Inputs(image="start_image", end_image=None, resolution=None, seed=None,
                                           audio=None),
    "kwaivgi/kling-v2.0": Inputs(image="start_image", end_image=None, resolution=None, seed=None, audio=None,
                                 negative_prompt=None),
    "google/veo-3.1": _VEO,
    "google/veo-3.1-fast": _VEO,
    "openai/sora-2": _SORA,
    "openai/sora-2-pro": _SORA,
    "bytedance/seedance-2.0": _SEEDANCE_2,
    "bytedance/seedance-2.0-fast": _SEEDANCE_2,
    "bytedance/seedance-1.5-pro": Inputs(end_image=None, aspect_ratio=None, negative_prompt=None, seed=None),
    "bytedance/seedance-1-pro": Inputs(end_image="last_frame_image", audio=None, negative_prompt=None),
    "minimax/hailuo-02": Inputs(image="first_frame_image", end_image="last_frame_image", aspect_ratio=None,
                                audio=None, negative_prompt=None, seed=None),
    "wan-video/wan-2.5-t2v": Inputs(image=None, end_image=None, aspect_ratio=None, resolution=None, audio=None),
    "wan-video/wan-2.5-i2v": Inputs(end_image=None, aspect_ratio=None, audio=None),
    "luma/ray-2-720p": _LUMA,
    "luma/ray-flash-2-720p": _LUMA,
    "pixverse/pixverse-v5": Inputs(end_image="last_frame_image", resolution="quality", audio=None),
}


def inputs_of(model: str) -> Inputs:
    return INPUTS.get(model.partition(":")[0], Inputs())


def create_call(model: str) -> tuple[str, dict[str, Any]]:
    """The path a prediction of ``model`` is created at, and the body's fields besides ``input``."""
    name, _, version = model.partition(":")
    if version:
        return "/predictions", {"version": model}
    owner, _, short = name.partition("/")
    return f"/models/{quote(owner, safe='')}/{quote(short, safe='')}/predictions", {}


def prediction_input(request: VideoRequest, resolved: Resolved) -> dict[str, Any]:
    """The ``input`` object of ``request`` (``resolved``: its model's defaults filled in)."""
    values = resolved.values
    names = inputs_of(str(resolved.model or ""))
    out: dict[str, Any] = {"prompt": request.prompt} if request.prompt else {}
    for neutral in ("negative_prompt", "seed", "resolution", "aspect_ratio"):
        name, value = getattr(names, neutral), values.get(neutral)
        if name and value not in (None, ""):
            out[name] = names.ratios.get(value, value) if neutral == "aspect_ratio" else value
    if values.get("duration") is not None:
        out[names.duration] = int(values["duration"])
    if names.audio and values.get("audio") is not None:
        out[names.audio] = bool(values["audio"])
    for neutral in ("image", "end_image"):
        name, value = getattr(names, neutral), getattr(request, neutral)
        if value:
            out[name or neutral] = image_value(neutral, value)
    options = resolved.options if isinstance(resolved.options, ReplicateOptions) else None
    for name in ReplicateOptions.model_fields:
        value = values.get(name, getattr(options, name, None) if options is not None else None)
        if value is not None:
            out[name] = value
    return out


def wanted_input(request: VideoRequest, resolved: Resolved) -> dict[str, Any] | None:
    """What a listed prediction's echoed ``input`` must hold to be this request's, or None when it
    cannot be written (an image that cannot be read any more)."""
    try:
        return prediction_input(request, resolved)
    except RejectedError:
        return None


def image_value(column: str, value: str) -> str:
    """An image as Replicate takes it: a URL as it is, a small local file as a data: URL."""
    if value.startswith(("http://", "https://", "data:")):
        if value.startswith("data:") and len(value) * 3 // 4 > DATA_URL_LIMIT + 1024:
            raise RejectedError(f"{column} is a data: URL over {DATA_URL_LIMIT // 1024} KB; give an https URL")
        return value
    path = Path(value).expanduser()
    try:
        data = path.read_bytes() if path.stat().st_size <= DATA_URL_LIMIT else None
    except OSError:
        raise RejectedError(f"{column} {value!r} is not a URL nor a readable file") from None
    if data is None:
        raise RejectedError(f"{column} file {value!r} is over {DATA_URL_LIMIT // 1024} KB: Replicate "
                            "takes larger files only as https URLs")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def body_problems(requests: Sequence[VideoRequest], resolved: Sequence[Resolved]) -> list[Problem]:
    """What Replicate would refuse in these rows (row numbers 1-based), found before paying.
    ``resolved``: each row with its model's defaults filled in."""
    problems: list[Problem] = []
    for row, (req, sent) in enumerate(zip(requests, resolved, strict=True), start=1):
        model, values = sent.model, sent.values
        names = inputs_of(model or "")
        if not req.prompt and model not in _PROMPT_OPTIONAL:
            problems.append(Problem(row, "prompt", f"{model} needs a prompt, even with an image",
                                    allowed="any non-empty text"))
        if model in _MAX_PROMPT and len(req.prompt) > _MAX_PROMPT[model]:
            problems.append(Problem(row, "prompt", f"prompt is {len(req.prompt)} characters long, {model} "
                                    f"takes at most {_MAX_PROMPT[model]}",
                                    allowed=f"at most {_MAX_PROMPT[model]} characters"))
        for column in ("image", "end_image"):
            value = getattr(req, column)
            try:
                if value:
                    image_value(column, value)
            except RejectedError as exc:
                problems.append(Problem(row, column, exc.message,
                                        allowed=f"an https URL, or a file or data: URL of at most "
                                                f"{DATA_URL_LIMIT // 1024} KB"))
        for column in ("negative_prompt", "seed", "resolution", "aspect_ratio", "audio", "image", "end_image"):
            given = getattr(req, column)
            if given not in (None, "", False) and getattr(names, column) is None:
                problems.append(Problem(row, column, f"{model} takes no {column.replace('_', ' ')} (it would "
                                        "be dropped)", allowed=f"leave {column} empty for this model"))
        if req.end_image and not req.image and names.end_needs_image:
            problems.append(Problem(row, "end_image", f"{model} takes an end image only with a start "
                                    "image", allowed="an image column too, or no end_image"))
        if model == "minimax/hailuo-02" and values.get("duration") == 10 and values.get("resolution") != "768p":
            problems.append(Problem(row, "duration", "minimax/hailuo-02 makes 10 s videos only at 768p",
                                    allowed="resolution 768p with 10 s, or 6 s"))
        if model == "pixverse/pixverse-v5" and values.get("resolution") == "1080p" and values.get("duration") != 8:
            problems.append(Problem(row, "resolution", "pixverse/pixverse-v5 makes 1080p only at 8 s",
                                    allowed="duration 8 with 1080p, or a lower resolution"))
    return problems


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time (``2023-11-27T13:35:45.99397566Z``: more than 6 decimals occur) as epoch."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = re.match(r"\d*", rest)
        frac = digits.group(0) if digits else ""
        text = f"{head}.{(frac + '000000')[:6]}{rest[len(frac):]}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def parse_prediction(data: Any, *, submitting: bool = False) -> TaskStatus:
    """A prediction object as a ``TaskStatus``. Unreadable: TransientError (a create may still have
    made the prediction, so ``maybe_accepted`` when ``submitting``)."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise TransientError("Replicate answered without a readable prediction",
                             maybe_accepted=submitting)
    raw = str(data.get("status") or "starting")
    state = _STATES.get(raw, TaskState.RUNNING)
    output = data.get("output")
    urls = [output] if isinstance(output, str) else list(output) if isinstance(output, list) else []
    videos = tuple(Video(url=u) for u in urls if isinstance(u, str) and u.startswith(("http://", "https://")))
    message = None
    if state is TaskState.FAILED:
        said = str(data.get("error") or "").strip()
        message = {"canceled": f"the prediction was canceled{': ' + said if said else ''}",
                   "aborted": "the prediction was aborted: its deadline passed before it started "
                              "(not charged)"}.get(raw, said or "Replicate reports the prediction failed")
    elif state is TaskState.SUCCEEDED and not videos:
        state = TaskState.FAILED
        message = ("the prediction succeeded but its output was deleted (Replicate keeps an API "
                   "prediction's output for one hour)" if data.get("data_removed")
                   else "the prediction succeeded without a video URL")
    created = parse_time(data.get("created_at"))
    return TaskStatus(
        task_id=data["id"], state=state, videos=videos, message=message, created_at=created,
        finished_at=parse_time(data.get("completed_at")) if state.done else None,
        expires_at=created + RETENTION if (created is not None and videos) else None)


def _said(response: httpx.Response) -> tuple[str, Any]:
    """The error body's words (title, detail) and its ``type`` (our provider code)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[k]).strip() for k in ("title", "detail") if body.get(k)]
        if parts:
            return ": ".join(parts), body.get("type")
    snippet = " ".join(response.text[:160].split())
    return f"HTTP {response.status_code}" + (f", {snippet!r}" if snippet else ""), None


def _wait(response: httpx.Response, said: str, now: float | None = None) -> float | None:
    wait = parse_retry_after(response.headers.get("Retry-After"), now=now)
    if wait is None and (found := _RESETS_IN.search(said)):
        wait = float(found.group(1))  # "Your rate limit resets in ~30s."
    return wait


def too_fast(response: httpx.Response) -> float | None:
    """For the paced transport: seconds every request should wait after this answer (429 only):
    ``Retry-After``, else the ``~Ns`` of the body, else one second."""
    if response.status_code != 429:
        return None
    wait = _wait(response, _said(response)[0])
    return 1.0 if wait is None else wait


def map_error(response: httpx.Response, *, submitting: bool, model: str | None = None,
              now: float | None = None) -> ProviderError:
    """The ``videobatch.errors`` class an error answer belongs to, with Replicate's own words."""
    status = response.status_code
    said, code = _said(response)
    where: dict[str, Any] = {"provider_code": code, "status_code": status}
    if status == 401:
        return AuthError(f"Replicate refused the API token ({said}). Check {TOKEN_ENV} (or the "
                         "api_token option): it must be a token from replicate.com/account/api-tokens.",
                         **where)
    if status in (402, 403):
        return AccountError(f"Replicate account cannot run this ({said}): check its credit, billing "
                            "and permissions, then resume the run.", **where)
    if status == 429:
        return RateLimited(f"Replicate says requests come too fast ({said})",
                           retry_after=_wait(response, said, now), **where)
    if status == 404:
        if submitting:
            return RejectedError(f"Replicate has no model {model or '?'} ({said}); choose one it "
                                 "offers (replicate.com/collections/text-to-video).", **where)
        return NotFoundError(f"Replicate has no such prediction ({said})", **where)
    if status >= 500 or status < 400:
        return TransientError(f"Replicate server trouble ({said})", retry_after=_wait(response, said, now),
                              maybe_accepted=submitting, **where)
    return RejectedError(f"Replicate refused the request: {said}", **where)


def transport_error(exc: httpx.TransportError, method: str, path: str, submitting: bool) -> TransientError:
    """A request that got no answer: transient; a create may have arrived unless it was unsent."""
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout |
                        httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError)
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = str(exc) or type(exc).__name__
    return TransientError(f"Replicate {method} {path} {what}: {detail}"
                          + ("" if unsent else " (the request may have arrived)"),
                          maybe_accepted=submitting and not unsent)
