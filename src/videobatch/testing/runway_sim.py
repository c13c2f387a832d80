"""The simulated Runway organization behind the test server: tasks, their life, limits, counters.

No HTTP here: ``runway_app`` turns requests into calls on ``Account`` and ``SimError`` into Runway's
error bodies. It follows docs/providers/runway.md, not videobatch's client: its own model table
(``MODELS``), and a body Runway would refuse is refused here (400 with zod-style ``issues``).

Life of a task (monotonic clock, computed when asked, no background work): ``PENDING`` for
``queue_share`` of the latency, then ``THROTTLED`` while the model's ``max_concurrent`` tasks are
running (Runway queues over the concurrency limit, it does not refuse), then ``RUNNING`` with a
growing ``progress``, then ``SUCCEEDED`` (an ``output`` URL) or ``FAILED`` (``failure``,
``failureCode``). Tasks of one model start in creation order. ``DELETE`` cancels an open task
(refunded while queued, charged once running) and deletes a finished one; the slot a cancelled
task had reserved stays reserved (later tasks may start a little late, never early).
Over ``max_daily`` tasks of a model in 24 h a create gets 429, and no task.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ._settings import ServerSettings, one_of

__all__ = ["MODELS", "RETIRED", "Account", "SimConfig", "SimError", "SimTask"]

_WIDE = ("1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672")
_VEO = ("1280:720", "720:1280", "1080:1920", "1920:1080")


@dataclass(frozen=True)
class Model:
    text: tuple[str, ...]  # ratios for text_to_video (empty: the model does not do it)
    image: tuple[str, ...]  # ratios for image_to_video
    durations: tuple[int, ...]
    default_duration: int | None  # None: duration is required
    credits: float  # per second (with audio, where it matters)
    keys: frozenset[str]  # optional body fields it takes besides model/promptText/ratio/duration
    last_frame: bool = False  # promptImage may add a "last" keyframe
    prompt_max: int = 1000
    prompt_required_image: bool = False
    silent_credits: float | None = None  # per second without audio


MODELS: dict[str, Model] = {
    "gen4.5": Model(("1280:720", "720:1280"), _WIDE, tuple(range(2, 11)), None, 12,
                    frozenset({"seed", "contentModeration"}), prompt_required_image=True),
    "gen4_turbo": Model((), _WIDE, tuple(range(2, 11)), 10, 5, frozenset({"seed", "contentModeration"})),
    "veo3.1": Model(_VEO, _VEO, (4, 6, 8), 8, 40, frozenset({"seed", "audio", "negativePrompt"}),
                    last_frame=True, silent_credits=20),
    "veo3.1_fast": Model(_VEO, _VEO, (4, 6, 8), 8, 15, frozenset({"seed", "audio", "negativePrompt"}),
                         last_frame=True, silent_credits=10),
    "seedance2": Model(*(("992:432", "1280:720", "1920:1080", "3840:2160", "3840:3840"),) * 2,
                       tuple(range(4, 16)), 5, 36, frozenset({"seed", "audio"}), last_frame=True,
                       prompt_max=3500),
    "gemini_omni_flash": Model(("1280:720", "720:1280"), ("1280:720", "720:1280"), tuple(range(3, 11)),
                               5, 10, frozenset()),  # its price is unknown: 10 is made up
}
RETIRED = ("gen3a_turbo", "gen4_aleph", "veo3", "upscale_v1")
DOC_URL = "https://docs.dev.runwayml.com/api"
DELETED = ("not_found", "cancelled")  # what GET answers for a task after DELETE cancelled it


@dataclass
class SimConfig(ServerSettings):
    """Everything the server can be told at start (and most of it at run time)."""

    tuples = ("allowed_models",)

    api_secret: str = "key_test_runway_0123456789abcdef"  # noqa: S105 (a test double's key)
    latency: float = 0.5  # seconds a task runs
    jitter: float = 0.2  # ± fraction of latency, uniform
    queue_share: float = 0.2  # seconds PENDING, as a share of latency
    max_concurrent: int = 2  # RUNNING tasks per model; more wait THROTTLED
    max_daily: int | None = None  # tasks per model per 24 h (429 beyond); None: no cap
    credits: float | None = None  # the balance (400 "not enough credits" beyond); None: endless
    allowed_models: tuple[str, ...] | None = None  # others get 403; None: all
    retry_after: bool = True  # send Retry-After with 429s
    slow_seconds: float = 3.0  # how late a "slow" answer comes
    video_seconds: float = 1.0  # length of the MP4 files served
    blocked_marker: str = "[blocked]"  # prompts with it end FAILED SAFETY.INPUT.TEXT (charged)
    fail_marker: str = "[fail]"  # prompts with it end FAILED INTERNAL.BAD_OUTPUT (refunded)
    deleted: str = "not_found"  # GET after a DELETE cancelled a task: 404, or CANCELLED
    seed: int = 0

    def check(self) -> None:
        one_of("deleted", self.deleted, DELETED)
        if isinstance(self.max_concurrent, bool) or not isinstance(self.max_concurrent, int) \
                or self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be an int ≥ 1, not {self.max_concurrent!r}")


class SimError(Exception):
    """An error answer: HTTP status, Runway's body, optional Retry-After, a reason to count."""

    def __init__(self, status: int, error: str, *, issues: list[dict[str, Any]] | None = None,
                 retry_after: float | None = None, reason: str | None = None) -> None:
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if issues is not None:
            self.body.update(issues=issues, docUrl=DOC_URL)
        self.retry_after = retry_after
        self.reason = reason or str(status)
        super().__init__(error)


def invalid(path: str, message: str, code: str = "custom") -> SimError:
    return SimError(400, "Validation of body failed", reason="invalid",
                    issues=[{"code": code, "path": [path], "message": message}])


@dataclass
class SimTask:
    id: str
    model: str
    body: dict[str, Any]
    created_wall: float
    created: float  # monotonic
    start: float  # RUNNING from (monotonic)
    done: float  # SUCCEEDED/FAILED from
    pending_end: float
    credits: float
    failure: tuple[str, str] | None = None  # (failure, failureCode)
    refunded: bool = False  # a failure Runway refunds
    cancelled_at: float | None = None
    deleted: bool = False
    content: str = ""  # what makes a second task with this body a paid duplicate

    def end(self) -> float:
        return self.done if self.cancelled_at is None else min(self.done, self.cancelled_at)

    def status(self, now: float) -> str:
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "CANCELLED"
        if now >= self.done:
            return "FAILED" if self.failure else "SUCCEEDED"
        if now >= self.start:
            return "RUNNING"
        return "PENDING" if now < self.pending_end else "THROTTLED"

    def cost(self, now: float) -> float:
        status = self.status(now)
        if status == "CANCELLED":
            return 0 if (self.cancelled_at or 0) < self.start else self.credits
        return 0 if status == "FAILED" and self.refunded else self.credits

    def to_json(self, now: float, files_url: str) -> dict[str, Any]:
        status = self.status(now)
        stamp = datetime.fromtimestamp(self.created_wall, UTC).isoformat(timespec="milliseconds")
        data: dict[str, Any] = {"id": self.id, "createdAt": stamp.replace("+00:00", "Z"),
                                "status": status}
        if status in ("PENDING", "THROTTLED", "RUNNING"):
            if status == "RUNNING":
                data["progress"] = round((now - self.start) / max(1e-9, self.done - self.start), 3)
            data["estimatedCost"] = {"credits": self.credits}
            return data
        if status == "SUCCEEDED":
            data["output"] = [f"{files_url}/files/{self.id}.mp4?_jwt=test-signature"]
        elif status == "FAILED" and self.failure:
            data["failure"], data["failureCode"] = self.failure
        data["cost"] = {"credits": round(self.cost(now))}
        return data


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    paid_duplicates: int = 0  # accepted tasks with the same body as an earlier accepted one
    polls: int = 0
    deletes: int = 0
    cancelled: int = 0
    peak_active: int = 0  # tasks open (PENDING, THROTTLED or RUNNING) at once
    downloads: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class Account:
    """One Runway organization: its tasks, its limits, and what happened to it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tasks: dict[str, SimTask] = {}
        self.counters = Counters()
        self.spent = 0.0
        self._bodies: set[str] = set()
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)

    def reject(self, error: SimError) -> SimError:
        self.counters.rejected[error.reason] = self.counters.rejected.get(error.reason, 0) + 1
        return error

    def open_tasks(self, now: float) -> int:
        return sum(1 for t in self.tasks.values() if t.created <= now < t.end())

    def _start(self, model: str, earliest: float) -> float:
        """When a task queued at ``earliest`` can run: in creation order, once fewer than
        ``max_concurrent`` tasks of its model are running."""
        mine = [t for t in self.tasks.values() if t.model == model  # (one cancelled in the queue left it)
                and (t.cancelled_at is None or t.cancelled_at > t.start)]
        floor = max([earliest, *(t.start for t in mine)])
        for moment in sorted({floor, *(t.end() for t in mine if t.end() > floor)}):
            if sum(1 for t in mine if t.start <= moment < t.end()) < self.config.max_concurrent:
                return moment
        return floor  # unreachable: after the last end nothing runs

    def create(self, endpoint: str, body: dict[str, Any], validate: Any) -> SimTask:
        cfg = self.config
        model_id, spec = validate(endpoint, body)
        if cfg.allowed_models is not None and model_id not in cfg.allowed_models:
            raise self.reject(SimError(403, f"Model variant {model_id} is not available",
                                       reason="model_denied"))
        now, wall = time.monotonic(), time.time()
        if cfg.max_daily is not None and sum(
                1 for t in self.tasks.values() if t.model == model_id and now - t.created < 86400
        ) >= cfg.max_daily:
            raise self.reject(SimError(429, "Your daily task limit has been reached.",
                                       retry_after=3600 if cfg.retry_after else None,
                                       reason="daily_limit"))
        duration = int(body.get("duration") or spec.default_duration)
        rate = spec.credits if body.get("audio", True) or spec.silent_credits is None else spec.silent_credits
        if model_id == "seedance2":
            w, _, h = str(body.get("ratio", "1280:720")).partition(":")
            area = int(w) * int(h)
            rate = 36 if area <= 1_200_000 else 40 if area <= 2_500_000 else 150
        credits = float(rate * duration)
        if cfg.credits is not None and self.spent + credits > cfg.credits:
            raise self.reject(SimError(400, "You do not have enough credits to run this task.",
                                       reason="credits"))
        prompt = str(body.get("promptText") or "")
        pending_end = now + cfg.latency * cfg.queue_share
        start = self._start(model_id, pending_end)
        run = max(0.0, cfg.latency * (1 + cfg.jitter * self._rng.uniform(-1, 1)))
        content = hashlib.sha256(json.dumps({"endpoint": endpoint, **body}, sort_keys=True).encode()).hexdigest()
        task = SimTask(id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)), model=model_id,
                       body=body, created_wall=wall, created=now, start=start, done=start + run,
                       pending_end=pending_end, credits=credits, content=content)
        if cfg.blocked_marker and cfg.blocked_marker in prompt:
            task.failure = ("Prompt flagged", "SAFETY.INPUT.TEXT")
        elif cfg.fail_marker and cfg.fail_marker in prompt:
            task.failure, task.refunded = ("Generation rejected by quality checks", "INTERNAL.BAD_OUTPUT"), True
        self.tasks[task.id] = task
        self.spent += credits
        self.counters.accepted += 1
        self.counters.peak_active = max(self.counters.peak_active, self.open_tasks(now))
        if content in self._bodies:
            self.counters.paid_duplicates += 1
        self._bodies.add(content)
        return task

    def get(self, task_id: str) -> SimTask:
        task = self.tasks.get(task_id)
        now = time.monotonic()
        if task is None or task.deleted or (
                self.config.deleted == "not_found" and task.cancelled_at is not None
                and now >= task.cancelled_at):
            raise self.reject(SimError(404, "Could not find Task", reason="not_found"))
        return task

    def delete(self, task_id: str) -> None:
        task = self.get(task_id)
        now = time.monotonic()
        self.counters.deletes += 1
        state = task.status(now)
        if state in ("PENDING", "THROTTLED", "RUNNING"):
            if state != "RUNNING":  # it never ran: refunded, so a new task is no duplicate
                self._bodies.discard(task.content)
            task.cancelled_at = now
            self.counters.cancelled += 1
            self.spent -= task.credits - task.cost(now)
        else:
            task.deleted = True  # a finished task is deleted, not refunded

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        states: dict[str, int] = {}
        for task in self.tasks.values():
            state = task.status(now)
            states[state] = states.get(state, 0) + 1
        edges = sorted([(t.start, 1) for t in self.tasks.values() if t.start < t.end()]
                       + [(t.end(), -1) for t in self.tasks.values() if t.start < t.end()
                          and t.start <= now],
                       key=lambda e: (e[0], e[1]))
        running = peak = 0
        for moment, step in edges:
            if moment > now:
                break
            running += step
            peak = max(peak, running)
        throttled = sum(1 for t in self.tasks.values() if t.start > t.pending_end + 1e-6)
        c = self.counters
        return {
            "requests": c.requests, "accepted": c.accepted, "paid_duplicates": c.paid_duplicates,
            "rejected": dict(c.rejected), "polls": c.polls, "deletes": c.deletes,
            "cancelled": c.cancelled, "peak_active": c.peak_active, "peak_running": peak,
            "current_active": self.open_tasks(now), "throttled": throttled,
            "downloads": c.downloads, "tasks": states, "credits_spent": round(self.spent, 3),
            "succeeded": states.get("SUCCEEDED", 0), "failed": states.get("FAILED", 0),
        }
