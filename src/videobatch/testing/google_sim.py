"""The simulated Gemini API project behind the Google test server: interactions, generated files,
limits and counters.

No HTTP here: ``google_app`` turns requests into calls on ``Project`` and ``SimError`` into a
``google.rpc.Status`` body. Built from ``docs/providers/google.md`` and the fixture bodies in
``tests/fixtures/providers/google/``, not from the client. Time is the monotonic clock; an
interaction's status is computed when asked (``queued`` for the first ``queue_share`` of its
latency, or until a slot frees in ``queue`` mode, then ``in_progress``, then ``completed`` or
``failed``), so no background work runs. A completed interaction's file is ``PROCESSING`` for
``file_processing`` seconds, then ``ACTIVE``.

Over ``max_parallel`` interactions in flight the project answers 429 ``RESOURCE_EXHAUSTED`` with a
``retryDelay`` (``over_limit="refuse"``, the default: the doc names 429 as Google's answer to any
limit), or accepts and queues the interaction until a slot frees (``over_limit="queue"``). The API
has no listing, so there are no other systems' tasks to show.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ._settings import ServerSettings, one_of

__all__ = ["DELIVERIES", "LIVE_MODELS", "OVER_LIMIT", "RETIRED", "Project", "SimConfig", "SimError", "SimInteraction"]

# model -> allowed duration seconds; 1.2's 3-15 s is unconfirmed on the Gemini API: 3-10 here.
LIVE_MODELS: dict[str, tuple[int, int]] = {"gemini-omni-1.1-flash": (3, 10),
                                           "gemini-omni-1.2-flash": (3, 10)}
RETIRED = ("gemini-omni-flash-preview", "veo-3.1-generate-preview", "veo-3.1-fast-generate-preview",
           "veo-3.1-lite-generate-preview", "veo-3.0-generate-001", "veo-3.0-fast-generate-001",
           "veo-2.0-generate-001")
ASPECTS = ("16:9", "9:16")
RESOLUTIONS = ("360p", "720p", "1080p", "4k")
DELIVERIES = ("inline", "uri")
TASKS = ("text_to_video", "image_to_video", "reference_to_video", "edit", "extend")
FIELDS = {"model", "input", "background", "store", "response_format", "generation_config",
          "previous_interaction_id", "webhook_config", "labels", "response_modalities"}
OVER_LIMIT = ("refuse", "queue")
_DURATION = re.compile(r"^(\d+)s$")


@dataclass
class SimConfig(ServerSettings):
    """Everything the server can be told at start (and most of it at run time)."""

    api_key: str = "test-gemini-key-0123456789abcdef"
    latency: float = 0.5  # seconds from acceptance to the end of an interaction (once started)
    jitter: float = 0.2  # ± fraction of latency, uniform
    queue_share: float = 0.1  # share of the latency spent "queued"
    max_parallel: int = 5  # interactions in flight at once
    over_limit: str = "refuse"  # beyond max_parallel: 429 ("refuse") or wait for a slot ("queue")
    rps: float | None = None  # API requests per second (429 beyond); None: unlimited
    retry_delay: float = 1.0  # the retryDelay (s) of its 429 answers; 0: none given
    get_delivery: str = "inline"  # what GET shows for a uri-delivery job (doc: inline base64)
    file_processing: float = 0.1  # seconds a generated file stays PROCESSING
    slow_seconds: float = 3.0  # how late a "slow" answer comes
    video_seconds: float = 1.0  # length of the MP4 files served
    blocked_marker: str = "[blocked]"  # prompts containing it get 400 (safety)
    fail_marker: str = "[fail]"  # prompts containing it end failed
    seed: int = 0

    def check(self) -> None:
        one_of("over_limit", self.over_limit, OVER_LIMIT)
        one_of("get_delivery", self.get_delivery, DELIVERIES)
        if int(self.max_parallel) < 1:
            raise ValueError("max_parallel must be at least 1")


class SimError(Exception):
    """An error answer: HTTP status, canonical status, message, optional retryDelay."""

    def __init__(self, code: int, status: str, message: str, *, retry_delay: float | None = None,
                 reason: str | None = None) -> None:
        self.code, self.status, self.message = code, status, message
        self.retry_delay = retry_delay
        self.reason = reason or status.lower()
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.code == 429:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                 "violations": [{"quotaMetric": "simulated", "quotaId": "simulated"}]}]
            if self.retry_delay:
                error["details"].append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                         "retryDelay": f"{self.retry_delay:g}s"})
        return {"error": error}


def invalid(message: str, reason: str = "invalid") -> SimError:
    return SimError(400, "INVALID_ARGUMENT", message, reason=reason)


@dataclass
class SimInteraction:
    id: str
    body: dict[str, Any]
    prompt: str
    accepted: float  # monotonic
    started: float  # when it leaves "queued"
    done_at: float
    fails: bool
    fail_message: str = ""
    cancelled_at: float | None = None
    file_id: str = ""

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        if now >= self.done_at:
            return "failed" if self.fails else "completed"
        return "in_progress" if now >= self.started else "queued"

    def in_flight(self, now: float) -> bool:
        return self.cancelled_at is None and now < self.done_at


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    paid_duplicates: int = 0  # accepted interactions with the same inputs as an earlier one
    polls: int = 0
    file_checks: int = 0
    downloads: int = 0  # storage fetches of generated videos
    inline_videos: int = 0  # GET answers that carried the video as base64
    cancels: int = 0
    key_leaks: int = 0  # storage requests that carried the API key (they must not)
    key_in_query: int = 0  # requests that put the API key in the URL (?key=)
    peak_active: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Project:
    """One Gemini API project: its interactions, its limits, and what happened to it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.interactions: dict[str, SimInteraction] = {}
        self.files: dict[str, SimInteraction] = {}
        self.counters = Counters()
        self._contents: set[str] = set()
        self._ids = itertools.count(1)
        self._rng = random.Random(config.seed)
        self._tokens = float("inf")
        self._refilled = time.monotonic()

    def reject(self, error: SimError) -> SimError:
        self.counters.rejected[error.reason] = self.counters.rejected.get(error.reason, 0) + 1
        return error

    def too_many(self, message: str, reason: str) -> SimError:
        delay = self.config.retry_delay or None
        return self.reject(SimError(429, "RESOURCE_EXHAUSTED", message, retry_delay=delay,
                                    reason=reason))

    def take_token(self) -> None:
        """Spend one request of the rate budget (a token bucket, burst = rps), or raise 429."""
        rps = self.config.rps
        if not rps:
            return
        now = time.monotonic()
        self._tokens = min(max(1.0, rps), self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens < 1.0:
            raise self.too_many("You exceeded your current quota, please check your plan and "
                                "billing details.", "rate_limit")
        self._tokens -= 1.0

    def active(self, now: float) -> list[SimInteraction]:
        return [i for i in self.interactions.values() if i.in_flight(now)]

    # -- create ---------------------------------------------------------------------------------

    def validate(self, body: Any) -> tuple[str, str, bool]:
        """Refuse what the Gemini API refuses; returns (model, prompt text, has an image)."""
        if not isinstance(body, dict):
            raise self.reject(invalid("Invalid JSON payload received: expected an object."))
        for name in body:
            if name not in FIELDS:
                raise self.reject(invalid(f'Invalid JSON payload received. Unknown name "{name}": '
                                          "Cannot find field."))
        model = str(body.get("model") or "").removeprefix("models/")
        if not model:
            raise self.reject(invalid("model is required."))
        if model in RETIRED:
            raise self.reject(SimError(404, "NOT_FOUND", f"models/{model} is no longer available.",
                                       reason="model_retired"))
        if model not in LIVE_MODELS:
            raise self.reject(SimError(404, "NOT_FOUND", f"models/{model} is not found for API "
                                       "version v1beta", reason="model_unknown"))
        for name in ("background", "store"):
            if name in body and not isinstance(body[name], bool):
                raise self.reject(invalid(f"{name} must be a boolean."))
        prompt, images = self._input(body.get("input"))
        fmt = body.get("response_format")
        if fmt is not None:
            self._format(fmt, model)
        task = ((body.get("generation_config") or {}).get("video_config") or {}).get("task")
        if task is not None and task not in TASKS:
            raise self.reject(invalid(f"generation_config.video_config.task: invalid value {task!r}."))
        if task == "image_to_video" and not images:
            raise self.reject(invalid("image_to_video needs an image in input."))
        return model, prompt, images > 0

    def _input(self, value: Any) -> tuple[str, int]:
        if isinstance(value, str):
            if not value.strip():
                raise self.reject(invalid("input must not be empty."))
            return value, 0
        if not isinstance(value, list) or not value:
            raise self.reject(invalid("input must be a string or a non-empty list of content."))
        texts, images = [], 0
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image":
                data, uri = part.get("data"), part.get("uri")
                if uri is None and not (isinstance(data, str) and _base64(data)):
                    raise self.reject(invalid("image content needs base64 data or a uri."))
                if data is not None and not str(part.get("mime_type", "")).startswith("image/"):
                    raise self.reject(invalid("image content needs an image mime_type."))
                images += 1
            else:
                raise self.reject(invalid(f"input: unsupported content {kind!r}."))
        return " ".join(texts), images

    def _format(self, fmt: Any, model: str) -> None:
        if not isinstance(fmt, dict) or fmt.get("type") != "video":
            raise self.reject(invalid('response_format.type must be "video".'))
        for name, allowed in (("aspect_ratio", ASPECTS), ("resolution", RESOLUTIONS),
                              ("delivery", DELIVERIES)):
            if name in fmt and fmt[name] not in allowed:
                raise self.reject(invalid(f"response_format.{name}: {fmt[name]!r} is not one of "
                                          f"{', '.join(allowed)}."))
        if "duration" in fmt:
            low, high = LIVE_MODELS[model]
            match = _DURATION.match(str(fmt["duration"])) if isinstance(fmt["duration"], str) else None
            if match is None:
                raise self.reject(invalid(f"response_format.duration: invalid value "
                                          f"{fmt['duration']!r} (a duration like \"8s\")."))
            if not low <= int(match.group(1)) <= high:
                raise self.reject(invalid(f"response_format.duration must be between {low}s and "
                                          f"{high}s for {model}."))

    def create(self, body: dict[str, Any]) -> SimInteraction:
        cfg = self.config
        _model, prompt, _image = self.validate(body)
        if cfg.blocked_marker and cfg.blocked_marker in prompt:
            raise self.reject(invalid("The request was blocked: the prompt violates the usage "
                                      "policies (simulated safety filter).", reason="policy"))
        now = time.monotonic()
        active = self.active(now)
        start = now
        if len(active) >= cfg.max_parallel:
            if cfg.over_limit == "refuse":
                raise self.too_many("Too many concurrent video generation requests (simulated "
                                    "concurrency limit).", "parallel_limit")
            ends = sorted(i.done_at for i in active)
            start = ends[len(active) - cfg.max_parallel]  # the slot that frees first
        latency = max(0.0, cfg.latency * (1 + cfg.jitter * self._rng.uniform(-1, 1)))
        number = next(self._ids)
        interaction = SimInteraction(
            id="v1_" + base64.urlsafe_b64encode(f"sim-interaction-{number:06d}".encode()).decode().rstrip("="),
            body=body, prompt=prompt, accepted=now, started=start + latency * cfg.queue_share,
            done_at=start + latency, fails=bool(cfg.fail_marker and cfg.fail_marker in prompt),
            file_id=f"simfile{number:06d}")
        if interaction.fails:
            interaction.fail_message = "Video generation failed (marked prompt)"
        self.interactions[interaction.id] = interaction
        self.files[interaction.file_id] = interaction
        self.counters.accepted += 1
        self.counters.peak_active = max(self.counters.peak_active, len(active) + 1)
        content = hashlib.sha256(json.dumps({k: v for k, v in body.items()
                                             if k not in ("webhook_config", "labels")},
                                            sort_keys=True).encode()).hexdigest()
        if content in self._contents:
            self.counters.paid_duplicates += 1
        self._contents.add(content)
        return interaction

    # -- queries --------------------------------------------------------------------------------

    def get(self, interaction_id: str) -> SimInteraction:
        found = self.interactions.get(interaction_id)
        if found is None or found.body.get("store") is False:
            raise self.reject(SimError(404, "NOT_FOUND", f"Interaction {interaction_id} not found.",
                                       reason="not_found"))
        return found

    def file_state(self, interaction: SimInteraction, now: float) -> str:
        if interaction.status(now) != "completed":
            return "FAILED" if interaction.status(now) == "failed" else "PROCESSING"
        return "ACTIVE" if now >= interaction.done_at + self.config.file_processing else "PROCESSING"

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        states: dict[str, int] = {}
        for interaction in self.interactions.values():
            state = interaction.status(now)
            states[state] = states.get(state, 0) + 1
        c = self.counters
        return {
            "requests": c.requests, "accepted": c.accepted, "paid_duplicates": c.paid_duplicates,
            "rejected": dict(c.rejected), "polls": c.polls, "file_checks": c.file_checks,
            "downloads": c.downloads, "inline_videos": c.inline_videos, "cancels": c.cancels,
            "key_leaks": c.key_leaks, "key_in_query": c.key_in_query,
            "peak_active": c.peak_active, "current_active": len(self.active(now)),
            "tasks": states, "succeeded": states.get("completed", 0),
            "failed": states.get("failed", 0),
        }


def _base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
