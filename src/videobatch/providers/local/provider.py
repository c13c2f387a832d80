"""The built-in offline provider ``local``: a hosted video-generation account simulated on disk.

It behaves like a remote service that outlives its clients: tasks live in files under ``root``, so a
client process can be killed (``kill -9``) and a new process resumes against the same "account",
finds its tasks by idempotency key, and the number of paid submissions can be counted afterwards
(``submissions.log``, see ``read_submissions`` / ``submission_counts``). Finished tasks get a real
small MP4 (``videobatch.providers.local.render``), so downloads, previews and verification work end to end.

Layout of ``root`` (default ``$VIDEOBATCH_LOCAL_DIR``, else ``~/.cache/videobatch/local``)::

    tasks/<task_id>.json   one accepted task; task_id = "lt-" + sha256(idempotency_key)[:20]
    active/<ready_ns>.<task_id>   one entry per unfinished task: the account's busy slots
    tmp/                   task files being written (never read)
    videos/<task_id>.mp4   the rendered clip (videos/placeholder.mp4 when render=False)
    submissions.log        one JSON line per submit call that reached the "server"
    account.lock           serialises the slot check and task creation across processes

Faults are injected deterministically from the idempotency key (and the attempt number for
transient errors), so a test run is reproducible: ``failure_rate`` (task ends ``failed``),
``transient_rate`` (submit refused before accepting, ``maybe_accepted=False``; a retry can pass),
``lost_answer_rate`` (the call that creates the task then raises ``TransientError("answer lost",
maybe_accepted=True)``: the runner must reconcile with ``find``), prompts containing ``[reject]``
(``RejectedError``), and ``max_parallel`` (``SlotsBusy`` while that many tasks are unfinished).

Atomic, never-partial task files: the JSON is written completely to ``tmp/`` and then hard-linked
(``os.link``) onto ``tasks/<task_id>.json``. ``link`` fails with ``EEXIST`` if the name exists, so
it is the same atomic duplicate detection as ``O_CREAT|O_EXCL`` across processes, but the final name
only ever appears with its full content: a reader can never see a created-but-unwritten task (as it
could between ``open(O_EXCL)`` and ``write``). A crash leaves at worst an orphan in ``tmp/``.

Durability and speed: tasks and log lines must survive the *client* process being killed, which the
OS page cache already guarantees once ``write``/``link`` return; ``fsync`` would only add
protection against a machine crash, at a cost of milliseconds per submit that would cap the
simulated API far below real ones. So tasks are not fsynced by default (``fsync=True`` fsyncs each
task file and the ``tasks/`` directory). Rendered videos are always fsynced (``render_clip``), they
are few and slow anyway. Log lines are a single ``os.write`` on an ``O_APPEND`` descriptor, so lines
from concurrent processes never interleave.

Slots: the account's slot index lives on disk, in ``active/``: after the task file is linked into
place, the temp file is renamed to ``active/<ready_at in ns>.<task_id>`` (no extra file is
created). A submit lists that small directory under an ``flock`` on ``account.lock``, counts the
entries not yet due, removes the due ones, and creates its task while still holding the lock. So
every instance and process sharing a root sees one exact count, tasks of a killed earlier process
keep their slots until they finish (as on a real account), and first use needs no scan of
``tasks/``. (Without ``fcntl``, e.g. on Windows, the cross-process check is best-effort.)

Crashes inside the "server": here the server runs in the client's process, so a ``kill -9`` can
land between accepting a task (the link) and logging it. Each step is ordered so the temp file
survives until the task is logged and holds its slot; the next instance to start on the root
finds such an orphan (it is the same inode as the task file) and adds the missing "accepted"
line (marked ``recovered``) and slot entry. So ``submission_counts`` counts every paid task
exactly once even across kills, which is what the never-pay-twice tests rely on.

Speed: a task is read from disk at most once per process and cached, finished statuses are
cached, hot paths use plain string paths; a submit is about ten syscalls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...errors import ConfigError, NotFoundError, RejectedError, SlotsBusy, TransientError
from ...request import VideoRequest
from ..base import Limits, PollHint, Provider, TaskState, TaskStatus, Video
from .render import ASPECT_RATIOS, render_clip

_lock_file: Callable[[int, bool], None] | None
try:
    import fcntl

    def _lock_file(fd: int, lock: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX if lock else fcntl.LOCK_UN)
except ImportError:  # pragma: no cover - Windows: no cross-process lock
    _lock_file = None

__all__ = ["LocalProvider", "default_root", "read_submissions", "submission_counts", "task_id_for"]

REJECT_MARKER = "[reject]"
FAILURE_MESSAGE = "simulated generation failure"
RESULT_TTL = 30 * 24 * 3600.0  # result URLs "expire" 30 days after creation
_PLACEHOLDER = "placeholder"
_TASK_ID = re.compile(r"lt-[0-9a-f]{20}")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def default_root() -> Path:
    """``$VIDEOBATCH_LOCAL_DIR`` if set, else ``~/.cache/videobatch/local``."""
    env = os.environ.get("VIDEOBATCH_LOCAL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "videobatch" / "local"


def task_id_for(idempotency_key: str) -> str:
    """The task id the local provider gives the task created with ``idempotency_key``."""
    return "lt-" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:20]


def _fraction(*parts: str) -> float:
    """A deterministic number in [0, 1) from the parts (a seeded coin for fault injection)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _excerpt(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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


# -- reading the "server's" records -------------------------------------------------------------


def read_submissions(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every submit call that reached the local "server" under ``root``, oldest first.

    Each entry has ``t``, ``pid``, ``idempotency_key``, ``task_id``, ``attempt``, ``outcome``
    (``accepted``, ``duplicate``, ``slots_busy``, ``transient``, ``rejected``) and ``prompt``
    (an excerpt); an accepted call whose answer was lost also has ``answer_lost: true``.
    """
    path = (Path(root).expanduser() if root is not None else default_root()) / "submissions.log"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def submission_counts(root: str | os.PathLike[str] | None = None) -> collections.Counter[str]:
    """Accepted (paid) submissions per idempotency key; any count above 1 means paying twice."""
    return collections.Counter(
        e["idempotency_key"] for e in read_submissions(root) if e.get("outcome") == "accepted"
    )


@dataclass(frozen=True, slots=True)
class _Task:
    task_id: str
    idempotency_key: str
    prompt: str
    aspect_ratio: str
    duration: int
    created_at: float
    ready_at: float
    fails: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Task:
        request = data.get("request") or {}
        return cls(
            task_id=str(data["task_id"]),
            idempotency_key=str(data["idempotency_key"]),
            prompt=str(request.get("prompt", "")),
            aspect_ratio=str(request.get("aspect_ratio", "16:9")),
            duration=int(request.get("duration", 5)),
            created_at=float(data["created_at"]),
            ready_at=float(data["ready_at"]),
            fails=bool(data["fails"]),
        )


class LocalProvider(Provider):
    """An offline provider that simulates a hosted account on disk and renders real small MP4s.

    All options are keyword-only and accept strings (``-P latency=0.5``):
    ``root`` directory of the simulated account; ``latency`` seconds a task takes, varied by
    ``jitter`` (a fraction, deterministic per key); ``failure_rate``, ``transient_rate``,
    ``lost_answer_rate`` fault fractions (see module doc); ``max_parallel`` account slots;
    ``render`` (False: no per-task MP4, every result points at one shared placeholder clip);
    ``seconds`` / ``fps`` of rendered clips; ``submit_delay`` seconds each submit takes (simulated
    network); ``fsync`` make task files survive a machine crash (slower).

    One instance serves one event loop at a time (like an HTTP client); any number of instances
    and processes may share a ``root``.
    """

    name: ClassVar[str] = "local"

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
    ) -> None:
        root_path = Path(root).expanduser() if root not in (None, "") else default_root()
        self.root = root_path.absolute()  # file URLs and paths must not depend on a later chdir
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
        self.fsync = _as_bool("fsync", fsync)

        self.limits = Limits(max_parallel=self.max_parallel, max_rps=None)
        self.poll_hint = PollHint(
            first_poll=max(0.01, self.latency * (1 - self.jitter)),
            min_interval=max(0.01, self.latency * 0.02),
            max_interval=max(0.05, self.latency * 0.25),
            growth=1.5,
        )

        self._tasks_dir = self.root / "tasks"
        self._active_dir = self.root / "active"
        self._tmp_dir = self.root / "tmp"
        self._videos_dir = self.root / "videos"
        # Hot paths build plain strings: pathlib costs more than the syscalls here.
        self._tasks_str = str(self._tasks_dir)
        self._active_str = str(self._active_dir)
        self._tmp_str = str(self._tmp_dir)
        self._clock: Callable[[], float] = time.time  # the "server's" clock; tests replace it
        self._ready = False
        self._fds: dict[str, int] = {}  # "log" / "lock" -> open descriptor
        self._closers: list[weakref.finalize[[int], LocalProvider]] = []
        self._tmp_seq = itertools.count()
        self._tasks: dict[str, _Task] = {}
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
            task = _Task(
                task_id=task_id,
                idempotency_key=key,
                prompt=request.prompt,
                aspect_ratio=request.aspect_ratio,
                duration=request.duration,
                created_at=now,
                ready_at=now + latency,
                fails=fails,
            )
            created = self._accept(task, request, attempt, lost)
        if not created:  # another process created it since our check
            return await self._duplicate(key, task_id, attempt, request)
        self._tasks[task_id] = task
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
        try:
            task = self._load(task_id_for(idempotency_key))
        except NotFoundError:
            return None
        return await self._status(task, self._clock())

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "seconds": self.seconds, "fps": self.fps,
                "render": self.render}

    async def aclose(self) -> None:
        for closer in self._closers:
            closer()  # closes the descriptor once, detaches the finalizer
        self._closers.clear()
        self._fds.clear()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} root={str(self.root)!r} "
            f"latency={self.latency} max_parallel={self.max_parallel}>"
        )

    # -- internals ------------------------------------------------------------------------------

    async def _duplicate(
        self, key: str, task_id: str, attempt: int, request: VideoRequest
    ) -> TaskStatus:
        """The key was used before: adopt the existing task, as the interface asks."""
        self._log(key, task_id, attempt, "duplicate", request.prompt)
        found = await self.find(key)
        if found is None:  # cannot happen: tasks are never deleted
            raise NotFoundError(f"task {task_id} vanished", provider_code="local-not-found")
        return found

    def _task_path(self, task_id: str) -> str:
        return os.path.join(self._tasks_str, task_id + ".json")

    def _exists(self, task_id: str) -> bool:
        # A stat of a local file; cheap enough to do inline (the whole "server" is local I/O).
        return task_id in self._tasks or os.path.exists(self._task_path(task_id))

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        for d in (self._tasks_dir, self._active_dir, self._tmp_dir, self._videos_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._ready = True

    def _recover(self) -> None:
        """Finish what a killed process left half-done in ``tmp/`` (runs at first use).

        Under the account lock no live writer is mid-way, so every file in ``tmp/`` is an orphan.
        One that is linked into ``tasks/`` belongs to an accepted task whose process died before
        logging it or taking its slot: the missing "accepted" line (``recovered: true``) and slot
        entry are added, so the log still counts every paid task exactly once. Others (died before
        the link: nothing was accepted) are deleted. Without a lock, only old files are touched.
        """
        with self._account_lock():
            try:
                names = os.listdir(self._tmp_str)
            except OSError:
                return
            logged: set[str] | None = None
            now, cutoff = self._clock(), time.time() - 60
            for name in names:
                tmp = os.path.join(self._tmp_str, name)
                with contextlib.suppress(OSError, ValueError, KeyError):
                    st = os.stat(tmp)
                    if _lock_file is None and st.st_mtime > cutoff:
                        continue
                    task_id = name.partition(".")[0]
                    try:
                        final = os.stat(self._task_path(task_id))
                    except FileNotFoundError:
                        linked = False
                    else:
                        linked = (final.st_ino, final.st_dev) == (st.st_ino, st.st_dev)
                    if not linked:
                        os.unlink(tmp)
                        continue
                    with open(tmp, "rb") as f:
                        data = json.loads(f.read())
                    task = _Task.from_json(data)
                    if logged is None:
                        logged = {str(e.get("idempotency_key"))
                                  for e in read_submissions(self.root)
                                  if e.get("outcome") == "accepted"}
                    if task.idempotency_key not in logged:
                        self._log(task.idempotency_key, task_id, None, "accepted", task.prompt,
                                  recovered=True)
                    self._settle(tmp, task, now)

    def _fd(self, name: str, path: Path, flags: int) -> int:
        """A descriptor kept open for the provider's life (closed by aclose or at collection)."""
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(path, flags | os.O_CREAT, 0o644)
            self._closers.append(weakref.finalize(self, os.close, fd))
        return fd

    @contextlib.contextmanager
    def _account_lock(self) -> Iterator[None]:
        """Serialise slot accounting and task creation across every process using this root."""
        if _lock_file is None:
            yield
            return
        fd = self._fd("lock", self.root / "account.lock", os.O_RDWR)
        _lock_file(fd, True)
        try:
            yield
        finally:
            _lock_file(fd, False)

    def _busy_slots(self, now: float) -> tuple[int, float]:
        """(unfinished tasks of the account, when the earliest of them finishes); prunes due ones."""
        busy, earliest = 0, float("inf")
        for name in os.listdir(self._active_str):
            try:
                ready_at = int(name.partition(".")[0]) / 1e9
            except ValueError:
                continue
            if ready_at > now:
                busy += 1
                earliest = min(earliest, ready_at)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._active_str, name))
        return busy, earliest

    def _accept(self, task: _Task, request: VideoRequest, attempt: int, lost: bool) -> bool:
        """Create the task (False if it already exists), log it, take its slot. Under the lock.

        Order matters for crash safety: the complete file is linked into ``tasks/`` (the moment
        of acceptance), then the "accepted" line is logged, then the temp file is moved into
        ``active/`` (or removed). A process killed after the link leaves its temp file behind,
        which ``_recover`` uses to add the missing log line and slot.
        """
        data = json.dumps({
            "task_id": task.task_id,
            "idempotency_key": task.idempotency_key,
            "request": request.model_dump(mode="json"),
            "created_at": task.created_at,
            "ready_at": task.ready_at,
            "fails": task.fails,
        }, ensure_ascii=False).encode("utf-8")
        tmp = os.path.join(self._tmp_str, f"{task.task_id}.{os.getpid()}.{next(self._tmp_seq)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, self._task_path(task.task_id))  # the moment the task is accepted
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, FileExistsError):
                return False
            raise
        if self.fsync:
            dir_fd = os.open(self._tasks_str, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._log(task.idempotency_key, task.task_id, attempt, "accepted", task.prompt,
                  answer_lost=lost)
        self._settle(tmp, task, task.created_at)
        return True

    def _settle(self, tmp: str, task: _Task, now: float) -> None:
        """Turn an accepted task's temp file into its slot entry (or drop it if already done)."""
        if task.ready_at > now:
            ready_ns = int(task.ready_at * 1e9)
            os.rename(tmp, os.path.join(self._active_str, f"{ready_ns}.{task.task_id}"))
        else:
            os.unlink(tmp)

    def _load(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is not None:
            return task
        if not _TASK_ID.fullmatch(task_id):
            raise NotFoundError(f"no task {task_id!r}", provider_code="local-not-found",
                                status_code=404)
        try:
            with open(self._task_path(task_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise NotFoundError(f"no task {task_id!r}", provider_code="local-not-found",
                                status_code=404) from None
        task = _Task.from_json(json.loads(raw))
        self._tasks[task_id] = task
        return task

    async def _status(self, task: _Task, now: float) -> TaskStatus:
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

    async def _video(self, task: _Task) -> str:
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

    def _log(
        self, key: str, task_id: str, attempt: int | None, outcome: str, prompt: str,
        **extra: Any,
    ) -> None:
        entry: dict[str, Any] = {
            "t": self._clock(), "pid": os.getpid(), "idempotency_key": key, "task_id": task_id,
            "attempt": attempt, "outcome": outcome, "prompt": _excerpt(prompt),
        }
        entry.update((k, v) for k, v in extra.items() if v)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = self._fd("log", self.root / "submissions.log", os.O_WRONLY | os.O_APPEND)
        os.write(fd, line)  # one write on O_APPEND: the line lands whole


def _consume_exception(job: asyncio.Task[None]) -> None:
    """Mark a render's failure as seen even if every waiter was cancelled (no loop warning)."""
    if not job.cancelled():
        job.exception()
