"""The simulated fal account behind the fal-compatible test server: requests, the queue, limits.

No HTTP here: ``fal_app`` turns requests into calls on ``Account``. Built from the documented
contract (``docs/providers/fal.md``) and the fixture bodies, not from the client:

* A submit is accepted into the queue whatever its input (fal validates when a runner takes it):
  a body the endpoint's schema refuses ends ``COMPLETED`` with a 422 ``detail`` result. Only an
  unknown (or retired) endpoint is refused at once (404).
* Over the account's concurrency limit requests **queue** (``IN_QUEUE``); they are never refused.
  A request waits at least ``queue_share`` of its latency, then for a free slot (first in, first
  out), then runs for the rest. States are computed from the monotonic clock when asked.
* A prompt containing ``blocked_marker`` ends with a ``content_policy_violation`` 422; one with
  ``fail_marker`` ends with a request error (``request_timeout``, 504).
* ``foreign_tasks`` finished requests of other systems sit on the account (in the listing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ._settings import ServerSettings, one_of

__all__ = ["ENDPOINTS", "RETIRED", "Account", "SimConfig", "SimTask", "owner_app"]

_TEXT = ("text",)
_URL = ("url",)
_BOOL = ("bool",)
_KLING_T2V = {"prompt": _TEXT, "duration": ("str", "5", "10"), "aspect_ratio": ("str", "16:9", "9:16", "1:1"),
              "negative_prompt": _TEXT, "cfg_scale": ("num", 0, 1)}
_V3 = {"prompt": _TEXT, "duration": ("str", *map(str, range(3, 16))), "generate_audio": _BOOL,
       "negative_prompt": _TEXT, "cfg_scale": ("num", 0, 1), "shot_type": ("str", "customize", "intelligent")}
_VEO = {"prompt": _TEXT, "duration": ("str", "4s", "6s", "8s"), "aspect_ratio": ("str", "16:9", "9:16"),
        "resolution": ("str", "720p", "1080p", "4k"), "generate_audio": _BOOL, "negative_prompt": _TEXT,
        "seed": ("int", 0, 2**32), "auto_fix": _BOOL, "safety_tolerance": ("str", *"123456")}
_SEEDANCE = {"prompt": _TEXT, "duration": ("str", "auto", *map(str, range(4, 16))),
             "aspect_ratio": ("str", "auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16"),
             "resolution": ("str", "480p", "720p", "1080p", "4k"), "generate_audio": _BOOL,
             "bitrate_mode": ("str", "standard", "high"), "end_user_id": _TEXT}
_WAN = {"prompt": _TEXT, "duration": ("int", 2, 15), "resolution": ("str", "720p", "1080p"),
        "negative_prompt": _TEXT, "seed": ("int", 0, 2**32), "enable_prompt_expansion": _BOOL,
        "enable_safety_checker": _BOOL, "audio_url": _URL}
_LTX = {"prompt": _TEXT, "duration": ("int", 6, 10), "resolution": ("str", "1080p", "1440p", "2160p"),
        "fps": ("str", 24, 25, 48, 50), "generate_audio": _BOOL}
_HAILUO = {"prompt": _TEXT, "duration": ("str", "6", "10"), "prompt_optimizer": _BOOL}
# endpoint id -> (input schema, required fields). Unknown fields are refused (422 extra_forbidden):
# stricter than fal may be, so a field sent to the wrong endpoint shows.
ENDPOINTS: dict[str, tuple[dict[str, tuple[Any, ...]], tuple[str, ...]]] = {
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": (_KLING_T2V, ("prompt",)),
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": (
        {**_KLING_T2V, "image_url": _URL, "tail_image_url": _URL}, ("prompt", "image_url")),
    "fal-ai/kling-video/v2.5-turbo/standard/image-to-video": (
        {**_KLING_T2V, "image_url": _URL}, ("prompt", "image_url")),
    "fal-ai/kling-video/v2.6/pro/text-to-video": ({**_KLING_T2V, "generate_audio": _BOOL}, ("prompt",)),
    "fal-ai/kling-video/v2.6/pro/image-to-video": (
        {**_KLING_T2V, "generate_audio": _BOOL, "start_image_url": _URL, "end_image_url": _URL},
        ("prompt", "start_image_url")),
    "fal-ai/kling-video/v3/pro/text-to-video": ({**_V3, "aspect_ratio": _KLING_T2V["aspect_ratio"]}, ()),
    "fal-ai/kling-video/v3/pro/image-to-video": (
        {**_V3, "start_image_url": _URL, "end_image_url": _URL}, ("start_image_url",)),
    "fal-ai/kling-video/o3/pro/text-to-video": (
        {**_V3, "aspect_ratio": _KLING_T2V["aspect_ratio"], "multi_prompt": ("any",)}, ()),
    "fal-ai/veo3.1": (_VEO, ("prompt",)),
    "fal-ai/veo3.1/image-to-video": (
        {**_VEO, "aspect_ratio": ("str", "auto", "16:9", "9:16"), "image_url": _URL}, ("prompt", "image_url")),
    "bytedance/seedance-2.0/text-to-video": (_SEEDANCE, ("prompt",)),
    "bytedance/seedance-2.0/image-to-video": (
        {**_SEEDANCE, "image_url": _URL, "end_image_url": _URL}, ("prompt", "image_url")),
    "fal-ai/wan/v2.7/text-to-video": (
        {**_WAN, "aspect_ratio": ("str", "16:9", "9:16", "1:1", "4:3", "3:4")}, ("prompt",)),
    "fal-ai/wan/v2.7/image-to-video": ({**_WAN, "image_url": _URL, "end_image_url": _URL}, ("image_url",)),
    "fal-ai/minimax/hailuo-2.3/standard/text-to-video": (_HAILUO, ("prompt",)),
    "fal-ai/ltx-2.3/text-to-video": ({**_LTX, "aspect_ratio": ("str", "16:9", "9:16")}, ("prompt",)),
}
DEFAULT_ENDPOINT = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
RETIRED = ("fal-ai/sora-2/text-to-video", "fal-ai/sora-2/image-to-video")
LISTINGS = ("finished", "all")  # which requests the by-endpoint listing shows


def owner_app(endpoint_id: str) -> str:
    parts = [p for p in endpoint_id.split("/") if p]
    return "/".join(parts[:3 if parts and parts[0] in ("workflows", "comfy") else 2])


@dataclass
class SimConfig(ServerSettings):
    """Everything the server can be told at start (and most of it at run time)."""

    key: str = "test-fal-key-0123456789"
    latency: float = 0.5  # seconds a request takes when a slot is free (queue + run)
    jitter: float = 0.2  # ± fraction of latency, uniform
    queue_share: float = 0.2  # share of the latency spent IN_QUEUE at the least
    max_parallel: int = 2  # the account's concurrency limit (requests IN_PROGRESS); beyond: queued
    rps: float | None = None  # API requests per second (429 beyond); None: unlimited
    retry_after: bool = True  # send Retry-After with that 429 (fal documents none)
    locked: bool = False  # the balance is exhausted: every request 403
    slow_seconds: float = 3.0  # how late a "slow" answer comes
    video_seconds: float = 1.0  # length of the MP4 files served
    result_ttl: float = 3600.0  # seconds a result stays after completion (fal: about an hour)
    blocked_marker: str = "[blocked]"
    fail_marker: str = "[fail]"
    listing: str = "finished"  # "finished": the listing shows ended requests only; "all"
    foreign_tasks: int = 0
    seed: int = 0

    def check(self) -> None:
        one_of("listing", self.listing, LISTINGS)


def _content(endpoint: str, body: dict[str, Any]) -> str:
    """What makes two requests the same paid work: the endpoint and the input."""
    return hashlib.sha256(json.dumps([endpoint, body], sort_keys=True).encode()).hexdigest()


@dataclass
class SimTask:
    request_id: str
    endpoint: str
    body: dict[str, Any]
    sent_wall: float
    sent: float  # monotonic
    ready_at: float  # may start from then
    run_seconds: float
    outcome: tuple[int, dict[str, Any]] | None = None  # result code and body when it fails
    error: tuple[str, str | None] | None = None  # status error text and error_type
    started: float | None = None
    done_at: float | None = None
    foreign: bool = False

    def state(self, now: float) -> str:
        if self.done_at is not None and self.done_at <= now:
            return "COMPLETED"
        return "IN_PROGRESS" if self.started is not None and self.started <= now else "IN_QUEUE"

    def wall(self, mono: float | None) -> str | None:
        if mono is None:
            return None
        stamp = self.sent_wall + (mono - self.sent)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    paid_duplicates: int = 0  # accepted requests with the same endpoint and input as an earlier one
    peak_active: int = 0  # requests queued or running at once
    peak_running: int = 0  # requests IN_PROGRESS at once (≤ max_parallel)
    polls: int = 0
    results: int = 0
    cancels: int = 0
    listings: int = 0
    downloads: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Account:
    """One fal account: its requests, its queue, and what happened to it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tasks: dict[str, SimTask] = {}
        self.counters = Counters()
        self._waiting: deque[SimTask] = deque()
        self._running: list[SimTask] = []
        self._clock = time.monotonic()
        self._contents: set[str] = set()
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)
        self._tokens = float("inf")
        self._refilled = time.monotonic()
        self._foreign = 0
        self.add_foreign(config.foreign_tasks)

    def reject(self, reason: str) -> None:
        self.counters.rejected[reason] = self.counters.rejected.get(reason, 0) + 1

    def take_token(self) -> float | None:
        """Spend one request of the rate budget; the seconds to wait when there is none."""
        rps = self.config.rps
        if not rps:
            return None
        now = time.monotonic()
        self._tokens = min(max(1.0, rps), self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rps

    # -- the queue ------------------------------------------------------------------------------

    def advance(self, now: float | None = None) -> float:
        """Move the simulated queue on to ``now``: finished requests free slots, queued ones start."""
        now = time.monotonic() if now is None else now
        limit = max(1, self.config.max_parallel)
        while True:
            ending = min(self._running, key=lambda t: t.done_at or 0.0, default=None)
            end_at = ending.done_at if ending is not None and ending.done_at is not None else float("inf")
            start_at = float("inf")
            if self._waiting and len(self._running) < limit:
                start_at = max(self._waiting[0].ready_at, self._clock)
            at = min(end_at, start_at)
            if at > now:
                break
            self._clock = at
            if end_at <= start_at and ending is not None:
                self._running.remove(ending)
            else:
                task = self._waiting.popleft()
                task.started, task.done_at = at, at + task.run_seconds
                self._running.append(task)
                self.counters.peak_running = max(self.counters.peak_running, len(self._running))
        return now

    def create(self, endpoint: str, body: dict[str, Any], *, policy: bool = False,
               fail: bool = False) -> SimTask:
        now = self.advance()
        cfg = self.config
        latency = max(0.01, cfg.latency * (1 + cfg.jitter * self._rng.uniform(-1, 1)))
        task = SimTask(request_id=str(uuid.UUID(int=self._rng.getrandbits(128))), endpoint=endpoint,
                       body=body, sent_wall=time.time(), sent=now,
                       ready_at=now + latency * cfg.queue_share,
                       run_seconds=latency * (1 - cfg.queue_share))
        prompt = str(body.get("prompt") or "")
        problem = validate(endpoint, body)
        if problem is not None:
            task.outcome, task.error = (422, {"detail": [problem]}), ("Invalid status code: 422", None)
            task.run_seconds = 0.01
        elif policy or (cfg.blocked_marker and cfg.blocked_marker in prompt):
            task.outcome = (422, {"detail": [{"loc": ["body", "prompt"], "type": "content_policy_violation",
                                              "msg": "The content was flagged by a content checker.",
                                              "input": prompt, "categories": ["violence"]}]})
            task.error = ("Invalid status code: 422", None)
        elif fail or (cfg.fail_marker and cfg.fail_marker in prompt):
            task.outcome = (504, {"detail": "Request timed out", "error_type": "request_timeout"})
            task.error = ("Request timed out", "request_timeout")
        self.tasks[task.request_id] = task
        self._waiting.append(task)
        self.counters.accepted += 1
        active = len(self._waiting) + len(self._running)
        self.counters.peak_active = max(self.counters.peak_active, active)
        content = _content(endpoint, body)
        if content in self._contents:
            self.counters.paid_duplicates += 1
        self._contents.add(content)
        return task

    def cancel(self, task: SimTask) -> str:
        """``OK`` (removed from the queue), ``CANCELLATION_REQUESTED`` (running: it goes on) or
        ``ALREADY_COMPLETED``."""
        now = self.advance()
        state = task.state(now)
        if state == "COMPLETED":
            return "ALREADY_COMPLETED"
        if state == "IN_PROGRESS":
            return "CANCELLATION_REQUESTED"
        self._waiting.remove(task)
        self._contents.discard(_content(task.endpoint, task.body))  # never ran: nothing was paid
        task.started, task.done_at = now, now
        task.outcome = (499, {"detail": "Request cancelled by the client", "error_type": "client_cancelled"})
        task.error = ("Request cancelled by the client", "client_cancelled")
        return "OK"

    def add_foreign(self, total: int) -> None:
        """Top the account up to ``total`` finished requests of other systems (1-N minutes old)."""
        now, wall = time.monotonic(), time.time()
        endpoints = sorted(ENDPOINTS)
        for i in range(self._foreign, total):
            age = 60.0 * (i + 1)
            task = SimTask(request_id=str(uuid.UUID(int=self._rng.getrandbits(128))),
                           endpoint=endpoints[i % len(endpoints)] if i % 3 else DEFAULT_ENDPOINT,
                           body={"prompt": f"another system's clip {i}"}, sent_wall=wall - age,
                           sent=now - age, ready_at=now - age, run_seconds=30.0, foreign=True)
            task.started, task.done_at = now - age + 1, now - age + 31
            self.tasks[task.request_id] = task
        self._foreign = max(self._foreign, total)

    # -- views ----------------------------------------------------------------------------------

    def listed(self, endpoints: set[str], start: float | None, end: float | None) -> list[SimTask]:
        """The by-endpoint listing: newest end first (running ones first, with ``listing="all"``)."""
        now = self.advance()
        shown = [t for t in self.tasks.values() if t.endpoint in endpoints
                 and (start is None or t.sent_wall >= start) and (end is None or t.sent_wall < end)
                 and (self.config.listing == "all" or t.state(now) == "COMPLETED")]
        return sorted(shown, key=lambda t: -(t.done_at if t.state(now) == "COMPLETED" and t.done_at
                                             else float("inf")))

    def snapshot(self) -> dict[str, Any]:
        now = self.advance()
        states: dict[str, int] = {}
        for task in self.tasks.values():
            if not task.foreign:
                state = task.state(now)
                states[state] = states.get(state, 0) + 1
        c = self.counters
        done = [t for t in self.tasks.values() if not t.foreign and t.state(now) == "COMPLETED"]
        return {"requests": c.requests, "accepted": c.accepted, "paid_duplicates": c.paid_duplicates,
                "peak_active": c.peak_active, "peak_running": c.peak_running,
                "active": len(self._waiting) + len(self._running), "polls": c.polls,
                "results": c.results, "cancels": c.cancels, "listings": c.listings,
                "downloads": c.downloads, "rejected": dict(c.rejected), "tasks": states,
                "succeeded": sum(t.outcome is None for t in done),
                "failed": sum(t.outcome is not None for t in done), "foreign_tasks": self._foreign}


def validate(endpoint: str, body: Any) -> dict[str, Any] | None:
    """The first 422 ``detail`` item the endpoint's schema gives this body, or None."""
    schema, required = ENDPOINTS[endpoint]
    if not isinstance(body, dict):
        return {"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}
    for name in required:
        if body.get(name) in (None, ""):
            return {"loc": ["body", name], "msg": "field required", "type": "value_error.missing"}
    for name, value in body.items():
        spec = schema.get(name)
        if spec is None:
            return {"loc": ["body", name], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        kind, *allowed = spec
        ok = _fits(kind, allowed, value)
        if not ok:
            hint = f"one of {allowed}" if kind == "str" else f"a {kind}" + (f" in {allowed}" if allowed else "")
            return {"loc": ["body", name], "msg": f"Input should be {hint}",
                    "type": "one_of" if kind == "str" else f"{kind}_type", "input": value}
    return None


def _fits(kind: str, allowed: list[Any], value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "text":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "url":
        return isinstance(value, str) and value.startswith(("http://", "https://", "data:"))
    if kind == "str":
        return not isinstance(value, bool) and value in allowed
    if kind == "int":
        return number and isinstance(value, int) and allowed[0] <= value <= allowed[1]
    if kind == "num":
        return number and allowed[0] <= value <= allowed[1]
    return True  # "any"
