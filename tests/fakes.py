"""An in-memory provider whose behaviour per row is scripted by markers in the prompt.

Markers: ``[transient:N]`` first N submits fail before reaching the provider; ``[lost]`` the first
submit is accepted but its answer is lost; ``[reject]`` permanent rejection; ``[genfail]`` the task
ends failed; ``[slots:N]`` first N submits answer "slots busy"; ``[rate:N]`` first N answer "too fast";
``[auth]`` credentials refused; ``[account]`` balance exhausted; ``[pollflaky:N]`` first N polls fail;
``[lostquiet]`` the first submit is accepted but answers "nothing was created" (a provider that
misreports); ``[vanish]`` the first submit's answer is lost *and* nothing was created.

How the provider answers lookups is set per instance: ``lookup`` = "answered" (the truth),
"refused" (a permanent error, as Kling's 1201 on an unsupported parameter), "transient" (always a
transient error) or "blind" (always "no such task", even when there is one); ``listing`` = None (it
cannot list tasks), "complete", "incomplete" or "fails"; ``duplicate`` = "adopt" (a resubmitted key
returns its task) or "refuse" (raises KeyAlreadyUsed).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import videobatch
from videobatch._jobs import Job
from videobatch.errors import (
    AccountError,
    AuthError,
    KeyAlreadyUsed,
    NotFoundError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from videobatch.providers.base import Limits, PollHint, Provider, ScanResult, TaskState, TaskStatus, Video
from videobatch.request import VideoRequest


def _marker(prompt: str, name: str) -> int:
    m = re.search(r"\[" + name + r"(?::(\d+))?\]", prompt)
    if not m:
        return 0
    return int(m.group(1) or 1)


class ScriptedProvider(Provider):
    name = "scripted"

    def __init__(self, *, latency: float = 0.05, max_parallel: int = 4, max_rps: float | None = None,
                 lookup: str = "answered", listing: str | None = None, duplicate: str = "adopt") -> None:
        self.latency = latency
        self.lookup = lookup
        self.listing = listing
        self.duplicate = duplicate
        self.find_calls = 0
        self.scan_calls = 0
        self.limits = Limits(max_parallel=max_parallel, max_rps=max_rps)
        self.poll_hint = PollHint(first_poll=latency, min_interval=0.01, max_interval=0.05, growth=1.5)
        self.tasks: dict[str, dict] = {}
        self.by_key: dict[str, str] = {}
        self.submit_calls: Counter[str] = Counter()  # per idempotency key, every call that reached us
        self.accepted: Counter[str] = Counter()  # per idempotency key, tasks created
        self.polls = 0
        self.active_peak = 0

    def _active(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self.tasks.values() if t["ready"] > now)

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        await asyncio.sleep(0)
        p = request.prompt
        n = self.submit_calls[idempotency_key]
        if _marker(p, "transient") > n:
            self.submit_calls[idempotency_key] += 1
            raise TransientError("connection refused", maybe_accepted=False)
        self.submit_calls[idempotency_key] += 1
        if _marker(p, "auth"):
            raise AuthError("bad key")
        if _marker(p, "account"):
            raise AccountError("resource pack exhausted")
        if _marker(p, "reject"):
            raise RejectedError("content policy")
        if _marker(p, "slots") >= self.submit_calls[idempotency_key]:
            raise SlotsBusy("parallel limit", retry_after=0.01)
        if _marker(p, "rate") >= self.submit_calls[idempotency_key]:
            raise RateLimited("too fast", retry_after=0.01)
        if _marker(p, "vanish") and self.submit_calls[idempotency_key] == 1:
            raise TransientError("answer lost (nothing was created)", maybe_accepted=True)
        if idempotency_key in self.by_key:
            if self.duplicate == "refuse":
                raise KeyAlreadyUsed(f"external id {idempotency_key} already exists", request_id="req-dup")
            return await self.status(self.by_key[idempotency_key])
        task_id = f"t{len(self.tasks)}"
        self.tasks[task_id] = {"key": idempotency_key, "prompt": p, "ready": time.monotonic() + self.latency,
                               "created": time.time(), "polls": 0}
        self.by_key[idempotency_key] = task_id
        self.accepted[idempotency_key] += 1
        self.active_peak = max(self.active_peak, self._active())
        if _marker(p, "lost") and self.accepted[idempotency_key] == 1:
            raise TransientError("answer lost", maybe_accepted=True)
        if _marker(p, "lostquiet") and self.accepted[idempotency_key] == 1:
            raise TransientError("server error, nothing created", maybe_accepted=False)
        return TaskStatus(task_id, TaskState.QUEUED, created_at=self.tasks[task_id]["created"])

    async def status(self, task_id: str) -> TaskStatus:
        self.polls += 1
        task = self.tasks.get(task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id}")
        task["polls"] += 1
        if _marker(task["prompt"], "pollflaky") >= task["polls"]:
            raise TransientError("poll timed out")
        if time.monotonic() < task["ready"]:
            return TaskStatus(task_id, TaskState.RUNNING, created_at=task["created"])
        if _marker(task["prompt"], "genfail"):
            return TaskStatus(task_id, TaskState.FAILED, message="generation failed", created_at=task["created"])
        video = Video(f"https://cdn.test/{task_id}.mp4", task_id, 5.0)
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(video,),
                          created_at=task["created"], expires_at=task["created"] + 30 * 86400)

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        self.find_calls += 1
        await asyncio.sleep(0)
        if self.lookup == "refused":
            raise RejectedError("Invalid parameters: external_task_id is not supported", provider_code=1201,
                                request_id="req-lookup")
        if self.lookup == "transient":
            raise TransientError("lookup timed out", maybe_accepted=False)
        task_id = self.by_key.get(idempotency_key)
        if task_id is None or self.lookup == "blind":
            return None
        return await self.status(task_id)

    async def scan(self, keys, since: float) -> ScanResult | None:
        self.scan_calls += 1
        await asyncio.sleep(0)
        if self.listing is None:
            return None
        if self.listing == "fails":
            raise TransientError("list endpoint timed out", maybe_accepted=False)
        found = {}
        for key in keys:
            task_id = self.by_key.get(key)
            if task_id is not None and self.tasks[task_id]["created"] >= since:
                found[key] = await self.status(task_id)
        return ScanResult(found=found, complete=self.listing == "complete")


class ListProvider(Provider):
    """One list request answers for every task (``batch_polling``). A task in ``ends`` succeeds
    once its time (epoch seconds) has come, any other at once; ``calls`` records each request's
    time, tasks and riders."""

    name = "list"
    limits = Limits(max_parallel=10)
    poll_hint = PollHint(first_poll=50.0, min_interval=1.0, max_interval=60.0)
    batch_polling = True

    def __init__(self, ends: dict[str, float] | None = None) -> None:
        self.ends = ends or {}
        self.calls: list[tuple[float, list[str], list[str]]] = []

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        raise NotImplementedError

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        return None

    async def status(self, task_id: str) -> TaskStatus:
        raise AssertionError("single GETs are not expected here")

    async def status_many(self, task_ids, riders=()):
        now = time.time()
        self.calls.append((now, list(task_ids), list(riders)))
        done = {t: self.ends.get(t, now) for t in [*task_ids, *riders]}
        return {t: TaskStatus(t, TaskState.SUCCEEDED, videos=(Video("u"),), finished_at=end)
                if now >= end else TaskStatus(t, TaskState.RUNNING) for t, end in done.items()}


def adopt_wrongly(checkpoint: Path, base_url: str,
                  wrong: Callable[[list[Job]], dict[str, str]]) -> dict[str, str]:
    """Leave in ``checkpoint`` what a mistaken adoption leaves behind: the rows ``wrong(jobs)``
    names completed with those task ids, not their own; returns them (row key -> task id)."""
    batch = videobatch.Batch.from_checkpoint(checkpoint, progress=False, base_url=base_url)
    tasks = wrong(batch.jobs)
    for job in batch.jobs:
        if job.key in tasks:
            record = {"k": job.key, "s": "completed", "t": time.time(), "task_id": tasks[job.key]}
            job.apply(record)
            batch.store.append(record)
    asyncio.run(batch.store.close(batch.jobs))
    return tasks
