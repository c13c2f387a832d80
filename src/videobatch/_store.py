"""Durability of a run: an append-only journal of job transitions plus an atomic parquet snapshot.

Layout for ``checkpoint=run.parquet``::

    run.parquet              snapshot: the input columns, each job's state, run metadata
    run.parquet.journal.<n>  transitions since snapshot segment n, one JSON object per line

Loading = snapshot + replay of journal segments numbered >= the snapshot's ``journal_seq``.

Crash safety:
- ``append`` issues one ``write(2)`` per record before returning, so a record survives the process
  being killed (``kill -9``) at any later instant. ``submitting`` records (the intent to pay) are
  also fsync'ed, so they survive power loss too; other records are fsync'ed at the next snapshot or
  ``sync()``. A lost non-submitting record is harmless: the row falls back to an earlier state and is
  reconciled with the provider by its idempotency key.
- A snapshot goes to a temporary file, is fsync'ed, then renamed over the old one (and the directory
  fsync'ed). Appends switch to a new journal segment *before* the snapshot is built, so no record
  can fall between the snapshot and the journal. Old segments are deleted only after the rename.
- A torn last journal line (crash during a write) is ignored on load.
- One writer: ``Checkpoint.open`` takes the checkpoint's lock and holds it until ``close()``; a
  later write takes it again only if nobody else wrote the checkpoint meanwhile.

The checkpoint holds rows, requests and results, never provider credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per checkpoint is then up to you
    fcntl = None  # type: ignore[assignment]

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._inputs import Prompts
from ._jobs import RESULT_FIELDS, Job, State
from .errors import CheckpointError
from .request import VideoRequest

__all__ = ["Checkpoint", "LoadedCheckpoint", "Store"]

FORMAT = 1
_META_KEY = b"videobatch"
_PREFIX = "_vb_"
_KEY_COL = _PREFIX + "key"
_REQUEST_COL = _PREFIX + "request"
_STATE_COL = _PREFIX + "state"
_EXTRAS_COL = _PREFIX + "extras"
_FLOAT_FIELDS = ("submitted_at", "completed_at", "video_duration", "expires_at")
_INT_FIELDS = ("attempts", "generation")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Store:
    """Where a run keeps its jobs. The base class keeps nothing (a run without a checkpoint)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex

    def append(self, record: dict[str, Any]) -> None:
        """Record one transition. Durable against a killed process when this returns."""

    def sync(self) -> None:
        """Make every appended record durable against power loss."""

    async def snapshot(self, jobs: Sequence[Job]) -> None:
        """Fold the journal into a fresh snapshot."""

    async def close(self, jobs: Sequence[Job]) -> None:
        """Final snapshot; the store is not used afterwards."""

    @property
    def location(self) -> str | None:
        return None


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk without the original input (for results/status/retry)."""

    frame: pd.DataFrame  # the user's input columns
    jobs: list[Job]
    meta: dict[str, Any]
    request_json: list[str]  # each row's request as canonical JSON


class _WriterLock:
    """One writer per checkpoint: an exclusive ``flock`` on ``<checkpoint>.lock`` while writing.

    Two runs (or a run and ``videobatch download``) appending to one checkpoint would delete each
    other's journal segments when they fold them into snapshots. The OS drops the lock when the
    process dies, so a ``kill -9`` never leaves a checkpoint locked; a holder dropped without
    ``release()`` (a Batch built but never run, then garbage-collected) gives it back too.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.path = checkpoint.with_name(checkpoint.name + ".lock")
        self.held = False
        self._file: IO[str] | None = None
        self._closer: weakref.finalize[[], _WriterLock] | None = None

    def acquire(self) -> bool:
        """Take the lock (CheckpointError if someone else holds it); False if already held here."""
        if self.held:
            return False
        if fcntl is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")  # noqa: SIM115 - held open as the lock itself
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                advice = ("wait for it to finish or stop it, then try again"
                          if holder != f"pid {os.getpid()}" else
                          "this process: a Batch (or download) holds it from when it is built until "
                          "its run ends; let that run finish, or `del` a Batch you will not run")
                raise CheckpointError(
                    f"checkpoint {self.checkpoint} is being written by another run ({holder}); {advice}"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            self._file = fh
            self._closer = weakref.finalize(self, fh.close)
        self.held = True
        return True

    def release(self) -> None:
        if self._closer is not None:
            self._closer()  # closes the file (dropping the lock) once, and detaches
        self._closer = None
        self._file = None
        self.held = False


class Checkpoint(Store):
    """A run's journal + snapshot at ``path``. Use ``Checkpoint.open`` to create or resume one."""

    def __init__(
        self, path: Path, frame: pd.DataFrame, jobs: list[Job], request_json: Sequence[str],
        meta: dict[str, Any],
    ) -> None:
        super().__init__(meta["run_id"])
        self.path = path
        self.meta = meta
        self._static = _static_table(frame, jobs, request_json)
        self._fd: int | None = None
        self._writer = _WriterLock(path)  # open() hands over the one it holds; close() gives it back
        self._released = False  # close() gave the lock back: check the file before writing again
        self._seq = int(meta.get("journal_seq", 0))
        self._committed = self._seq  # journal_seq of the last snapshot we wrote
        self._lock = asyncio.Lock()
        self._dirty = False

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        prompts: Prompts,
        *,
        settings: dict[str, Any],
        force: bool = False,
    ) -> tuple[Checkpoint, list[Job]]:
        """Resume the checkpoint at ``path`` for these rows, or create it.

        A checkpoint made from other rows or settings is refused (CheckpointError) unless ``force``:
        then rows whose key and request are unchanged keep their state, changed rows start afresh
        (with a new idempotency key), rows no longer in the input are dropped.

        The store holds the checkpoint's writer lock from here until ``close()`` (or until it is
        garbage-collected): a second open of the same checkpoint meanwhile is a CheckpointError.
        """
        path = Path(path)
        lock = _WriterLock(path)
        lock.acquire()  # nobody else may write while we read it, rewrite it and run
        try:
            return cls._open_locked(path, prompts, lock, settings=settings, force=force)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(
        cls, path: Path, prompts: Prompts, lock: _WriterLock, *, settings: dict[str, Any],
        force: bool,
    ) -> tuple[Checkpoint, list[Job]]:
        fingerprint = prompts.fingerprint()
        request_json = prompts.request_json()
        jobs = [Job(key=k, index=i, request=r)
                for i, (k, r) in enumerate(zip(prompts.keys, prompts.requests, strict=True))]
        if not path.exists() and not _segments(path):
            meta = {
                "format": FORMAT,
                "run_id": uuid.uuid4().hex,
                "fingerprint": fingerprint,
                "settings": settings,
                "created_at": time.time(),
                "journal_seq": 0,
            }
            store = cls(path, prompts.frame, jobs, request_json, meta)
            store._writer = lock
            store._write_snapshot_sync(jobs)
            return store, jobs

        old = load(path, requests=False)
        same = old.meta.get("fingerprint") == fingerprint and old.meta.get("settings") == settings
        if not same and not force:
            diff = _describe_difference(old, prompts.keys, request_json, settings)
            raise CheckpointError(
                f"checkpoint {path} was made from different rows or settings: {diff}.\n"
                "Use --force (force=True) to keep the finished rows whose request is unchanged "
                "and run the rest, or choose another checkpoint path."
            )
        old_rows = {j.key: (j, text) for j, text in zip(old.jobs, old.request_json, strict=True)}
        for job, text in zip(jobs, request_json, strict=True):
            prev, prev_text = old_rows.get(job.key, (None, None))
            if prev is None:
                continue
            if prev_text == text:
                for name in RESULT_FIELDS:
                    setattr(job, name, getattr(prev, name))
                job.extras = prev.extras
                job.state = prev.state
                job.updated_at = prev.updated_at
            else:
                # Same key, new request: a new submission that must not collide with the old one.
                job.generation = prev.generation + 1
        meta = {**old.meta, "fingerprint": fingerprint, "settings": settings}
        store = cls(path, prompts.frame, jobs, request_json, meta)
        store._writer = lock
        store._write_snapshot_sync(jobs)
        return store, jobs

    # ---------------------------------------------------------------- journal
    def _segment_path(self, seq: int) -> Path:
        return self.path.with_name(f"{self.path.name}.journal.{seq}")

    def _journal_fd(self) -> int:
        if self._fd is None:
            self._hold_lock()
            self._fd = os.open(
                self._segment_path(self._seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
        return self._fd

    def _hold_lock(self) -> None:
        if not self._writer.acquire() or not self._released:
            return
        # Taken again after close(): what we hold in memory is only current if nobody wrote since.
        try:
            raw = (pq.read_schema(self.path).metadata or {}).get(_META_KEY)
            on_disk = json.loads(raw).get("journal_seq") if raw else None
        except (OSError, ValueError, pa.ArrowException):
            on_disk = None
        if on_disk != self._committed or any(seq > self._seq for seq in _segments(self.path)):
            self._writer.release()
            raise CheckpointError(
                f"checkpoint {self.path} was written by another run since this batch last wrote it; "
                "build the batch again (e.g. Batch.from_checkpoint) to go on from what is on disk"
            )
        self._released = False

    def append(self, record: dict[str, Any]) -> None:
        data = (_dumps(record) + "\n").encode()
        fd = self._journal_fd()
        os.write(fd, data)
        self._dirty = True
        if record.get("s") == State.SUBMITTING:
            os.fsync(fd)

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    # ---------------------------------------------------------------- snapshot
    async def snapshot(self, jobs: Sequence[Job]) -> None:
        async with self._lock:
            table, old_seq = self._rotate_and_build(jobs)
            await asyncio.to_thread(self._commit, table, old_seq)

    async def close(self, jobs: Sequence[Job]) -> None:
        try:
            await self.snapshot(jobs)
        finally:
            self.release()

    def release(self) -> None:
        """Close the journal and give the writer lock back (a later write takes it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._writer.held:
            self._writer.release()
            self._released = True

    def _write_snapshot_sync(self, jobs: Sequence[Job]) -> None:
        table, old_seq = self._rotate_and_build(jobs)
        self._commit(table, old_seq)

    def _rotate_and_build(self, jobs: Sequence[Job]) -> tuple[pa.Table, int]:
        # Runs on the event loop without awaiting: no record can be appended meanwhile.
        self._hold_lock()
        old_seq = self._seq
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        self._seq += 1
        self.meta["journal_seq"] = self._seq
        self.meta["updated_at"] = time.time()
        table = _join(self._static, _dynamic_table(jobs))
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[_META_KEY] = _dumps(self.meta).encode()
        return table.replace_schema_metadata(schema_meta), old_seq

    def _commit(self, table: pa.Table, old_seq: int) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._committed = old_seq + 1
        _fsync_dir(directory)
        for seq in _segments(self.path):
            if seq <= old_seq:
                self._segment_path(seq).unlink(missing_ok=True)

    @property
    def location(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<Checkpoint {str(self.path)!r} run={self.run_id[:8]}>"


# -------------------------------------------------------------------- table building
def _static_table(frame: pd.DataFrame, jobs: Sequence[Job], request_json: Sequence[str]) -> pa.Table:
    """The columns that never change during a run: the user's input, keys and requests."""
    user = frame.reset_index(drop=True)
    try:
        table = pa.Table.from_pandas(user, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # Mixed-type object columns: keep them as text rather than refuse the run.
        table = pa.Table.from_pandas(user.astype(
            {c: "string" for c in user.columns if user[c].dtype == object}), preserve_index=False)
    keys = pa.array([j.key for j in jobs], pa.string())
    requests = pa.array(request_json, pa.string())
    return table.append_column(_KEY_COL, keys).append_column(_REQUEST_COL, requests)


def _dynamic_table(jobs: Sequence[Job]) -> pa.Table:
    cols: dict[str, pa.Array] = {_STATE_COL: pa.array([j.state.value for j in jobs], pa.string())}
    # Extras keep their insertion order: it is the order of the results' extra columns.
    extras = [json.dumps(j.extras, ensure_ascii=False) if j.extras else None for j in jobs]
    cols[_EXTRAS_COL] = pa.array(extras, pa.string())
    for name in RESULT_FIELDS:
        values = [getattr(j, name) for j in jobs]
        if name in _INT_FIELDS:
            typ: pa.DataType = pa.int64()
        elif name in _FLOAT_FIELDS:
            typ = pa.float64()
        else:
            typ = pa.string()
        cols[_PREFIX + name] = pa.array(values, typ)
    return pa.table(cols)


def _join(static: pa.Table, dynamic: pa.Table) -> pa.Table:
    for name, column in zip(dynamic.column_names, dynamic.columns, strict=True):
        static = static.append_column(name, column)
    return static


# -------------------------------------------------------------------- loading
def _segments(path: Path) -> list[int]:
    prefix = path.name + ".journal."
    out = []
    if path.parent.exists():
        for entry in path.parent.iterdir():
            if entry.name.startswith(prefix) and entry.name[len(prefix):].isdigit():
                out.append(int(entry.name[len(prefix):]))
    return sorted(out)


def load(path: str | os.PathLike[str], *, requests: bool = True) -> LoadedCheckpoint:
    """Read a checkpoint (snapshot + journal replay) without any input or provider.

    ``requests=False`` skips rebuilding each row's ``VideoRequest`` (jobs then share a blank
    placeholder request): enough for results and for resuming, where the input supplies them.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}" + (" (only journal files: the snapshot was deleted)"
                                          if _segments(path) else "")
        )
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CheckpointError(f"checkpoint {path} is not readable: {exc}") from None
    raw_meta = (table.schema.metadata or {}).get(_META_KEY)
    if raw_meta is None:
        raise CheckpointError(f"{path} is a parquet file but not a videobatch checkpoint")
    meta: dict[str, Any] = json.loads(raw_meta)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')}; this videobatch reads {FORMAT}"
        )
    user_cols = [c for c in table.column_names if not c.startswith(_PREFIX)]
    frame = table.select(user_cols).to_pandas()
    keys = table.column(_KEY_COL).to_pylist()
    request_json = table.column(_REQUEST_COL).to_pylist()
    states = table.column(_STATE_COL).to_pylist()
    fields = {name: table.column(_PREFIX + name).to_pylist() for name in RESULT_FIELDS}
    extras = table.column(_EXTRAS_COL).to_pylist()
    jobs = []
    for i, key in enumerate(keys):
        request = _request_from(request_json[i]) if requests else _PLACEHOLDER
        job = Job(key, i, request, State(states[i]))
        for name, values in fields.items():
            value = values[i]
            if value is not None:
                setattr(job, name, value)
        if extras[i]:
            job.extras = json.loads(extras[i])
        jobs.append(job)
    _replay(path, int(meta.get("journal_seq", 0)), {j.key: j for j in jobs})
    return LoadedCheckpoint(frame=frame, jobs=jobs, meta=meta, request_json=request_json)


_PLACEHOLDER = VideoRequest.model_construct(prompt="")


def _request_from(text: str) -> VideoRequest:
    # Written by us from a validated request: trusted, so no second validation.
    return VideoRequest.model_construct(**json.loads(text))


def _replay(path: Path, from_seq: int, by_key: dict[str, Job]) -> None:
    for seq in _segments(path):
        if seq < from_seq:
            continue
        segment = path.with_name(f"{path.name}.journal.{seq}")
        lines = segment.read_bytes().split(b"\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:  # torn final write: the process died mid-record
                    break
                raise CheckpointError(
                    f"journal {segment} line {n + 1} is corrupt; move the file aside to resume "
                    "from the snapshot (rows it covered will be reconciled with the provider)"
                ) from None
            job = by_key.get(record.get("k"))
            if job is not None:
                job.apply(record)


def _describe_difference(
    old: LoadedCheckpoint, keys: Sequence[str], request_json: Sequence[str], settings: dict[str, Any]
) -> str:
    old_req = dict(zip((j.key for j in old.jobs), old.request_json, strict=True))
    new_req = dict(zip(keys, request_json, strict=True))
    changed = [k for k in new_req if k in old_req and old_req[k] != new_req[k]]
    added = [k for k in new_req if k not in old_req]
    removed = [k for k in old_req if k not in new_req]
    parts = []
    for label, ks in (("changed", changed), ("new", added), ("no longer in the input", removed)):
        if ks:
            parts.append(f"{len(ks)} row(s) {label} (e.g. {', '.join(map(repr, ks[:3]))})")
    old_settings = old.meta.get("settings")
    if old_settings != settings:
        parts.append(f"settings differ (checkpoint: {old_settings}, now: {settings})")
    if not parts:
        parts.append("the rows are the same but in a different order")
    return "; ".join(parts)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_records(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """Every journal record still on disk (for diagnostics and tests)."""
    p = Path(path)
    for seq in _segments(p):
        for line in p.with_name(f"{p.name}.journal.{seq}").read_bytes().splitlines():
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return
