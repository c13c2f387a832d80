"""The built-in offline provider ``local``: the provider interface on a simulated hosted account.

``LocalProvider`` answers ``submit`` / ``status`` / ``find`` / ``scan`` the way a remote video API
would, on top of the account records kept on disk by ``videobatch.providers.local.account`` (tasks,
the submissions log, slots, crash recovery). This module decides *how* the simulated service
behaves: how long a task takes (``latency``, ``jitter``), which faults it injects, how it looks
tasks up, and the real small MP4 each finished task gets (``videobatch.providers.local.render``),
so downloads, previews and verification work end to end.

Faults are injected deterministically from the idempotency key (and the attempt number for
transient errors), so a test run is reproducible: ``failure_rate`` (task ends ``failed``),
``transient_rate`` (submit refused before accepting, ``maybe_accepted=False``; a retry can pass),
``lost_answer_rate`` (the call that creates the task then raises ``TransientError("answer lost",
maybe_accepted=True)``: the runner must reconcile with ``find``), prompts containing ``[reject]``
(``RejectedError``), and ``max_parallel`` (``SlotsBusy`` while that many tasks are unfinished).

Lookup by idempotency key (``find``) is served as ``lookup`` says: ``answered`` (default: the task,
or None) or ``refused``, a provider whose lookup cannot answer: ``find`` raises ``RejectedError``
(code ``local-lookup-refused``, not ``NotFoundError``: it proves nothing about the key), and a
submit with a key already used raises ``KeyAlreadyUsed`` instead of returning the task it cannot
look up. The listing (``scan``) keeps working, newest first back to ``since``; ``list_limit`` caps
how many of the newest tasks a listing reaches (0: all), so a scan can also come back incomplete.

Rendered videos are always fsynced (``render_clip``); they are few and slow anyway. Finished
statuses are cached; a submit is about ten syscalls.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ...errors import ConfigError, KeyAlreadyUsed, NotFoundError, RejectedError, SlotsBusy, TransientError
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, ScanResult, TaskState, TaskStatus, Video
from .account import Account, StoredTask, default_root, read_submissions, submission_counts, task_id_for
from .render import ASPECT_RATIOS, render_clip

MODELS_FILE = Path(__file__).with_name("models.toml")


class LocalOptions(BaseModel):
    """The local provider's options (it takes Kling's ``mode``, so Kling-shaped tables run here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str | None = None


# read_submissions / submission_counts / task_id_for are the account's; re-exported here because
# callers imported them from this module before the account had one of its own.
__all__ = ["LOOKUPS", "LocalProvider", "default_root", "read_submissions", "submission_counts", "task_id_for"]

LOOKUPS = ("answered", "refused")  # how ``find`` is served
REJECT_MARKER = "[reject]"
FAILURE_MESSAGE = "simulated generation failure"
RESULT_TTL = 30 * 24 * 3600.0  # result URLs "expire" 30 days after creation
_PLACEHOLDER = "placeholder"
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def _fraction(*parts: str) -> float:
    """A deterministic number in [0, 1) from the parts (a seeded coin for fault injection)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# -- option coercion (values may arrive as strings from ``-P key=value``) ----------------------


def _as_float(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        f = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigError(f"local provider: {name} must be a number, got {value!r}") from None
    if not (f >= lo and (hi is None or f <= hi)):
        bound = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"local provider: {name} must be {bound}, got {value!r}")
    return f


def _as_int(name: str, value: Any, lo: int) -> int:
    f = _as_float(name, value, lo)
    if not f.is_integer():
        raise ConfigError(f"local provider: {name} must be a whole number, got {value!r}")
    return int(f)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigError(f"local provider: {name} must be true or false, got {value!r}")


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in choices:
        raise ConfigError(f"local provider: {name} must be one of {', '.join(choices)}, got {value!r}")
    return str(text)


class LocalProvider(Account, Provider):
    """An offline provider that simulates a hosted account on disk and renders real small MP4s.

    All options are keyword-only and accept strings (``-P latency=0.5``):
    ``root`` directory of the simulated account; ``latency`` seconds a task takes, varied by
    ``jitter`` (a fraction, deterministic per key); ``failure_rate``, ``transient_rate``,
    ``lost_answer_rate`` fault fractions (see module doc); ``max_parallel`` account slots;
    ``render`` (False: no per-task MP4, every result points at one shared placeholder clip);
    ``seconds`` / ``fps`` of rendered clips; ``submit_delay`` seconds each submit takes (simulated
    network); ``fsync`` make task files survive a machine crash (slower); ``lookup`` ``answered``
    or ``refused`` (``find`` cannot answer; see module doc); ``list_limit`` how many of the newest
    tasks a listing (``scan``) reaches, 0 for all.

    The account's records (``Account``) are inherited rather than held, so the provider and the
    "server" it simulates share one object, as they share one process. One instance serves one
    event loop at a time (like an HTTP client); any number of instances and processes may share a
    ``root``.
    """

    name: ClassVar[str] = "local"
    # Like a provider with a client-chosen id, its lookup and a task list (``lookup="refused"``
    # makes the lookup refuse, as some real ones do).
    capabilities: ClassVar[Capabilities] = Capabilities(idempotency_key=True, lookup=True, listing=True)
    option_schema = LocalOptions
    models_file = MODELS_FILE

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] | None = None,
        latency: float | str = 3.0,
        jitter: float | str = 0.2,
        failure_rate: float | str = 0.0,
        max_parallel: int | str = 5,
        render: bool | str = True,
        seconds: float | str = 2.0,
        fps: int | str = 12,
        submit_delay: float | str = 0.0,
        transient_rate: float | str = 0.0,
        lost_answer_rate: float | str = 0.0,
        fsync: bool | str = False,
        lookup: str = "answered",
        list_limit: int | str = 0,
    ) -> None:
        self.latency = _as_float("latency", latency, 0.0)
        self.jitter = _as_float("jitter", jitter, 0.0, 1.0)
        self.failure_rate = _as_float("failure_rate", failure_rate, 0.0, 1.0)
        self.max_parallel = _as_int("max_parallel", max_parallel, 1)
        self.render = _as_bool("render", render)
        self.seconds = _as_float("seconds", seconds, 0.001, 600.0)
        self.fps = _as_int("fps", fps, 1)
        self.submit_delay = _as_float("submit_delay", submit_delay, 0.0)
        self.transient_rate = _as_float("transient_rate", transient_rate, 0.0, 1.0)
        self.lost_answer_rate = _as_float("lost_answer_rate", lost_answer_rate, 0.0, 1.0)
        self.lookup = _as_choice("lookup", lookup, LOOKUPS)
        self.list_limit = _as_int("list_limit", list_limit, 0)
        root_path = Path(root).expanduser() if root not in (None, "") else default_root()
        # file URLs and paths must not depend on a later chdir
        super().__init__(root_path.absolute(), fsync=_as_bool("fsync", fsync))

        self.limits = Limits(max_parallel=self.max_parallel, max_rps=None)
        self.poll_hint = PollHint(
            first_poll=max(0.01, self.latency * (1 - self.jitter)),
            min_interval=max(0.01, self.latency * 0.02),
            max_interval=max(0.05, self.latency * 0.25),
            growth=1.5,
        )
        self._done: dict[str, TaskStatus] = {}
        self._attempts: dict[str, int] = {}
        self._rendered: dict[str, str] = {}  # clip name -> file URI, once the clip exists
        self._renders: dict[str, asyncio.Task[None]] = {}

    # -- the provider interface -----------------------------------------------------------------

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        self._ensure_ready()
        if self.submit_delay:
            await asyncio.sleep(self.submit_delay)
        key = idempotency_key
        task_id = task_id_for(key)
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt

        if self.transient_rate and _fraction(key, "transient", str(attempt)) < self.transient_rate:
            self._log(key, task_id, attempt, "transient", request.prompt)
            raise TransientError(
                "simulated transient failure: service unavailable, nothing was created",
                maybe_accepted=False, status_code=503,
            )
        if self._exists(task_id):
            return await self._duplicate(key, task_id, attempt, request)
        if REJECT_MARKER in request.prompt.lower():
            self._log(key, task_id, attempt, "rejected", request.prompt)
            raise RejectedError(
                "content policy: prompt contains a blocked term", provider_code="local-reject",
                status_code=400,
            )

        latency = self.latency * (1 + self.jitter * (2 * _fraction(key, "jitter") - 1))
        fails = _fraction(key, "fail") < self.failure_rate
        lost = bool(self.lost_answer_rate) and _fraction(key, "lost") < self.lost_answer_rate
        with self._account_lock():
            now = self._clock()
            busy, earliest = self._busy_slots(now)
            if busy >= self.max_parallel:
                self._log(key, task_id, attempt, "slots_busy", request.prompt)
                raise SlotsBusy(
                    f"all {self.max_parallel} parallel task slots of the local account are busy",
                    retry_after=max(0.01, earliest - now), status_code=429,
                )
            values = self.resolve(request).values
            task = StoredTask(
                task_id=task_id,
                idempotency_key=key,
                prompt=request.prompt,
                aspect_ratio=str(values.get("aspect_ratio", "16:9")),
                duration=int(values.get("duration", 5)),
                created_at=now,
                ready_at=now + latency,
                fails=fails,
            )
            created = self._accept(task, values, attempt, lost)
        if not created:  # another process created it since our check
            return await self._duplicate(key, task_id, attempt, request)
        if lost:
            raise TransientError("answer lost", maybe_accepted=True)
        return TaskStatus(
            task_id=task_id, state=TaskState.QUEUED, created_at=task.created_at,
            idempotency_key=key,
        )

    async def status(self, task_id: str) -> TaskStatus:
        self._ensure_ready()
        return await self._status(self._load(task_id), self._clock())

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        self._ensure_ready()
        if self.lookup == "refused":
            raise RejectedError(
                "lookup by idempotency key is not supported by this account (lookup=refused); "
                "list the tasks instead", provider_code="local-lookup-refused", status_code=400,
            )
        try:
            task = self._load(task_id_for(idempotency_key))
        except NotFoundError:
            return None
        return await self._status(task, self._clock())

    async def scan(self, keys: Collection[str], since: float) -> ScanResult:
        """List the account's tasks newest first back to ``since``; keep those with exactly a key
        of ``keys``. Complete unless ``list_limit`` stopped the listing before it reached ``since``.
        """
        self._ensure_ready()
        wanted = set(keys)
        listing = self._listing()
        reached = listing if not self.list_limit else listing[: self.list_limit]
        complete = len(reached) == len(listing) or reached[-1].created_at < since
        now = self._clock()
        found: dict[str, TaskStatus] = {}
        for task in reached:
            if task.created_at < since:
                break
            if task.idempotency_key in wanted:
                found[task.idempotency_key] = await self._status(task, now)
        return ScanResult(found=found, complete=complete)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "seconds": self.seconds, "fps": self.fps,
                "render": self.render}

    async def aclose(self) -> None:
        self._close_files()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} root={str(self.root)!r} "
            f"latency={self.latency} max_parallel={self.max_parallel}>"
        )

    # -- how the simulated service answers -----------------------------------------------------

    async def _duplicate(
        self, key: str, task_id: str, attempt: int, request: VideoRequest
    ) -> TaskStatus:
        """The key was used before: adopt the existing task, as the interface asks (or, when the
        lookup is refused, say the key is taken, as a provider that cannot look it up must)."""
        self._log(key, task_id, attempt, "duplicate", request.prompt)
        if self.lookup == "refused":
            raise KeyAlreadyUsed(
                "a task with this idempotency key already exists", provider_code="local-duplicate-key",
                status_code=409,
            )
        found = await self.find(key)
        if found is None:  # cannot happen: tasks are never deleted
            raise NotFoundError(f"task {task_id} vanished", provider_code="local-not-found")
        return found

    async def _status(self, task: StoredTask, now: float) -> TaskStatus:
        if now < task.ready_at:
            started = task.created_at + 0.1 * (task.ready_at - task.created_at)
            return TaskStatus(
                task_id=task.task_id,
                state=TaskState.QUEUED if now < started else TaskState.RUNNING,
                created_at=task.created_at,
                idempotency_key=task.idempotency_key,
            )
        if task.fails:
            return TaskStatus(
                task_id=task.task_id, state=TaskState.FAILED, message=FAILURE_MESSAGE,
                created_at=task.created_at, finished_at=task.ready_at,
                idempotency_key=task.idempotency_key,
            )
        done = self._done.get(task.task_id)
        if done is not None:
            return done
        url = await self._video(task)
        done = TaskStatus(
            task_id=task.task_id,
            state=TaskState.SUCCEEDED,
            videos=(Video(url=url, id=task.task_id, duration=float(task.duration)),),
            created_at=task.created_at,
            finished_at=task.ready_at,
            expires_at=task.created_at + RESULT_TTL,
            idempotency_key=task.idempotency_key,
        )
        self._done[task.task_id] = done
        return done

    async def _video(self, task: StoredTask) -> str:
        """The file URI of the task's clip, rendered once (concurrent callers share one render)."""
        if self.render:
            name, prompt = task.task_id, task.prompt
            aspect = task.aspect_ratio if task.aspect_ratio in ASPECT_RATIOS else "16:9"
        else:
            name, prompt, aspect = _PLACEHOLDER, "videobatch local placeholder", "16:9"
        url = self._rendered.get(name)
        if url is not None:
            return url
        path = self._videos_dir / f"{name}.mp4"
        loop = asyncio.get_running_loop()
        job = self._renders.get(name)
        if job is None or job.get_loop() is not loop:
            job = loop.create_task(asyncio.to_thread(self._render_file, path, prompt, aspect))
            job.add_done_callback(_consume_exception)
            self._renders[name] = job
        try:
            await asyncio.shield(job)
        except Exception as exc:  # disk full, encoder error: the "server" failed, try again later
            raise TransientError(f"local provider could not render {path.name}: {exc}") from exc
        finally:
            if job.done() and self._renders.get(name) is job:
                del self._renders[name]
        url = self._rendered[name] = path.as_uri()
        return url

    def _render_file(self, path: Path, prompt: str, aspect: str) -> None:
        if path.exists():  # rendered by an earlier process (render_clip is atomic)
            return
        render_clip(path, prompt, seconds=self.seconds, fps=self.fps, aspect_ratio=aspect)


def _consume_exception(job: asyncio.Task[None]) -> None:
    """Mark a render's failure as seen even if every waiter was cancelled (no loop warning)."""
    if not job.cancelled():
        job.exception()
