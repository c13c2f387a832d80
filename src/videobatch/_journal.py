"""The journal half of a checkpoint: numbered segments of JSON lines, the header that opens each one,
a replay that survives torn and damaged lines, and the lock that keeps one writer per checkpoint.

Segment ``<checkpoint>.journal.<n>`` holds one JSON object per line:

- first, a header ``{"vb": "journal", "format": 1, "seq": n, "run_id": ..., "fingerprint": ...,
  "settings": ..., "created_at": ..., "untouched": bool, "generations": {row key: n > 0}}``: the run
  id and each row's generation are everything an idempotency key depends on besides the row key, so
  they survive a lost snapshot. ``untouched``: every row was pending (or cancelled) when the segment
  began. Row records never have a ``"vb"`` field; readers older than headers skip records without
  ``"k"``, so the format number stays 1;
- then row records: ``{"k": row key, "s": state, "t": time, <fields>}`` (a transition) or
  ``{"k": ..., "x": {...}, "t": ...}`` (extra result columns), see ``Job.transition``/``annotate``.

Replay never stops at a bad line. A last line without its newline is a write cut short by a crash:
ignored (a ``submitting`` record is complete and fsync'ed before its request leaves the process, so
a torn one was never sent). Any other line that does not decode (torn inside a UTF-8 character,
random bytes) is salvaged when a whole record is still inside it, else skipped, counted and warned
about. A skipped line can only make its row look earlier in its life; a row named in a skipped line
that replays to ``pending`` is put in ``submitting``, so a run looks it up by its idempotency key
before paying for anything.
"""

from __future__ import annotations

import json
import logging
import os
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per checkpoint is then up to you
    fcntl = None  # type: ignore[assignment]

from ._jobs import Job, State
from .errors import CheckpointError

__all__ = ["FORMAT", "HEADER", "Replay", "WriterLock", "dumps", "first_header", "header_record", "iter_records",
           "line", "replay", "segment_path", "segments"]

FORMAT = 1
HEADER = "vb"  # the field that marks a segment's header record (row records have "k" instead)
_DECODER = json.JSONDecoder()
_KEY = re.compile(rb'"k":("(?:[^"\\]|\\.)*")')
log = logging.getLogger("videobatch")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_ORJSON_OPTIONS = (orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS)


def dumps(obj: Any) -> str:
    """``obj`` as compact JSON text (a header record, the checkpoint's metadata)."""
    return _ENCODER.encode(obj)


def line(record: dict[str, Any]) -> bytes:
    """A row's record as one journal line: compact UTF-8 JSON, keys in the order the record was
    built (row key, state, time first), and a newline.

    orjson writes it (about a tenth of what the json module takes; three records per row of a
    run). What it refuses goes to ``dumps``, which takes an integer past 64 bits or a key that is
    not a string, and refuses a datetime or a dataclass as before (orjson is told not to write
    them). A float that is not a number is written as null, as JSON has no NaN.
    """
    try:
        return orjson.dumps(record, option=_ORJSON_OPTIONS)
    except TypeError:  # (orjson.JSONEncodeError is one)
        return (dumps(record) + "\n").encode()


def segment_path(path: Path, seq: int) -> Path:
    return path.with_name(f"{path.name}.journal.{seq}")


def segments(path: Path) -> list[int]:
    prefix = path.name + ".journal."
    out = []
    if path.parent.exists():
        for entry in path.parent.iterdir():
            if entry.name.startswith(prefix) and entry.name[len(prefix):].isdigit():
                out.append(int(entry.name[len(prefix):]))
    return sorted(out)


def header_record(meta: Mapping[str, Any], seq: int, jobs: Iterable[Job]) -> dict[str, Any]:
    """The first record of segment ``seq``: the run's identity and each row's generation."""
    generations: dict[str, int] = {}
    untouched = True
    for job in jobs:
        if job.generation:
            generations[job.key] = job.generation
        if untouched and job.state not in (State.PENDING, State.CANCELLED):
            untouched = False
    return {HEADER: "journal", "format": FORMAT, "seq": seq,
            **{name: meta.get(name) for name in ("run_id", "fingerprint", "settings", "created_at", "keys")},
            "untouched": untouched, "generations": generations}


@dataclass
class Replay:
    """What a replay met besides row records: headers, and lines it could not (fully) use."""

    headers: list[dict[str, Any]] = field(default_factory=list)  # in segment order
    segments: list[int] = field(default_factory=list)  # the segments read
    torn: list[str] = field(default_factory=list)  # "<segment> line <n>": a last write cut short
    skipped: list[str] = field(default_factory=list)  # lines that could not be read
    salvaged: list[str] = field(default_factory=list)  # damaged lines whose record was recovered
    damaged_rows: set[str] = field(default_factory=set)  # rows named in skipped lines

    def _bad(self, where: str, line: bytes) -> None:
        self.skipped.append(where)
        found = _KEY.search(line)
        if found:
            try:
                key = json.loads(found.group(1))
            except ValueError:
                return
            if isinstance(key, str):
                self.damaged_rows.add(key)


def _salvage(line: bytes) -> dict[str, Any] | None:
    """A whole record inside a damaged line (random bytes before or after it), if there is one."""
    text = line.decode("utf-8", "replace")
    start = text.find('{"')
    while start != -1:
        try:
            record, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            pass
        else:
            if isinstance(record, dict) and (isinstance(record.get("k"), str) or HEADER in record):
                return record
        start = text.find('{"', start + 1)
    return None


def _records(name: str, data: bytes, report: Replay) -> Iterator[dict[str, Any]]:
    """Each usable record of segment ``name`` (its bytes: ``data``), noting the unusable ones."""
    lines = data.split(b"\n")
    last = len(lines) - 1
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError (torn inside a character)
            if n == last:  # no newline yet: the process died mid-write
                report.torn.append(f"{name} line {n + 1}")
                continue
            record = _salvage(line)
            if record is None:
                report._bad(f"{name} line {n + 1}", line)
                continue
            report.salvaged.append(f"{name} line {n + 1}")
        if type(record) is dict:
            yield record
        else:
            report._bad(f"{name} line {n + 1}", line)


def replay(path: Path, from_seq: int, by_key: Mapping[str, Job]) -> Replay:
    """Apply the records of segments numbered >= ``from_seq`` to the jobs they name."""
    report = Replay()
    for seq in segments(path):
        if seq < from_seq:
            continue
        segment = segment_path(path, seq)
        try:
            data = segment.read_bytes()
        except FileNotFoundError:  # folded into a snapshot meanwhile by a writer
            continue
        report.segments.append(seq)
        for record in _records(segment.name, data, report):
            key = None
            try:
                key = record.get("k")
                if key is None:
                    if record.get(HEADER) == "journal":
                        report.headers.append(record)
                    continue
                job = by_key.get(key)
                if job is not None:
                    job.apply(record)
            except (TypeError, ValueError, AttributeError):  # decodes, but is no record we wrote
                report.skipped.append(f"{segment.name}: a record of row {key!r}")
                if isinstance(key, str):
                    report.damaged_rows.add(key)
    for key in report.damaged_rows:
        job = by_key.get(key)
        if job is not None and job.state is State.PENDING:
            job.state = State.SUBMITTING  # its lost record may have been the intent to pay: look it up
    if report.skipped:
        log.warning(
            "checkpoint %s: skipped %d damaged journal line(s) (%s%s): the rows they recorded may "
            "look a step earlier in their life; rows named in them are looked up at the provider "
            "before anything is paid for them. `python -m videobatch repair %s` rewrites the "
            "checkpoint without them",
            path, len(report.skipped), ", ".join(report.skipped[:3]),
            ", ..." if len(report.skipped) > 3 else "", path)
    return report


def first_header(path: Path) -> dict[str, Any] | None:
    """The header record of the oldest journal segment that has a readable one, or None."""
    for seq in segments(path):
        try:
            with segment_path(path, seq).open("rb") as segment:
                record = json.loads(segment.readline())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and HEADER in record:
            return record
    return None


def iter_records(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """Every readable row record still in the journal (for diagnostics and tests)."""
    p = Path(path)
    report = Replay()
    for seq in segments(p):
        segment = segment_path(p, seq)
        for record in _records(segment.name, segment.read_bytes(), report):
            if "k" in record:
                yield record


class WriterLock:
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
        self._closer: weakref.finalize[[], WriterLock] | None = None

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
