"""The snapshot half of a checkpoint: the parquet table (the user's input columns, each row's key,
request, state and result fields, run metadata) and ``load``, which reads it and replays the journal.

A result column that a newer videobatch added to ``RESULT_FIELDS`` is all-None in an older file.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._gc import gc_paused
from ._input_table import Table
from ._jobs import RESULT_FIELDS, Job, State
from ._journal import FORMAT, Replay, first_header, replay
from ._journal import segments as _segments
from .errors import CheckpointError
from .request import VideoRequest, earlier_spellings

__all__ = ["REPAIR_HINT", "LoadedCheckpoint", "key_scheme", "load", "read_meta", "resumed_jobs"]

REPAIR_HINT = ("; `python -m videobatch repair {path}` rebuilds it from its journal without paying "
               "again for rows already submitted")
_META_KEY = b"videobatch"
_PREFIX = "_vb_"
_KEY_COL = _PREFIX + "key"
_REQUEST_COL = _PREFIX + "request"
_STATE_COL = _PREFIX + "state"
_EXTRAS_COL = _PREFIX + "extras"
_FLOAT_FIELDS = ("submitted_at", "completed_at", "video_duration", "expires_at", "cost_estimated",
                 "cost_earlier", "cost_actual", "cost_units")
_INT_FIELDS = ("attempts", "generation")


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk without the original input (for results/status/retry)."""

    frame: pd.DataFrame  # the user's input columns
    jobs: list[Job]
    meta: dict[str, Any]
    request_json: list[str]  # each row's request as canonical JSON
    journal: Replay = field(default_factory=Replay)  # damaged lines met while replaying


# -------------------------------------------------------------------- table building
def _static_table(
    frame: Table, keys: Sequence[str], request_json: Sequence[str] | pa.ChunkedArray
) -> pa.Table:
    """The columns that never change during a run: the user's input (an Arrow table as it is),
    keys and requests."""
    table = frame if isinstance(frame, pa.Table) else _from_frame(frame)
    key_column = pa.array(keys, pa.string())
    requests = (request_json if isinstance(request_json, pa.ChunkedArray)
                else pa.array(request_json, pa.string()))
    return table.append_column(_KEY_COL, key_column).append_column(_REQUEST_COL, requests)


def _from_frame(frame: pd.DataFrame) -> pa.Table:
    user = frame.reset_index(drop=True)
    try:
        return pa.Table.from_pandas(user, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # Mixed-type object columns: keep them as text rather than refuse the run.
        return pa.Table.from_pandas(user.astype(
            {c: "string" for c in user.columns if user[c].dtype == object}), preserve_index=False)


def _dynamic_table(jobs: Sequence[Job]) -> pa.Table:
    # Runs on the event loop at every snapshot: plain loops over the jobs (a State is its text).
    cols: dict[str, pa.Array] = {_STATE_COL: pa.array([j.state for j in jobs], pa.string())}
    # Extras keep their insertion order: it is the order of the results' extra columns.
    extras = [json.dumps(j.extras, ensure_ascii=False) if j.extras else None for j in jobs]
    cols[_EXTRAS_COL] = pa.array(extras, pa.string())
    for name in RESULT_FIELDS:
        values = list(map(operator.attrgetter(name), jobs))
        if name in _INT_FIELDS:
            typ: pa.DataType = pa.int64()
        elif name in _FLOAT_FIELDS:
            typ = pa.float64()
        else:
            typ = pa.string()
        cols[_PREFIX + name] = pa.array(values, typ)
    return pa.table(cols)


def _fresh_table(rows: int) -> pa.Table:
    """``_dynamic_table`` of ``rows`` new jobs (pending, nothing else set), without visiting them."""
    cols: dict[str, pa.Array] = {_STATE_COL: pa.repeat(pa.scalar(State.PENDING.value), rows),
                                 _EXTRAS_COL: pa.nulls(rows, pa.string())}
    for name in RESULT_FIELDS:
        if name in _INT_FIELDS:
            cols[_PREFIX + name] = pa.repeat(pa.scalar(0, pa.int64()), rows)
        else:
            cols[_PREFIX + name] = pa.nulls(rows, pa.float64() if name in _FLOAT_FIELDS else pa.string())
    return pa.table(cols)


def _join(static: pa.Table, dynamic: pa.Table) -> pa.Table:
    for name, column in zip(dynamic.column_names, dynamic.columns, strict=True):
        static = static.append_column(name, column)
    return static


# -------------------------------------------------------------------- loading
# Job's fields in order: key, index, request, state, then RESULT_FIELDS (load builds jobs positionally).
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
assert _JOB_FIELDS[4:4 + len(RESULT_FIELDS)] == RESULT_FIELDS, "Job's fields changed order"
_STATES = {state.value: state for state in State}


def key_scheme(path: Path, *, default: int) -> int:
    """How the rows of the checkpoint at ``path`` are keyed (1: the first release's way, before
    checkpoints said); ``default`` for a checkpoint that does not exist yet."""
    if path.exists():
        return int(read_meta(path).get("keys", 1))
    if _segments(path):
        header = first_header(path)
        return int((header or {}).get("keys") or 1)
    return default


def read_meta(path: Path) -> dict[str, Any]:
    """The run metadata of the checkpoint at ``path``, from the parquet footer only (CheckpointError
    if there is none, or it is no checkpoint this videobatch reads)."""
    if not path.exists():
        if _segments(path):
            raise CheckpointError(
                f"no checkpoint snapshot at {path}, only its journal files (the snapshot was deleted "
                "or lost). Run the same command (or videobatch.run) with the same input again: it "
                "rebuilds the snapshot and pays nothing twice. `python -m videobatch repair "
                f"{path}` shows what the journal holds"
            )
        raise CheckpointError(f"no checkpoint at {path}")
    repair = REPAIR_HINT.format(path=path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise CheckpointError(f"checkpoint {path} is not readable ({exc}){repair}") from None
    raw_meta = (schema.metadata or {}).get(_META_KEY)
    if raw_meta is None:
        raise CheckpointError(f"{path} is a parquet file but not a videobatch checkpoint")
    try:
        meta: dict[str, Any] = json.loads(raw_meta)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata ({exc}){repair}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')}; this videobatch reads {FORMAT}: "
            "use the videobatch that wrote it"
        )
    if not {_KEY_COL, _REQUEST_COL, _STATE_COL} <= set(schema.names):
        raise CheckpointError(f"checkpoint {path} lacks its key, request or state column{repair}")
    return meta


def _read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        repair = REPAIR_HINT.format(path=path)
        raise CheckpointError(f"checkpoint {path} is not readable ({exc}){repair}") from None


def load(path: str | os.PathLike[str], *, requests: bool = True) -> LoadedCheckpoint:
    """Read a checkpoint (snapshot + journal replay) without any input or provider.

    ``requests=False`` skips rebuilding each row's ``VideoRequest`` (jobs then share a blank
    placeholder request): enough for results and for resuming, where the input supplies them.

    A run may be writing the checkpoint meanwhile (``status`` or ``results()`` during a run): when
    it replaced the snapshot while this read it (and dropped the journal segments the old one
    needed), the read is done again, so a reader never sees an older state or a torn file.
    """
    path = Path(path)
    for _ in range(_READS - 1):
        before = _version(path)
        try:
            loaded = _load_once(path, requests)
        except CheckpointError:
            if _version(path) == before:
                raise
            continue  # replaced under us: read the new one
        if _version(path) == before:
            return loaded
    return _load_once(path, requests)


_READS = 5  # tries of a read a writer keeps replacing (a snapshot every 30 s: one retry at most)


def _version(path: Path) -> tuple[int, int, int] | None:
    """Which snapshot file is at ``path`` (a new one is renamed into place: a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@gc_paused()
def _load_once(path: Path, requests: bool) -> LoadedCheckpoint:
    meta = read_meta(path)
    table = _read_table(path)
    user_cols = [c for c in table.column_names if not c.startswith(_PREFIX)]
    frame = table.select(user_cols).to_pandas()
    names = [_KEY_COL, _STATE_COL, _REQUEST_COL]
    names += [name for name in (_EXTRAS_COL, *(_PREFIX + n for n in RESULT_FIELDS)) if name in table.column_names]
    request_json: list[str] = []
    jobs: list[Job] = []
    # A slice of rows at a time: the per-column lists stay small (200k rows: ~40 MB less at peak).
    for batch in table.select(names).to_batches(max_chunksize=16384):
        chunk = batch.column(_REQUEST_COL).to_pylist()
        request_json += chunk
        built = [_request_from(text) for text in chunk] if requests else [_PLACEHOLDER] * len(chunk)
        jobs += _jobs_from(batch, range(len(jobs), len(jobs) + batch.num_rows), built)
    report = replay(path, int(meta.get("journal_seq", 0)), {j.key: j for j in jobs})
    return LoadedCheckpoint(frame=frame, jobs=jobs, meta=meta, request_json=request_json,
                            journal=report)


def _jobs_from(
    rows: pa.Table | pa.RecordBatch, indices: Sequence[int], requests: Sequence[VideoRequest]
) -> list[Job]:
    """Jobs from snapshot rows (key, state, extras and result columns), at these row indices."""
    names = set(rows.schema.names)

    def column(name: str) -> list[Any]:  # a result column newer than the file: all None
        return rows.column(name).to_pylist() if name in names else [None] * rows.num_rows

    fields = [column(_PREFIX + name) for name in RESULT_FIELDS]
    jobs = []
    for i, key, request, state, extra, attempts, generation, *values in zip(
            indices, rows.column(_KEY_COL).to_pylist(), requests, _states(rows.column(_STATE_COL)),
            column(_EXTRAS_COL), *fields, strict=True):
        # Positional: RESULT_FIELDS in Job's order; an empty attempts/generation keeps its 0.
        job = Job(key, i, request, state, 0 if attempts is None else attempts,
                  0 if generation is None else generation, *values)
        if extra:
            job.extras = json.loads(extra)
        jobs.append(job)
    return jobs


@gc_paused()
def resumed_jobs(path: Path, meta: dict[str, Any], keys: list[str],
                 requests: Sequence[VideoRequest]) -> tuple[list[Job], Replay] | None:
    """The jobs of a checkpoint resumed with unchanged rows (same fingerprint), or None if its keys
    are not ``keys`` (a file edited by hand: then compare row by row).

    What ``load`` gives, but built from the input's keys and requests, with the saved state given to
    only the rows that have one (found with Arrow compute: a mostly pending 200k-row checkpoint has
    few); neither the input columns nor the request texts of the checkpoint are read.
    """
    names = set(pq.read_schema(path).names)
    wanted = [n for n in (_KEY_COL, _STATE_COL, _EXTRAS_COL, *(_PREFIX + n for n in RESULT_FIELDS))
              if n in names]
    table = _read_table(path, wanted)
    if table.num_rows != len(keys) or not table.column(_KEY_COL).equals(
            pa.chunked_array([pa.array(keys, pa.string())])):
        return None
    jobs = Job.fresh(keys, requests)
    saved = pc.fill_null(pc.not_equal(table.column(_STATE_COL), State.PENDING.value), True)
    for name in wanted[2:]:
        column = table.column(name)
        differs = pc.not_equal(column, 0) if name[len(_PREFIX):] in _INT_FIELDS else pc.is_valid(column)
        saved = pc.or_(saved, pc.fill_null(differs, False))
    rows = pc.indices_nonzero(saved).to_pylist()
    if rows:
        for job in _jobs_from(table.take(rows), rows, [requests[i] for i in rows]):
            job.key = keys[job.index]  # the input's own key object (equal text)
            jobs[job.index] = job
    report = replay(path, int(meta.get("journal_seq", 0)), {j.key: j for j in jobs})
    return jobs, report


def _states(column: pa.Array | pa.ChunkedArray) -> list[State]:
    """Each row's State, without a text object per row (the column holds a handful of values)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = column.dictionary_encode()
    members = [_STATES.get(v) or State(v) for v in encoded.dictionary.to_pylist()]
    return [members[i] for i in encoded.indices.to_pylist()]


_PLACEHOLDER = VideoRequest.model_construct(prompt="")


# What VideoRequest.model_construct fills in for a field the text leaves out (all are immutable).
_DEFAULTS = {name: info.get_default(call_default_factory=True)
             for name, info in VideoRequest.model_fields.items()}
_FIELDS = frozenset(_DEFAULTS)


def _request_from(text: str) -> VideoRequest:
    """``VideoRequest.model_construct(**json.loads(text))`` (written by us from a validated request:
    trusted, so no second validation), built directly: the same dict, fields-set and extra. A text
    written by the first release (``image_tail``, Kling's options as fields) is read in today's
    terms first."""
    data = json.loads(text)
    if not _FIELDS.issuperset(data):  # the first release's spellings; keys nobody knows are dropped
        data = {k: v for k, v in earlier_spellings(data).items() if k in _FIELDS}
    request = object.__new__(VideoRequest)
    object.__setattr__(request, "__dict__", {name: data.get(name, default)
                                             for name, default in _DEFAULTS.items()})
    object.__setattr__(request, "__pydantic_fields_set__", {name for name in _DEFAULTS if name in data})
    object.__setattr__(request, "__pydantic_extra__", None)
    object.__setattr__(request, "__pydantic_private__", None)
    return request
