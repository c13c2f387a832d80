"""One instant of a run as the dashboard draws it: ``Snapshot`` and its ``Row``s, rows named as
people know them (their ``id`` or row number, never the hash key of a table without ids), and the
gallery's page of finished clips (``Tile``, ``GalleryPage``) and failures by reason.

``videobatch.ui.dashboard_model`` makes snapshots from the runner's events and renders them as
HTML and text; the widgets (``dashboard_view``) and the text bar (``progress``) draw them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from .._jobs import RowSnapshot, State
from .._spend import Figures
from .actions import NO_RESUME, NO_RETRY, Action
from .text import duration

__all__ = ["LEFT_STATES", "FailureGroup", "GalleryPage", "Row", "Snapshot", "SpendLine", "Tile", "excerpt",
           "local_file", "row_label", "row_namer"]


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


def row_namer(batch: Any) -> Callable[[RowSnapshot], str]:
    """How a batch's rows are named: by their id when its table has an ``id`` column, else by
    number (``batch``: what a dashboard acts on; None: tell by the key's look)."""
    frame = getattr(getattr(batch, "prompts", None), "frame", None)
    if frame is None:
        return row_label
    ids = "id" in frame.columns
    return lambda row: row_label(row, ids)


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


def local_file(url: str | None, extras: Mapping[str, Any]) -> str | None:
    """The clip as a file on this machine: the download (``local_path``), or a ``file://`` URL."""
    path = extras.get("local_path")
    if isinstance(path, str) and path:
        return path
    if url and urlparse(url).scheme == "file":
        return url2pathname(urlparse(url).path)
    return None


@dataclass(frozen=True)
class Tile:
    """One finished clip as the gallery shows it: a poster (or a placeholder) and a caption."""

    key: str
    label: str  # its id or "row 7", never a hash
    prompt: str  # the whole prompt (the caption cuts it; the tooltip and player show it all)
    video_url: str
    file: str | None  # the clip on this machine, if it is there
    poster: str | None  # a poster PNG on this machine (made by downloads), else None

    @classmethod
    def of(cls, row: RowSnapshot, label: str) -> Tile:
        poster = row.extras.get("thumbnail")
        return cls(row.key, label, row.request.prompt or ("(image)" if row.request.image else ""),
                   row.video_url or "", local_file(row.video_url, row.extras),
                   poster if isinstance(poster, str) and poster else None)


@dataclass(frozen=True)
class GalleryPage:
    """The clips on screen: ``tiles`` of page ``page`` (0-based) of ``pages``; ``total`` clips."""

    tiles: tuple[Tile, ...] = ()
    page: int = 0
    pages: int = 1
    total: int = 0
    first: int = 0  # the 1-based number of the first tile (0 when there is none)
    playing: Tile | None = None  # the clip in the player, if one was picked


@dataclass(frozen=True)
class FailureGroup:
    """Failed rows that share a reason (``error_kind``): how many, and the first few."""

    kind: str
    count: int
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class SpendLine:
    """Submissions one provider (and model) took, and their estimated cost (None: unknown); of
    them, ``actual_rows`` whose task ended with an actual cost from the provider, ``actual`` USD."""

    provider: str
    model: str | None
    rows: int
    cost: float | None
    actual_rows: int = 0
    actual: float = 0.0


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
    gallery: GalleryPage = GalleryPage()  # the finished clips on the gallery's current page
    failure_groups: tuple[FailureGroup, ...] = ()  # failed rows by reason, most rows first
    spend: tuple[SpendLine, ...] = ()  # estimated cost of the submissions sent, per provider/model
    # spent / reserved / budget of the whole checkpoint (``videobatch._spend``), while a run is bound
    figures: Figures | None = None

    @property
    def done(self) -> int:
        """Rows that ended with an outcome: completed or failed (cancelled rows are not done)."""
        return self.counts[State.COMPLETED] + self.counts[State.FAILED]

    @property
    def left(self) -> int:
        """Rows this run still works on (waiting or in flight)."""
        return sum(self.counts[s] for s in LEFT_STATES)

    def pace(self) -> list[str]:
        """While the run goes on: its rows per second, ETA and elapsed time, as words."""
        parts = []
        if self.throughput is not None:
            parts.append(f"{self.throughput:.2f} rows/s")
        if self.eta is not None:
            parts.append(f"ETA {duration(self.eta)}")
        parts.append(f"elapsed {duration(self.elapsed)}")
        return parts
