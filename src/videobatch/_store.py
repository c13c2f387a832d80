"""Durability of a run: an append-only journal of job transitions plus an atomic parquet snapshot.

Layout for ``checkpoint=run.parquet``::

    run.parquet              snapshot: the input columns, each job's state, run metadata
    run.parquet.journal.<n>  transitions since snapshot segment n, one JSON object per line

Loading = snapshot + replay of journal segments numbered >= the snapshot's ``journal_seq``. This
module writes them; the journal's format (header records, tolerant replay, the writer lock) is in
``videobatch._journal``, the table's and ``load`` in ``videobatch._snapshot``, and rebuilding a lost
snapshot from the input and the journal in ``videobatch._recover``.

Crash safety:
- ``append`` issues one ``write(2)`` per record before returning, so a record survives the process
  being killed (``kill -9``) at any later instant. ``submitting`` records (the intent to pay) are
  also fsync'ed before the request leaves the process, so they survive power loss too: the runner
  awaits ``durable()`` in between, and every row that submits in the same event-loop iteration
  shares one fsync, run in a thread. Other records are fsync'ed at the next snapshot or
  ``durable()``/``sync()``. A lost non-submitting record is harmless: the row falls back to an
  earlier state and is reconciled with the provider by its idempotency key.
- A snapshot goes to a temporary file, is fsync'ed, then renamed over the old one (and the directory
  fsync'ed). Appends switch to a new journal segment *before* the snapshot is built, so no record
  can fall between the snapshot and the journal. The new segment is created (header record written
  and fsync'ed) before the rename too, so some segment always holds the run id. Old segments are
  deleted only after the rename. A resume with unchanged rows keeps the snapshot as it is and
  journals into a new segment (header first) after the existing ones; the next snapshot folds them.
- A torn last journal line (crash during a write) is ignored on load; other damaged lines are
  skipped with a warning (see ``videobatch._journal``). A lost snapshot is rebuilt from the input
  and the journal without paying again (``videobatch._recover``); ``python -m videobatch repair``
  handles a corrupt one.
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._gc import gc_paused
from ._input_table import Table
from ._inputs import Prompts
from ._jobs import Job
from ._journal import FORMAT as FORMAT
from ._journal import Replay, WriterLock, header_record, segment_path
from ._journal import dumps as _dumps
from ._journal import iter_records as iter_records
from ._journal import line as _line
from ._journal import segments as _segments
from ._opening import decide, new_jobs
from ._snapshot import (
    _META_KEY,
    _dynamic_table,
    _fresh_table,
    _join,
    _static_table,
)
from ._snapshot import LoadedCheckpoint as LoadedCheckpoint
from ._snapshot import load as load
from .errors import CheckpointError

__all__ = ["Checkpoint", "LoadedCheckpoint", "Store", "open_rows"]


class Store:
    """Where a run keeps its jobs. The base class keeps nothing (a run without a checkpoint)."""

    def __init__(self, run_id: str | None = None, created_at: float | None = None) -> None:
        self.run_id = run_id or uuid.uuid4().hex
        # When the run began: no request of it can have been sent earlier (listings reach back here).
        self.created_at = created_at if created_at is not None else time.time()
        # USD spent on rows no longer in the input (``--force`` dropped them): the budget counts it.
        self.cost_dropped = 0.0

    def append(self, record: dict[str, Any]) -> None:
        """Record one transition. Durable against a killed process when this returns."""

    def sync(self) -> None:
        """Make every appended record durable against power loss."""

    async def durable(self) -> None:
        """Return once every record appended so far survives power loss (the runner awaits this
        between a ``submitting`` record and the paid request it announces)."""

    async def snapshot(self, jobs: Sequence[Job]) -> None:
        """Fold the journal into a fresh snapshot."""

    async def close(self, jobs: Sequence[Job]) -> None:
        """Final snapshot; the store is not used afterwards."""

    @property
    def location(self) -> str | None:
        return None


class Checkpoint(Store):
    """A run's journal + snapshot at ``path``. Use ``Checkpoint.open`` to create or resume one."""

    def __init__(
        self, path: Path, frame: Table, keys: Sequence[str],
        request_json: Sequence[str] | pa.ChunkedArray, meta: dict[str, Any],
    ) -> None:
        super().__init__(meta["run_id"], meta.get("created_at"))
        self.cost_dropped = float(meta.get("cost_dropped") or 0.0)
        self.path = path
        self.meta = meta
        self._static = _static_table(frame, keys, request_json)
        self._fd: int | None = None
        self._writer = WriterLock(path)  # open() hands over the one it holds; close() gives it back
        self._released = False  # close() gave the lock back: check the file before writing again
        self._seq = int(meta.get("journal_seq", 0))
        self._committed = self._seq  # journal_seq of the last snapshot we wrote
        self._lock = asyncio.Lock()
        self._dirty = False
        self._appended = 0  # records written to the journal by this store
        self._synced = 0  # ...of which these are known to be fsync'ed
        self._syncing: asyncio.Future[None] | None = None  # the fsync rounds durable() callers share
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # (records to cover, its waiter)
        self.recovery: Replay | None = None  # what a rebuild from the journal met (lost snapshot)
        self.lost_rows: list[str] = []  # rows a rebuild could not place: looked up before paying

    # ---------------------------------------------------------------- opening
    @classmethod
    @gc_paused()
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
        (with a new idempotency key), rows no longer in the input are dropped. A checkpoint whose
        snapshot is lost is rebuilt from these rows and its journal (``videobatch._recover``).
        Which state each row starts in is ``videobatch._opening.decide`` (a plan reads it too).

        The store holds the checkpoint's writer lock from here until ``close()`` (or until it is
        garbage-collected): a second open of the same checkpoint meanwhile is a CheckpointError.
        """
        path = Path(path)
        lock = WriterLock(path)
        lock.acquire()  # nobody else may write while we read it, rewrite it and run
        try:
            return cls._open_locked(path, prompts, lock, settings=settings, force=force)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(
        cls, path: Path, prompts: Prompts, lock: WriterLock, *, settings: dict[str, Any],
        force: bool,
    ) -> tuple[Checkpoint, list[Job]]:
        opening = decide(path, prompts, settings=settings, force=force, build_new=False)
        prompts, jobs = opening.prompts, opening.jobs
        store = cls(path, prompts.table, prompts.keys, prompts.request_json_column(), opening.meta)
        store._writer = lock
        if opening.kind == "new":
            # The first snapshot (every row pending: constant columns, no job visited) is written on
            # a thread while the jobs are built here: Arrow writes without the GIL. Errors still
            # raise from open.
            table, seq = store._rotate_and_build((), _fresh_table(len(prompts.keys)))
            with ThreadPoolExecutor(1, thread_name_prefix="videobatch-snapshot") as pool:
                written = pool.submit(store._commit, table, seq)
                jobs = new_jobs(prompts)
                written.result()
        elif opening.kind == "resumed":
            # The snapshot on disk is still right, so it is not rewritten now (the first periodic
            # snapshot folds the journal): this run's records go to a new segment after the
            # existing ones, with its header, which loading replays in order.
            store._seq = max([store._seq, *_segments(path)]) + 1
            store._start_segment(jobs)
        else:  # changed rows (force), or a snapshot rebuilt from the journal
            store.recovery, store.lost_rows = opening.recovery, opening.lost
            store._write_snapshot_sync(jobs)
        return store, jobs

    # ---------------------------------------------------------------- journal
    def _segment_path(self, seq: int) -> Path:
        return segment_path(self.path, seq)

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

    def _start_segment(self, jobs: Sequence[Job]) -> None:
        """Create segment ``self._seq`` with its header record, durable before any snapshot names it."""
        fd = os.open(self._segment_path(self._seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, _line(header_record(self.meta, self._seq, jobs)))
                os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, record: dict[str, Any]) -> None:
        data = _line(record)
        fd = self._journal_fd()
        os.write(fd, data)
        self._dirty = True
        self._appended += 1

    def sync(self) -> None:
        upto = self._appended
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._synced = max(self._synced, upto)

    async def durable(self) -> None:
        # Group commit, off the event loop: one fsync (in a thread, on a duplicate descriptor, so a
        # snapshot may switch segments meanwhile) covers every record appended before it starts;
        # rows that append while it runs share the next one. Each caller waits on a future of its
        # own, so a cancelled caller cancels nobody else's wait.
        target = self._appended
        if self._synced >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        if self._syncing is None:
            self._syncing = asyncio.ensure_future(self._sync_rounds())
        await waiter

    async def _sync_rounds(self) -> None:
        try:
            while self._waiters:
                await asyncio.sleep(0)  # the other rows of this loop iteration append first
                upto = self._appended
                if self._fd is not None and self._dirty:
                    await asyncio.to_thread(_fsync_closing, os.dup(self._fd))
                    if self._appended == upto:  # nothing written since: all clean
                        self._dirty = False
                self._synced = max(self._synced, upto)
                waiting, self._waiters = self._waiters, []
                for target, waiter in waiting:
                    if target > self._synced:
                        self._waiters.append((target, waiter))
                    elif not waiter.done():
                        waiter.set_result(None)
        except BaseException as exc:
            waiting, self._waiters = self._waiters, []
            for _, waiter in waiting:
                if not waiter.done():
                    if isinstance(exc, asyncio.CancelledError):
                        waiter.cancel()
                    else:
                        waiter.set_exception(exc)
            raise
        finally:
            self._syncing = None

    # ---------------------------------------------------------------- snapshot
    async def snapshot(self, jobs: Sequence[Job]) -> None:
        async with self._lock:
            table, seq = self._rotate_and_build(jobs, _dynamic_table(jobs))
            await asyncio.to_thread(self._commit, table, seq)

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
        table, seq = self._rotate_and_build(jobs, _dynamic_table(jobs))
        self._commit(table, seq)

    def _rotate_and_build(self, jobs: Sequence[Job], dynamic: pa.Table) -> tuple[pa.Table, int]:
        """Switch appends to a new segment (its header from ``jobs``: generations, untouched) and
        join the snapshot's table: the static columns and ``dynamic``, the job columns."""
        # Runs on the event loop without awaiting: no record can be appended meanwhile.
        self._hold_lock()
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        # After every segment on disk: a resumed run's older segments (it journals after them) and
        # any a crash left behind are folded into this snapshot and deleted once it is in place.
        self._seq = max([self._seq, *_segments(self.path)]) + 1
        self.meta["journal_seq"] = self._seq
        self.meta["updated_at"] = time.time()
        self._start_segment(jobs)
        table = _join(self._static, dynamic)
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[_META_KEY] = _dumps(self.meta).encode()
        return table.replace_schema_metadata(schema_meta), self._seq

    def _commit(self, table: pa.Table, seq: int) -> None:
        """Put the snapshot ``table`` (it names journal segment ``seq``) in place; older segments go."""
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
        self._committed = seq
        _fsync_dir(directory)
        for old in _segments(self.path):
            if old < seq:
                self._segment_path(old).unlink(missing_ok=True)

    @property
    def location(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<Checkpoint {str(self.path)!r} run={self.run_id[:8]}>"


def open_rows(checkpoint: str | os.PathLike[str] | None, prompts: Prompts, *,
              settings: dict[str, Any], force: bool, dry_run: bool = False
              ) -> tuple[Store, list[Job], str | None]:
    """The store and rows a batch runs with: no checkpoint (every row pending, nothing kept), a
    checkpoint opened for the run, or (``dry_run``) the rows as opening it would start them,
    with nothing written; and, for a dry run, what opening the checkpoint does."""
    if checkpoint is None:
        return Store(), new_jobs(prompts), None
    if not dry_run:
        return *Checkpoint.open(checkpoint, prompts, settings=settings, force=force), None
    path = Path(checkpoint)
    opening = decide(path, prompts, settings=settings, force=force)
    store = Store()
    store.cost_dropped = opening.cost_dropped
    return store, opening.jobs, opening.describe(path)


def _fsync_closing(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

