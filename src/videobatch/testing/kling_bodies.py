"""What the Kling test server accepts in a create body, on both of Kling's API designs: the model
tables (the server's own, from Kling's documentation in docs/providers/kling.md, not from the
client's catalogue, so a misread catalogue shows up as a refusal) and the checks.

Pure functions: a body Kling would refuse raises ``Refusal`` (business code, message naming the
field as Kling does, a reason for the counters); ``kling_sim.Account`` turns it into the answer.

* ``/v1`` (``check_legacy``): flat body, ``model_name`` (a body without it asks for Kling's
  documented default ``kling-v1``, retired), ``duration`` a string, ``mode``, ``image`` /
  ``image_tail`` for image2video.
* the newer design (``check_newer``, §4, §7b): the model in the path, ``prompt`` or ``contents``
  (a ``first_frame`` required on image-to-video, a last frame alone is not allowed),
  ``settings`` (``duration`` an integer, ``resolution`` per model, ``audio`` native/off — native
  only at 1080p on kling-2.6 —, ``multi_shot``), ``options``; unknown keys are refused too, so a
  client mixing the two designs' fields is caught.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

__all__ = ["MODELS", "NEWER_MODELS", "RATIOS", "Refusal", "check_legacy", "check_newer", "image_ok"]

RATIOS = ("16:9", "9:16", "1:1")
MODES = ("std", "pro")
DURATIONS = ("5", "10")
# model_name -> durations (strings)
MODELS: dict[str, tuple[str, ...]] = {
    "kling-v3": tuple(str(n) for n in range(3, 16)),
    "kling-v2-6": DURATIONS,
    "kling-v2-5-turbo": DURATIONS,
}
# The newer design: path model -> (durations in whole seconds, resolutions).
NEWER_MODELS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "kling-3.0": (tuple(range(3, 16)), ("720p", "1080p", "4k")),
    "kling-3.0-turbo": (tuple(range(3, 16)), ("720p", "1080p")),
    "kling-2.6": ((5, 10), ("720p", "1080p")),
}
NEWER_ENDPOINTS = ("text-to-video", "image-to-video")
NEWER_MAX_TEXT = {"kling-3.0": 3072, "kling-3.0-turbo": 3072}  # others 2,500
MAX_TEXT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024


class Refusal(Exception):
    """A create Kling would refuse: its business code, its words, and a reason for the counters."""

    def __init__(self, code: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def _bad(name: str, why: str) -> Refusal:
    return Refusal(1201, f"Invalid parameters: {name} {why}")


def check_legacy(kind: str, body: Any, retired: tuple[str, ...]) -> None:
    """``POST /v1/videos/{kind}``: raise ``Refusal`` for a body Kling would refuse."""
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    model = body.get("model_name", "kling-v1")
    if model in retired:
        raise Refusal(1203, f"model {model} does not exist", "model_gone")
    if model not in MODELS:
        raise _bad("model_name", f"{model!r} is not one of {', '.join(MODELS)}")
    for name in ("prompt", "negative_prompt"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise _bad(name, "must be a string of at most 2500 characters")
    if kind == "text2video" and not body.get("prompt"):
        raise _bad("prompt", "is required")
    if body.get("duration", "5") not in MODELS[model]:
        raise _bad("duration", f"must be one of the strings {', '.join(MODELS[model])} for {model}")
    if body.get("mode", "std") not in MODES:
        raise _bad("mode", f"must be one of {MODES}")
    if body.get("aspect_ratio", "16:9") not in RATIOS:
        raise _bad("aspect_ratio", f"must be one of {RATIOS}")
    cfg = body.get("cfg_scale")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, int | float)
                            or not 0 <= cfg <= 1):
        raise _bad("cfg_scale", "must be a number from 0 to 1")
    camera = body.get("camera_control")
    if camera is not None and not (isinstance(camera, dict) and "type" in camera):
        raise _bad("camera_control", "must be an object with a type")
    ext = body.get("external_task_id")
    if ext is not None and (not isinstance(ext, str) or not ext):
        raise _bad("external_task_id", "must be a non-empty string")
    if kind == "image2video":
        if not (body.get("image") or body.get("image_tail")):
            raise _bad("image", "or image_tail is required")
        for name in ("image", "image_tail"):
            value = body.get(name)
            if value is not None and not image_ok(value):
                raise _bad(name, "must be an http(s) URL or base64 (no data: prefix), ≤ 10 MB")


def check_newer(endpoint: str, model: str, body: Any, retired: tuple[str, ...]) -> None:
    """``POST /{endpoint}/{model}``: raise ``Refusal`` for a body Kling would refuse."""
    if model in retired or model not in NEWER_MODELS or endpoint not in NEWER_ENDPOINTS:
        raise Refusal(1203, f"model {model} does not exist", "model_gone")
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    durations, resolutions = NEWER_MODELS[model]
    image = endpoint == "image-to-video"
    allowed = {"contents", "settings", "options"} | ({"prompt"} if not image else set())
    if set(body) - allowed:
        raise _bad(sorted(set(body) - allowed)[0], f"is not a field of {endpoint}/{model}")
    limit = NEWER_MAX_TEXT.get(model, MAX_TEXT)
    prompt = body.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > limit):
        raise _bad("prompt", f"must be a string of at most {limit} characters")
    contents = body.get("contents", [])
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        raise _bad("contents", "must be an array of objects")
    types = [c.get("type") for c in contents]
    if set(types) - {"prompt", "first_frame", "last_frame", "element"}:
        raise _bad("contents.type", "must be prompt, first_frame, last_frame or element")
    for item in contents:
        if item.get("type") in ("first_frame", "last_frame") and not image_ok(item.get("url")):
            raise _bad("contents.url", "must be an http(s) URL or base64 (no data: prefix)")
    if image and "first_frame" not in types:
        raise _bad("contents", "needs a first_frame (a last_frame alone is not allowed)")
    if not image and not prompt:
        raise _bad("prompt", "is required")
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        raise _bad("settings", "must be an object")
    known = {"resolution", "aspect_ratio", "duration", "audio", "multi_shot"}
    if set(settings) - known:
        raise _bad(f"settings.{sorted(set(settings) - known)[0]}", "is not a setting")
    duration = settings.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration not in durations:
        raise _bad("settings.duration", f"must be an integer among {durations} for {model}")
    resolution = settings.get("resolution", "720p")
    if resolution not in resolutions:
        raise _bad("settings.resolution", f"must be one of {resolutions} for {model}")
    if image and "aspect_ratio" in settings:
        raise _bad("settings.aspect_ratio", "follows the image on image-to-video")
    if settings.get("aspect_ratio", "16:9") not in RATIOS:
        raise _bad("settings.aspect_ratio", f"must be one of {RATIOS}")
    audio = settings.get("audio", "off")
    if audio not in ("native", "off"):
        raise _bad("settings.audio", "must be native or off")
    if model == "kling-2.6" and audio == "native" and resolution != "1080p":
        raise _bad("settings.audio", "native needs resolution 1080p on kling-2.6")
    if not isinstance(settings.get("multi_shot", False), bool):
        raise _bad("settings.multi_shot", "must be true or false")
    options = body.get("options", {})
    if not isinstance(options, dict) or set(options) - {"callback_url", "external_task_id",
                                                          "watermark_info"}:
        raise _bad("options", "holds only callback_url, external_task_id, watermark_info")
    ext = options.get("external_task_id")
    if ext is not None and not isinstance(ext, str):
        raise _bad("options.external_task_id", "must be a string")


def image_ok(value: Any) -> bool:
    """An http(s) URL, or base64 without a ``data:`` prefix of at most 10 MB."""
    if not isinstance(value, str) or not value:
        return False
    if value.startswith(("http://", "https://")):
        return True
    if value.startswith("data:"):
        return False
    try:
        return len(base64.b64decode(value, validate=True)) <= MAX_IMAGE_BYTES
    except (binascii.Error, ValueError):
        return False
