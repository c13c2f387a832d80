"""The simulated Replicate account behind the test server: predictions, their lifecycle, limits and counters.

No HTTP here: ``replicate_app`` turns requests into calls on ``Account`` and ``SimError`` into
Replicate's error bodies. Everything is built from the researched contract
(``docs/providers/replicate.md`` and ``tests/fixtures/providers/replicate``), not from the client:

* Models and their inputs are ``replicate_models``. Unknown input keys are refused, as are unknown
  top-level keys (``additionalProperties: false``), a missing prompt, and an unknown model (404).
* A prediction is ``starting`` while it queues and boots, ``processing`` while it runs, then
  ``succeeded`` (output: one URL string, or a list with ``output_list``), ``failed`` (``error``
  text), ``canceled`` or ``aborted`` (its ``Cancel-After`` deadline passed before it started).
  Replicate documents no concurrency cap: past ``max_running`` running predictions the rest wait in
  ``starting`` (queued, never refused).
* ``retention`` seconds after it was created an API prediction's input and output are deleted
  (``data_removed``), as Replicate does after an hour.
* ``foreign_predictions`` puts other systems' finished predictions on the account (older than the
  run, a minute apart; some from the web, some of the default model), so list pages are not only ours.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._settings import ServerSettings
from .replicate_models import MODELS, NEEDS_IMAGE, fits

__all__ = ["Account", "Prediction", "SimConfig", "SimError", "iso", "parse_time"]

_ID_CHARS = string.ascii_lowercase + "234567"
MODERATION = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float | None:
    """An ISO 8601 date-time query value as epoch seconds (no zone: UTC), None if unreadable."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@dataclass
class SimConfig(ServerSettings):
    """Everything the server can be told at start (and most of it at run time)."""

    token: str = "r8_test_token_0123456789abcdefABCDEF"  # noqa: S105 (a test double's token)
    latency: float = 0.5  # seconds a prediction runs
    jitter: float = 0.2  # ± fraction of latency, uniform
    boot: float = 0.1  # seconds in "starting" before it can run
    max_running: int | None = None  # predictions running at once; the rest queue in "starting"
    rps: float | None = None  # API requests per second (429 beyond); None: unlimited
    retry_after: bool = True  # send Retry-After with a 429 (the doc does not promise it)
    retention: float = 3600.0  # seconds until an API prediction's input and output are deleted
    output_list: bool = False  # output as a list of URLs instead of one string
    slow_seconds: float = 3.0  # how late a "slow" answer comes
    video_seconds: float = 1.0  # length of the MP4 files served
    blocked_marker: str = "[blocked]"  # prompts containing it end failed, flagged (E005)
    refuse_marker: str = "[refuse]"  # prompts containing it are refused at create (422)
    fail_marker: str = "[fail]"  # prompts containing it end failed
    foreign_predictions: int = 0  # other systems' predictions on the account
    page_size: int = 100  # predictions per list page
    list_outage: bool = False  # the list endpoint answers 503 (get and create keep working)
    seed: int = 0


class SimError(Exception):
    """An error answer: HTTP status and the body Replicate sends."""

    def __init__(self, status: int, body: dict[str, Any], *, retry_after: float | None = None,
                 reason: str | None = None) -> None:
        self.status, self.body, self.retry_after = status, body, retry_after
        self.reason = reason or str(status)
        super().__init__(json.dumps(body))


def _invalid(detail: str) -> SimError:
    return SimError(422, {"title": "Input validation failed", "detail": detail, "status": 422},
                    reason="invalid")


def _deadline(text: str) -> float:
    """A Cancel-After value (``30s``, ``5m``, ``1h30m45s`` or bare seconds) in seconds, at least 5."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    elif text and (parts := re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text)) and any(parts.groups()):
        h, m, s = (float(g or 0) for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    else:
        raise SimError(400, {"title": "Invalid Cancel-After header", "detail": f"cannot parse {text!r}",
                             "status": 400}, reason="bad_deadline")
    if seconds < 5:
        raise SimError(400, {"title": "Invalid Cancel-After header", "detail": "minimum is 5s",
                             "status": 400}, reason="bad_deadline")
    return seconds


def _content(model: str, data: Any) -> str:
    """What makes two predictions the same paid work: the model and the input."""
    return hashlib.sha256(json.dumps([model, data], sort_keys=True).encode()).hexdigest()


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: float  # wall clock
    start: float  # wall clock it starts running
    end: float  # wall clock it ends (if not canceled or aborted first)
    error: str | None = None  # set: it ends failed with this
    canceled_at: float | None = None
    deadline: float | None = None
    source: str = "api"
    foreign: bool = False
    cfg_retention: float = 3600.0  # the account's retention and output form when it was made
    cfg_output_list: bool = False

    def status(self, now: float) -> str:
        if self.deadline is not None and self.deadline < min(self.start, now) and self.canceled_at is None:
            return "aborted"
        stop = self.canceled_at if self.canceled_at is not None else (
            self.deadline if self.deadline is not None and self.deadline < self.end else None)
        if stop is not None and stop <= now and stop < self.end:
            return "canceled"
        if now < self.start:
            return "starting"
        if now < self.end:
            return "processing"
        return "failed" if self.error else "succeeded"

    def to_json(self, now: float, base: str) -> dict[str, Any]:
        status = self.status(now)
        removed = self.source == "api" and now >= self.created + self.cfg_retention
        done = status in ("succeeded", "failed", "canceled", "aborted")
        ended = min(x for x in (self.end, self.canceled_at, self.deadline) if x is not None)
        url = f"{base}/files/{self.id}.mp4"
        data: dict[str, Any] = {
            "id": self.id, "model": self.model, "version": self.version,
            "input": {} if removed else self.input, "logs": "",
            "output": None, "error": self.error if status == "failed" else None,
            "status": status, "source": self.source, "data_removed": removed,
            "created_at": iso(self.created),
            "urls": {"get": f"{base}/v1/predictions/{self.id}",
                     "cancel": f"{base}/v1/predictions/{self.id}/cancel",
                     "web": f"https://replicate.com/p/{self.id}"},
        }
        if status != "starting" and status != "aborted" and min(now, ended) >= self.start:
            data["started_at"] = iso(self.start)
        if done:
            data["completed_at"] = iso(ended)
            data["metrics"] = {"predict_time": round(max(0.0, ended - self.start), 3)}
        if status == "succeeded" and not removed:
            data["output"] = [url] if self.cfg_output_list else url
        if self.deadline is not None:
            data["deadline"] = iso(self.deadline)
        return data


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    paid_duplicates: int = 0  # accepted predictions with the model and input of an earlier one
    polls: int = 0
    lists: int = 0
    cancels: int = 0
    peak_active: int = 0  # our predictions not yet ended, at once
    downloads: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Account:
    """One Replicate account: its predictions, its limits, and what happened to it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.predictions: dict[str, Prediction] = {}
        self.counters = Counters()
        self._contents: set[str] = set()
        self._rng = random.Random(config.seed)
        self._slots: list[float] = []  # when each running slot frees (max_running of them)
        self._tokens = float("inf")
        self._refilled = time.monotonic()
        self._foreign = 0
        self._seq = itertools.count()
        self.add_foreign(config.foreign_predictions)

    def reject(self, error: SimError) -> SimError:
        self.counters.rejected[error.reason] = self.counters.rejected.get(error.reason, 0) + 1
        return error

    def take_token(self) -> None:
        """Spend one request of the rate budget, or raise 429 (a token bucket, burst = rps)."""
        rps = self.config.rps
        if not rps:
            return
        now = time.monotonic()
        self._tokens = min(max(1.0, rps), self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        wait = max(1, math.ceil((1.0 - self._tokens) / rps))
        raise self.reject(SimError(429, {"detail": f"Request was throttled. Your rate limit resets in ~{wait}s."},
                                   retry_after=wait if self.config.retry_after else None, reason="rate_limit"))

    def _new_id(self) -> str:
        return "".join(self._rng.choice(_ID_CHARS) for _ in range(26))

    def validate(self, model: str, body: Any, *, versioned: bool) -> dict[str, Any]:
        """The body's input, or the refusal Replicate gives."""
        allowed = {"input", "webhook", "webhook_events_filter", "stream"} | ({"version"} if versioned else set())
        if not isinstance(body, dict):
            raise self.reject(_invalid("the body must be a JSON object"))
        extra = sorted(set(body) - allowed)
        if extra:
            raise self.reject(_invalid(f"Additional properties are not allowed ({', '.join(extra)})"))
        if model not in MODELS:
            raise self.reject(SimError(404, {"detail": "The requested resource could not be found.",
                                             "status": 404}, reason="no_model"))
        data = body.get("input")
        if not isinstance(data, dict):
            raise self.reject(_invalid("input is required and must be an object"))
        schema, problems = MODELS[model], []
        required = NEEDS_IMAGE.get(model, "prompt")
        if not data.get(required):
            problems.append(f"{required}: {required} is required")
        for name, value in data.items():
            rule = schema.get(name)
            if rule is None:
                problems.append(f"input.{name}: unknown input for {model}")
            elif not fits(rule, value):
                problems.append(f"input.{name}: {value!r} is not allowed" + (
                    f" (one of {', '.join(map(str, rule))})" if isinstance(rule, tuple) else ""))
        if model == "kwaivgi/kling-v3-video" and len(str(data.get("prompt") or "")) > 2500:
            problems.append("input.prompt: at most 2500 characters")
        if model == "minimax/hailuo-02" and data.get("duration") == 10 and data.get("resolution", "1080p") != "768p":
            problems.append("input.duration: 10 s only at 768p")
        if model == "pixverse/pixverse-v5" and data.get("quality") == "1080p" and data.get("duration", 5) != 8:
            problems.append("input.quality: 1080p only at 8 s")
        if problems:
            raise self.reject(_invalid("\n".join(f"- {p}" for p in problems)))
        return data

    def create(self, model: str, version: str, body: Any, cancel_after: str | None, *,
               versioned: bool = False, flagged: bool = False, fails: bool = False) -> Prediction:
        cfg = self.config
        data = self.validate(model, body, versioned=versioned)
        prompt = str(data.get("prompt") or "")
        if cfg.refuse_marker and cfg.refuse_marker in prompt:
            raise self.reject(_invalid("- input.prompt: refused by the model's input checks (simulated)"))
        try:
            deadline_s = _deadline(cancel_after) if cancel_after else None
        except SimError as exc:
            raise self.reject(exc) from None
        now = time.time()
        latency = max(0.0, cfg.latency * (1 + cfg.jitter * self._rng.uniform(-1, 1)))
        start = now + cfg.boot
        if cfg.max_running:  # queue: wait for the earliest free slot (never refused)
            self._slots = sorted(self._slots)[: cfg.max_running]
            if len(self._slots) >= cfg.max_running:
                start = max(start, self._slots.pop(0))
            self._slots.append(start + latency)
        error = MODERATION if (flagged or (cfg.blocked_marker and cfg.blocked_marker in prompt)) else None
        if error is None and (fails or (cfg.fail_marker and cfg.fail_marker in prompt)):
            error = "Prediction failed: simulated failure (E1000)"
        pred = Prediction(self._new_id(), model, version, data, now, start, start + latency, error,
                          deadline=None if deadline_s is None else now + deadline_s,
                          cfg_retention=cfg.retention, cfg_output_list=cfg.output_list)
        self.predictions[pred.id] = pred
        self.counters.accepted += 1
        self.counters.peak_active = max(self.counters.peak_active, self.active(now))
        content = _content(model, data)
        if content in self._contents:
            self.counters.paid_duplicates += 1
        self._contents.add(content)
        return pred

    def active(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return sum(p.status(now) in ("starting", "processing") for p in self.predictions.values() if not p.foreign)

    def cancel(self, prediction_id: str) -> Prediction:
        pred = self.get(prediction_id)
        now = time.time()
        if pred.status(now) in ("starting", "processing"):
            if pred.status(now) == "starting":  # it never ran: nothing was paid for it
                self._contents.discard(_content(pred.model, pred.input))
            pred.canceled_at = now
        self.counters.cancels += 1
        return pred

    def get(self, prediction_id: str) -> Prediction:
        pred = self.predictions.get(prediction_id)
        if pred is None:
            raise self.reject(SimError(404, {"detail": "Not found.", "status": 404}, reason="not_found"))
        return pred

    def add_foreign(self, total: int) -> None:
        """Top the account up to ``total`` predictions of other systems, older than every one so far."""
        now = time.time()
        oldest = min((p.created for p in self.predictions.values()), default=now)
        for i in range(self._foreign, total):
            created = oldest - 60.0 * (i - self._foreign + 1)
            model = ("kwaivgi/kling-v2.6", "google/veo-3.1-fast", "stability-ai/sdxl")[i % 3]
            pred = Prediction(self._new_id(), model, "hidden", {"prompt": f"another system's clip {i}"},
                              created, created + 1, created + 30, source="web" if i % 4 == 3 else "api",
                              foreign=True, cfg_retention=self.config.retention)
            self.predictions[pred.id] = pred
        self._foreign = max(self._foreign, total)

    def newest_first(self, after: float | None, before: float | None) -> list[Prediction]:
        chosen = [p for p in self.predictions.values()
                  if (after is None or p.created >= after) and (before is None or p.created < before)]
        return sorted(chosen, key=lambda p: p.created, reverse=True)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        states: dict[str, int] = {}
        for pred in self.predictions.values():
            if not pred.foreign:
                state = pred.status(now)
                states[state] = states.get(state, 0) + 1
        c = self.counters
        return {"requests": c.requests, "accepted": c.accepted, "paid_duplicates": c.paid_duplicates,
                "rejected": dict(c.rejected), "polls": c.polls, "lists": c.lists, "cancels": c.cancels,
                "peak_active": c.peak_active, "current_active": self.active(now), "downloads": c.downloads,
                "foreign_predictions": self._foreign, "tasks": states,
                "succeeded": states.get("succeeded", 0), "failed": states.get("failed", 0)}
