"""The local provider's simulated account on disk: task records, the submissions log, slots, locking.

This is the "server side" of ``videobatch.providers.local``: what a hosted account remembers. It
outlives its clients: tasks live in files under ``root``, so a client process can be killed
(``kill -9``) and a new process resumes against the same account, finds its tasks by idempotency
key, and the number of paid submissions can be counted afterwards (``submissions.log``, see
``read_submissions`` / ``submission_counts``). How the account answers (latency, faults, videos)
is the provider's business (``provider.py``).

Layout of ``root`` (default ``$VIDEOBATCH_LOCAL_DIR``, else ``~/.cache/videobatch/local``)::

    tasks/<task_id>.json   one accepted task; task_id = "lt-" + sha256(idempotency_key)[:20]
    active/<ready_ns>.<task_id>   one entry per unfinished task: the account's busy slots
    tmp/                   task files being written (never read)
    videos/<task_id>.mp4   the rendered clip (videos/placeholder.mp4 when render=False)
    submissions.log        one JSON line per submit call that reached the "server"
    account.lock           serialises the slot check and task creation across processes

Atomic, never-partial task files: the JSON is written completely to ``tmp/`` and then hard-linked
(``os.link``) onto ``tasks/<task_id>.json``. ``link`` fails with ``EEXIST`` if the name exists, so
it is the same atomic duplicate detection as ``O_CREAT|O_EXCL`` across processes, but the final name
only ever appears with its full content: a reader can never see a created-but-unwritten task (as it
could between ``open(O_EXCL)`` and ``write``). A crash leaves at worst an orphan in ``tmp/``.

Durability and speed: tasks and log lines must survive the *client* process being killed, which the
OS page cache already guarantees once ``write``/``link`` return; ``fsync`` would only add
protection against a machine crash, at a cost of milliseconds per submit that would cap the
simulated API far below real ones. So tasks are not fsynced by default (``fsync=True`` fsyncs each
task file and the ``tasks/`` directory). Log lines are a single ``os.write`` on an ``O_APPEND``
descriptor, so lines from concurrent processes never interleave.

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

Speed: a task is read from disk at most once per process and cached, hot paths use plain string
paths; creating a task is a handful of syscalls.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import NotFoundError

_lock_file: Callable[[int, bool], None] | None
try:
    import fcntl

    def _lock_file(fd: int, lock: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX if lock else fcntl.LOCK_UN)
except ImportError:  # pragma: no cover - Windows: no cross-process lock
    _lock_file = None

__all__ = ["Account", "StoredTask", "default_root", "read_submissions", "submission_counts", "task_id_for"]

_TASK_ID = re.compile(r"lt-[0-9a-f]{20}")


def default_root() -> Path:
    """``$VIDEOBATCH_LOCAL_DIR`` if set, else ``~/.cache/videobatch/local``."""
    env = os.environ.get("VIDEOBATCH_LOCAL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "videobatch" / "local"


def task_id_for(idempotency_key: str) -> str:
    """The task id the local provider gives the task created with ``idempotency_key``."""
    return "lt-" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:20]


def _excerpt(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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
class StoredTask:
    """One accepted task as the account keeps it (``tasks/<task_id>.json``)."""

    task_id: str
    idempotency_key: str
    prompt: str
    aspect_ratio: str
    duration: int
    created_at: float
    ready_at: float
    fails: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredTask:
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


class Account:
    """The records of one simulated account under ``root`` (see the module doc for the layout).

    ``LocalProvider`` builds on it; any number of instances and processes may share a root.
    Nothing touches the disk before first use (``_ensure_ready``). ``_clock`` is the "server's"
    clock (epoch seconds; tests replace it).
    """

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        self._tasks_dir = root / "tasks"
        self._active_dir = root / "active"
        self._tmp_dir = root / "tmp"
        self._videos_dir = root / "videos"
        # Hot paths build plain strings: pathlib costs more than the syscalls here.
        self._tasks_str = str(self._tasks_dir)
        self._active_str = str(self._active_dir)
        self._tmp_str = str(self._tmp_dir)
        self._clock: Callable[[], float] = time.time
        self._ready = False
        self._fds: dict[str, int] = {}  # "log" / "lock" -> open descriptor
        self._closers: list[weakref.finalize[[int], Account]] = []
        self._tmp_seq = itertools.count()
        self._tasks: dict[str, StoredTask] = {}

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
                    task = StoredTask.from_json(data)
                    if logged is None:
                        logged = {str(e.get("idempotency_key"))
                                  for e in read_submissions(self.root)
                                  if e.get("outcome") == "accepted"}
                    if task.idempotency_key not in logged:
                        self._log(task.idempotency_key, task_id, None, "accepted", task.prompt,
                                  recovered=True)
                    self._settle(tmp, task, now)

    def _fd(self, name: str, path: Path, flags: int) -> int:
        """A descriptor kept open for the account's life (closed by _close_files or at collection)."""
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(path, flags | os.O_CREAT, 0o644)
            self._closers.append(weakref.finalize(self, os.close, fd))
        return fd

    def _close_files(self) -> None:
        for closer in self._closers:
            closer()  # closes the descriptor once, detaches the finalizer
        self._closers.clear()
        self._fds.clear()

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

    def _accept(self, task: StoredTask, request: Mapping[str, Any], attempt: int, lost: bool) -> bool:
        """Create the task (False if it already exists), log it, take its slot. Under the lock.

        Order matters for crash safety: the complete file is linked into ``tasks/`` (the moment
        of acceptance), then the "accepted" line is logged, then the temp file is moved into
        ``active/`` (or removed). A process killed after the link leaves its temp file behind,
        which ``_recover`` uses to add the missing log line and slot.
        """
        data = json.dumps({
            "task_id": task.task_id,
            "idempotency_key": task.idempotency_key,
            "request": dict(request),  # as sent: the model's defaults filled in
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
        self._tasks[task.task_id] = task
        return True

    def _settle(self, tmp: str, task: StoredTask, now: float) -> None:
        """Turn an accepted task's temp file into its slot entry (or drop it if already done)."""
        if task.ready_at > now:
            ready_ns = int(task.ready_at * 1e9)
            os.rename(tmp, os.path.join(self._active_str, f"{ready_ns}.{task.task_id}"))
        else:
            os.unlink(tmp)

    def _load(self, task_id: str) -> StoredTask:
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
        task = StoredTask.from_json(json.loads(raw))
        self._tasks[task_id] = task
        return task

    def _listing(self) -> list[StoredTask]:
        """Every task of the account, newest first (as a provider's list endpoint pages them)."""
        tasks = []
        for name in os.listdir(self._tasks_str):
            task_id, dot, ext = name.partition(".")
            if ext != "json" or not dot:
                continue
            with contextlib.suppress(NotFoundError, OSError, ValueError, KeyError):
                tasks.append(self._load(task_id))
        tasks.sort(key=lambda t: (t.created_at, t.task_id), reverse=True)
        return tasks

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
