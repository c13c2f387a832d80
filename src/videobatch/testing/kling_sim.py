"""The simulated Kling account behind the test server: tasks, their lifecycle, limits and counters.

No HTTP here: ``kling_app`` turns requests into calls on ``Account`` and ``SimError`` into
Kling's error envelope. Time is read from the monotonic clock; task states are computed from it
when asked (``submitted`` for the first ``queue_share`` of a task's latency, then ``processing``,
then ``succeed`` or ``failed``), so no background work runs.

The account can be shared: ``foreign_slots`` lets another system run that many never-ending tasks
on it (each holds a parallel slot and shows in list pages); ``foreign_tasks`` puts that many
finished tasks of *other systems* on it (created before the run, newest of them ~1 minute old,
3 in 4 text2video; a third carry no external id, a third an id of their own like
``order-00001``, a third an id shaped like videobatch's ``vb-<32 hex>`` from some other run). They
appear in list pages and in ``?external_task_id=`` answers like any task, hold no slot, and are
left out of the counters' task states.

Kling's newer API design runs on the same account (``kling_newer``; create bodies of both designs
are checked by ``kling_bodies``). A succeeded task reports the units deducted for it
(``kling_billing``); the server's settings are ``kling_config``. ``audit`` compares a client's
record of which task each row adopted with the account: a row whose task does not carry the row's
key is a *wrong adoption*.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import kling_billing as billing
from . import kling_bodies as bodies
from .faults import CODES
from .kling_config import LIST_ORDERS, LOOKUPS, RETIRED, SimConfig  # (importable from here too)

__all__ = ["LIST_ORDERS", "LOOKUPS", "RETIRED", "Account", "SimConfig", "SimError", "SimTask"]

KINDS = ("text2video", "image2video")


class SimError(Exception):
    """An error answer: HTTP status, Kling business code, message, optional Retry-After."""

    def __init__(self, code: int, message: str | None = None, *,
                 retry_after: float | None = None, reason: str | None = None) -> None:
        status, default = CODES[code]
        self.status, self.code, self.message = status, code, message or default
        self.retry_after, self.reason = retry_after, reason or str(code)
        super().__init__(self.message)


@dataclass
class SimTask:
    task_id: str
    kind: str
    body: dict[str, Any]
    external_task_id: str | None
    created_ms: int
    started: float  # monotonic
    processing_at: float
    done_at: float
    fails: bool
    fail_message: str = ""
    foreign: bool = False  # another system's task, not created through this server's API
    design: str = "legacy"  # "legacy" (/v1) or "newer" (model in the path)
    model: str = ""  # the model it runs on (parallel limits hold per model)
    units: float | None = None  # what it costs once it succeeded (``kling_billing``); None: unpriced

    def status(self, now: float) -> str:
        if now >= self.done_at:
            return "failed" if self.fails else "succeed"
        return "processing" if now >= self.processing_at else "submitted"

    def to_json(self, now: float, files_url: str) -> dict[str, Any]:
        status = self.status(now)
        updated = self.created_ms + int(1000 * (min(now, self.done_at) - self.started))
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": status,
            "task_status_msg": self.fail_message if status == "failed" else "",
            "task_info": {"external_task_id": self.external_task_id} if self.external_task_id
            else {},
            "created_at": self.created_ms,
            "updated_at": updated,
        }
        if status == "succeed" and self.units is not None:
            data["final_unit_deduction"] = billing.text(self.units)
        if status == "succeed":
            data["task_result"] = {"videos": [{
                "id": f"v-{self.task_id}",
                "url": f"{files_url}/files/{self.task_id}.mp4",
                "duration": str(self.seconds()),
            }]}
        return data

    def seconds(self) -> int:
        settings = self.body.get("settings")
        value = settings.get("duration", 5) if isinstance(settings, dict) else self.body.get("duration", "5")
        return int(value)


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0  # creates repeating an external_task_id already used
    paid_duplicates: int = 0  # accepted tasks with the same content as an earlier accepted one
    polls_single: int = 0
    polls_external: int = 0
    polls_list: int = 0
    peak_parallel: int = 0
    peak_per_model: dict[str, int] = field(default_factory=dict)  # the same, per model
    downloads: int = 0
    lookups_ignored: int = 0  # ?external_task_id= answered with a plain list page
    foreign_polled: set[str] = field(default_factory=set)  # other systems' tasks asked for by id
    wrong_adoptions: int = 0  # rows whose task does not carry their key (the last ``audit``)
    foreign_adopted: int = 0  # ... of them, rows holding another system's task
    rejected: dict[str, int] = field(default_factory=dict)


class Account:
    """One Kling account: its tasks, its limits, and what happened to it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tasks: dict[str, SimTask] = {}
        self.by_external: dict[str, str] = {}
        self._listed: list[SimTask] = []  # every task, oldest first (by created_ms)
        self.counters = Counters()
        self._contents: set[str] = set()
        self._active: list[SimTask] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(config.seed)
        self._tokens = float("inf")  # a full bucket, capped at the first request
        self._refilled = time.monotonic()
        self._foreign_rng = random.Random(f"foreign-{config.seed}")
        self._foreign = 0
        self._holding: list[SimTask] = []  # other systems' running tasks, one slot each
        self.add_foreign(config.foreign_tasks)
        self.hold_slots(config.foreign_slots)

    # -- limits ---------------------------------------------------------------------------------

    def reject(self, error: SimError) -> SimError:
        self.counters.rejected[error.reason] = self.counters.rejected.get(error.reason, 0) + 1
        return error

    def take_token(self) -> None:
        """Spend one request of the rate budget, or raise 1302 (a token bucket, burst = rps)."""
        rps = self.config.rps
        if not rps:
            return
        now = time.monotonic()
        burst = max(1.0, rps)
        self._tokens = min(burst, self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        wait = (1.0 - self._tokens) / rps
        raise self.reject(SimError(1302, retry_after=max(1, math.ceil(wait))
                                   if self.config.retry_after else None, reason="rate_limit"))

    def running(self, now: float | None = None) -> int:  # (and drops ended tasks)
        self._active = [t for t in self._active if t.done_at > (time.monotonic() if now is None else now)]
        return len(self._active)

    # -- create ---------------------------------------------------------------------------------

    def validate(self, kind: str, body: Any) -> None:
        """Raise 1201 naming the field (1203 for a retired model), as Kling does, for a body it
        would refuse (``kling_bodies``)."""
        try:
            bodies.check_legacy(kind, body, self.config.retired)
        except bodies.Refusal as refusal:
            raise self.reject(SimError(refusal.code, refusal.message, reason=refusal.reason)) from None

    def create(self, kind: str, body: dict[str, Any], files_url: str) -> SimTask:
        cfg = self.config
        self.validate(kind, body)
        prompt = str(body.get("prompt") or "")
        if cfg.blocked_marker and cfg.blocked_marker in prompt:
            raise self.reject(SimError(1301, "Failure to pass the risk control system: the "
                                       "prompt contains blocked content", reason="policy"))
        return self.accept(kind, body, body.get("external_task_id"), body.get("model_name", "kling-v1"),
                            prompt, {k: v for k, v in body.items()
                                     if k not in ("external_task_id", "callback_url")})

    def accept(self, kind: str, body: dict[str, Any], ext: Any, model: str, prompt: str,
                content: Any, design: str = "legacy") -> SimTask:
        """The checks every create passes after its body is valid, then the task itself."""
        cfg = self.config
        if ext and ext in self.by_external:
            self.counters.duplicates += 1
            raise self.reject(SimError(1201, f"Invalid parameters: external_task_id {ext!r} "
                                       "already exists (it must be unique per account)",
                                       reason="duplicate"))
        if cfg.allowed_models is not None and model not in cfg.allowed_models:
            raise self.reject(SimError(1103, f"No permission to use model {model}",
                                       reason="model_denied"))
        if cfg.max_tasks is not None and self.counters.accepted >= cfg.max_tasks:
            raise self.reject(SimError(1102, reason="balance"))
        now = time.monotonic()
        self.running(now)
        busy = [t for t in self._active if t.model == model or not cfg.parallel_per_model]
        if len(busy) + len(self._holding) >= cfg.max_parallel:
            raise self.reject(SimError(1303, reason="parallel_limit"))
        latency = max(0.0, cfg.latency * (1 + cfg.jitter * self._rng.uniform(-1, 1)))
        task = SimTask(
            task_id=f"{800000000000000000 + next(self._ids)}",
            kind=kind, body=body, external_task_id=ext,
            created_ms=int(time.time() * 1000), started=now,
            processing_at=now + latency * cfg.queue_share, done_at=now + latency,
            fails=bool(cfg.fail_marker and cfg.fail_marker in prompt), design=design, model=model,
            units=billing.per_task(design, model, body, cfg.deduction_scale),
        )
        if task.fails:
            task.fail_message = "Video generation failed (marked prompt)"
        self._store(task)
        self._active.append(task)
        self.counters.accepted += 1
        self.counters.peak_parallel = max(self.counters.peak_parallel, len(self._active))
        peaks, mine = self.counters.peak_per_model, sum(t.model == model for t in self._active)
        peaks[model] = max(peaks.get(model, 0), mine)
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        if digest in self._contents:
            self.counters.paid_duplicates += 1
        self._contents.add(digest)
        return task

    # -- the newer design -----------------------------------------------------------------------

    def audit(self, rows: dict[str, str]) -> dict[str, Any]:
        """A client's record ``{row key: task id}`` against the account: the rows whose task does
        not exist or does not carry the row's key (wrong adoptions), and how many of those hold
        another system's task. The counters keep the last audit's figures."""
        wrong = sorted(key for key, task_id in rows.items()
                       if (task := self.tasks.get(str(task_id))) is None or task.external_task_id != key)
        foreign = sum(1 for key in wrong if (t := self.tasks.get(str(rows[key]))) is not None and t.foreign)
        self.counters.wrong_adoptions, self.counters.foreign_adopted = len(wrong), foreign
        return {"rows": len(rows), "wrong": wrong, "wrong_adoptions": len(wrong),
                "foreign_adopted": foreign}

    def touched(self, task: SimTask) -> None:
        """A task asked for by its id (or its video fetched): another system's counts as adopted."""
        if task.foreign:
            self.counters.foreign_polled.add(task.task_id)

    def _store(self, task: SimTask) -> None:
        self.tasks[task.task_id] = task
        if task.external_task_id:
            self.by_external[task.external_task_id] = task.task_id
        bisect.insort(self._listed, task, key=lambda t: t.created_ms)

    def add_foreign(self, total: int) -> None:
        """Top the account up to ``total`` tasks of other systems, older than every task so far."""
        rng, now, now_ms = self._foreign_rng, time.monotonic(), int(time.time() * 1000)
        oldest = min((t.created_ms for t in self.tasks.values()), default=now_ms)
        for i in range(self._foreign, total):
            age = (oldest - now_ms) / 1000 - 60.0 * (i - self._foreign + 1)  # seconds, < 0
            ext = (None, f"order-{i:05d}", f"vb-{rng.getrandbits(128):032x}")[i % 3]
            fails = rng.random() < 0.1
            task = SimTask(
                task_id=f"{700000000000000000 + i}", kind=KINDS[1] if i % 4 == 3 else KINDS[0],
                body={"model_name": "kling-v2-6", "prompt": f"another system's clip {i}"},
                external_task_id=ext, created_ms=now_ms + int(age * 1000), started=now + age,
                processing_at=now + age + 1, done_at=now + age + 30, fails=fails,
                fail_message="Video generation failed" if fails else "", foreign=True)
            self._store(task)
        self._foreign = max(self._foreign, total)

    def hold_slots(self, total: int) -> None:
        """Let other systems run ``total`` tasks on the account (never ending), one slot each."""
        now, now_ms = time.monotonic(), int(time.time() * 1000)
        while len(self._holding) < total:
            i = len(self._holding)
            task = SimTask(
                task_id=f"{600000000000000000 + i}", kind=KINDS[0],
                body={"model_name": "kling-v2-6", "prompt": f"another system's long job {i}"},
                external_task_id=f"job-{i:05d}", created_ms=now_ms - 1000, started=now - 1.0,
                processing_at=now - 0.5, done_at=now + 10.0 ** 9, fails=False, foreign=True)
            self._store(task)
            self._holding.append(task)
        for task in self._holding[total:]:  # the other system's jobs end
            task.done_at = min(task.done_at, now)
        self._holding = self._holding[:total]

    # -- queries --------------------------------------------------------------------------------

    def get(self, kind: str, task_id: str) -> SimTask:
        task = self.tasks.get(task_id)
        if task is None or task.kind != kind or task.design != "legacy":
            raise self.reject(SimError(1203, reason="not_found"))
        return task

    def get_external(self, kind: str, external_task_id: str) -> SimTask:
        return self.get(kind, self.by_external.get(external_task_id, ""))

    def tasks_in_order(self) -> list[SimTask]:
        return list(self._listed)

    def page(self, kind: str, number: int, size: int) -> list[SimTask]:
        if not (1 <= number <= 1000 and 1 <= size <= 500):
            raise self.reject(SimError(1201, "Invalid parameters: pageNum must be 1-1000 and "
                                       "pageSize 1-500", reason="invalid"))
        ordered = self._listed if self.config.list_order == "oldest" else reversed(self._listed)
        tasks = [t for t in ordered if t.kind == kind and t.design == "legacy"]
        return tasks[(number - 1) * size:number * size]

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        states: dict[str, int] = {}
        busy = 0.0  # slot-seconds the finished tasks held: the ideal run's total work
        lengths: list[float] = []  # what each finished task took, in creation order
        for task in self.tasks.values():
            if task.foreign:
                continue
            state = task.status(now)
            states[state] = states.get(state, 0) + 1
            if now >= task.done_at:
                busy += task.done_at - task.started
                lengths.append(round(task.done_at - task.started, 4))
        c = self.counters
        return {
            "requests": c.requests, "accepted": c.accepted, "duplicates": c.duplicates,
            "paid_duplicates": c.paid_duplicates, "rejected": dict(c.rejected),
            "polls_single": c.polls_single, "polls_external": c.polls_external,
            "polls_list": c.polls_list, "polls": c.polls_single + c.polls_list,
            "lookups_ignored": c.lookups_ignored, "foreign_tasks": self._foreign,
            "foreign_slots": len(self._holding), "foreign_polled": len(c.foreign_polled),
            "wrong_adoptions": c.wrong_adoptions, "foreign_adopted": c.foreign_adopted,
            "peak_parallel": c.peak_parallel, "peak_per_model": dict(c.peak_per_model),
            "current_parallel": self.running(now),
            "downloads": c.downloads, "tasks": states, "task_seconds": round(busy, 3),
            "task_lengths": lengths,
            "succeeded": states.get("succeed", 0), "failed": states.get("failed", 0),
        }
