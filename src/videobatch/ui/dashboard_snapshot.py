"""One instant of a run as the dashboard draws it: ``Snapshot`` and its ``Row``s, rows named as
people know them (their ``id`` or row number, never the hash key of a table without ids).

``videobatch.ui.dashboard_model`` makes snapshots from the runner's events and renders them as
HTML and text; the widgets (``dashboard_view``) and the text bar (``progress``) draw them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .._jobs import RowSnapshot, State
from .actions import NO_RESUME, NO_RETRY, Action

__all__ = ["LEFT_STATES", "Row", "Snapshot", "excerpt", "row_label"]


LEFT_STATES = (State.PENDING, State.SUBMITTING, State.GENERATING)  # rows a run still works on
_HASH_KEY = re.compile(r"[0-9a-f]{16}")  # the key of a row from a table without an ``id`` column


def excerpt(text: str | None, width: int) -> str:
    """``text`` on one line, cut to at most ``width`` characters (ending in "…" when cut)."""
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def row_label(row: RowSnapshot, ids: bool | None = None) -> str:
    """How a person knows a row: its ``id`` (the key, when the table had an ``id`` column), else
    its row number (1-based, as in input errors). ``ids=None``: tell by the key's look."""
    if ids or (ids is None and not _HASH_KEY.fullmatch(row.key)):
        return row.key
    return f"row {row.index + 1}"


@dataclass(frozen=True)
class Row:
    key: str
    label: str  # what people call it: its id or "row 7"
    prompt: str  # an excerpt
    state: State
    attempts: int
    error: str | None
    error_kind: str | None
    video_url: str | None

    @classmethod
    def of(cls, job: RowSnapshot, label: str | None = None) -> Row:
        label = label or row_label(job)
        prompt = excerpt(job.request.prompt, 70) or ("(image)" if job.request.image else "")
        error = job.error
        if error and label != job.key:  # "[row '3f9c…', code 1301] ..." -> "[row 4, code 1301] ..."
            error = error.replace(f"row {job.key!r}", label)
        return cls(job.key, label, prompt, job.state, job.attempts, error, job.error_kind,
                   job.video_url)


@dataclass(frozen=True)
class Snapshot:
    """Everything a view draws, copied at one instant."""

    total: int
    counts: Counter[State]
    elapsed: float  # this run's wall time (frozen once it ends)
    throughput: float | None  # rows sent and ended per second in this run; None when not running
    eta: float | None  # None when not running, or before this run's pace is known
    slots_in_use: int
    slots_limit: int
    rows: tuple[Row, ...]  # most recent first
    clips: tuple[Row, ...]  # latest completed rows with a video, newest first
    failures: tuple[Row, ...]  # the first few failed rows (``counts`` has how many)
    running: bool
    note: str
    status: str = "Not started"  # Running, Cancelling…, Cancelled, Stopped, Finished
    reason: str | None = None  # why it stopped, when it did on its own
    unknown: tuple[Row, ...] = ()  # the first few rows of unknown outcome
    retry: Action = NO_RETRY
    resume: Action = NO_RESUME

    @property
    def done(self) -> int:
        """Rows that ended with an outcome: completed or failed (cancelled rows are not done)."""
        return self.counts[State.COMPLETED] + self.counts[State.FAILED]

    @property
    def left(self) -> int:
        """Rows this run still works on (waiting or in flight)."""
        return sum(self.counts[s] for s in LEFT_STATES)
