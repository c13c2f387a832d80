"""The dashboard's model: what a run looks like at a glance, as plain data and HTML, no widgets.

``DashboardModel`` follows the runner's events — counts, throughput, ETA, the most recent rows, the
latest finished clips, failures — and decides when a redraw is due (``due()``). ``update(event)`` is
O(1), so a 10,000-row batch costs nothing per event. The ``*_html``/``summary_text`` functions
render a ``Snapshot``. ``videobatch.ui.dashboard`` puts this on screen with ipywidgets; keeping the
two apart lets the logic be tested without a browser or a kernel.
"""

from __future__ import annotations

import html
import itertools
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .._events import Event, Progress
from .._jobs import RowSnapshot, State
from .progress import _duration, summary

__all__ = ["COLOURS", "ORDER", "DashboardModel", "Row", "Snapshot", "chips_html", "stats_html",
           "summary_html", "summary_text", "table_html"]


ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
         State.UNKNOWN, State.CANCELLED)
COLOURS = {State.PENDING: "#9e9e9e", State.SUBMITTING: "#64b5f6", State.GENERATING: "#1e88e5",
           State.COMPLETED: "#43a047", State.FAILED: "#e53935", State.UNKNOWN: "#8e24aa",
           State.CANCELLED: "#fb8c00"}


def _cut(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Row:
    key: str
    prompt: str  # an excerpt
    state: State
    attempts: int
    error: str | None
    error_kind: str | None
    video_url: str | None

    @classmethod
    def of(cls, job: RowSnapshot) -> Row:
        prompt = _cut(job.request.prompt, 70) or ("(image)" if job.request.image else "")
        return cls(job.key, prompt, job.state, job.attempts, job.error, job.error_kind,
                   job.video_url)


@dataclass(frozen=True)
class Snapshot:
    """Everything a view draws, copied at one instant."""

    total: int
    counts: Counter[State]
    elapsed: float
    throughput: float  # rows finished per second in this run
    eta: float | None
    slots_in_use: int
    slots_limit: int
    rows: tuple[Row, ...]  # most recent first
    clips: tuple[Row, ...]  # latest completed rows with a video, newest first
    failures: tuple[Row, ...]  # the first few failed rows (``counts`` has how many)
    running: bool
    note: str

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in (State.COMPLETED, State.FAILED, State.CANCELLED))


class DashboardModel:
    """What the dashboard shows, kept current by runner events; knows nothing of widgets."""

    def __init__(self, *, recent: int = 10, clips: int = 4, failures: int = 10,
                 interval: float = 0.3, heartbeat: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval  # at most one render per interval while events arrive
        self.heartbeat = heartbeat  # re-render this often anyway while running (elapsed, ETA)
        self.renders = 0
        self._clock = clock
        self._recent_size, self._failures_shown = recent, failures
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._recent: OrderedDict[str, RowSnapshot] = OrderedDict()
        self._clips: OrderedDict[str, RowSnapshot] = OrderedDict()  # oldest first
        self._clips_shown = clips
        self._failures: dict[str, RowSnapshot] = {}
        self._running = False
        self._final: tuple[float, float] | None = None  # elapsed, throughput when it finished
        self._note = ""
        self._dirty = True
        self._last = float("-inf")

    @property
    def running(self) -> bool:
        return self._running

    def seed(self, rows: Iterable[RowSnapshot]) -> None:
        """Rows finished before this run: their clips and failures are shown too."""
        with self._lock:
            for row in rows:
                self._track(row)

    def update(self, event: Event) -> None:
        with self._lock:
            self._progress = event.progress
            if event.kind == "start":
                self._running, self._final = True, None
            elif event.kind == "finish":
                self._end()
            row = event.row
            if row is not None:
                self._recent[row.key] = row
                self._recent.move_to_end(row.key, last=False)
                if len(self._recent) > self._recent_size:
                    self._recent.popitem()
                self._track(row)
            self._dirty = True

    def end(self) -> None:
        """The run is over (also when it ended without a finish event): freeze the clock."""
        with self._lock:
            self._end()

    def _end(self) -> None:
        p = self._progress
        if self._running and p is not None:
            self._final = (p.elapsed, p.throughput)
        self._running, self._dirty = False, True

    def _track(self, row: RowSnapshot) -> None:
        if row.state is State.FAILED:
            self._failures[row.key] = row
        else:
            self._failures.pop(row.key, None)
        if row.state is State.COMPLETED and row.video_url:
            clips = self._clips  # a clip already shown keeps its place, with its newest snapshot
            fresh = row.key not in clips
            clips[row.key] = row
            if fresh and len(clips) > self._clips_shown:
                clips.popitem(last=False)

    def note(self, text: str) -> None:
        """A line shown under the buttons (what a click did)."""
        with self._lock:
            self._note, self._dirty = text, True

    def due(self) -> bool:
        """Whether a render is wanted now: changes are pending and the interval has passed, or
        the heartbeat is due while running. Never more often than every ``interval``."""
        since = self._clock() - self._last
        if since < self.interval:
            return False
        return self._dirty or (self._running and since >= self.heartbeat)

    def snapshot(self) -> Snapshot:
        """The current state; counts as a render (clears the dirty flag)."""
        with self._lock:
            self.renders += 1
            self._dirty, self._last = False, self._clock()
            p = self._progress
            if p is None:
                return Snapshot(0, Counter(), 0.0, 0.0, None, 0, 0, (), (), (), False, self._note)
            elapsed, rate = self._final or (p.elapsed, p.throughput)
            eta = p.eta if self._running or p.done >= p.total else None
            return Snapshot(
                total=p.total, counts=Counter(p.counts), elapsed=elapsed, throughput=rate, eta=eta,
                slots_in_use=p.slots_in_use if self._running else 0, slots_limit=p.slots_limit,
                rows=tuple(Row.of(j) for j in self._recent.values()),
                clips=tuple(Row.of(j) for j in reversed(self._clips.values())),
                failures=tuple(Row.of(j) for j in
                               itertools.islice(self._failures.values(), self._failures_shown)),
                running=self._running, note=self._note)


# ----------------------------------------------------------------------------------------- html
def chips_html(snap: Snapshot) -> str:
    chips = []
    for state in ORDER:
        n = snap.counts[state]
        if n or state in (State.COMPLETED, State.FAILED):
            chips.append(f'<span style="background:{COLOURS[state]};color:white;border-radius:9px;'
                         f'padding:1px 8px;margin-right:4px">{state.value} {n}</span>')
    return "".join(chips)


def stats_html(snap: Snapshot) -> str:
    eta = "–" if snap.eta is None else _duration(snap.eta)
    parts = [f"<b>{snap.done} / {snap.total}</b> done", f"{snap.throughput:.2f} rows/s",
             f"ETA {eta}", f"elapsed {_duration(snap.elapsed)}"]
    if snap.running:
        parts.append(f"slots {snap.slots_in_use} / {snap.slots_limit}")
    return (f'<div class="vb-stats">{chips_html(snap)}</div>'
            f'<div class="vb-pace" style="color:#555">{" · ".join(parts)}</div>')


def table_html(snap: Snapshot) -> str:
    if not snap.rows:
        return ""
    cells = "padding:2px 8px;text-align:left;vertical-align:top"
    head = "".join(f'<th style="{cells}">{h}</th>' for h in
                   ("key", "prompt", "state", "attempts", "error"))
    body = []
    for row in snap.rows:
        state = f'<span style="color:{COLOURS[row.state]};font-weight:bold">{row.state.value}</span>'
        values = (html.escape(row.key), html.escape(row.prompt), state, str(row.attempts),
                  html.escape(_cut(row.error, 90)))
        body.append("<tr>" + "".join(f'<td style="{cells}">{v}</td>' for v in values) + "</tr>")
    return (f'<table class="vb-rows" style="border-collapse:collapse;font-size:12px">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def summary_text(snap: Snapshot) -> str:
    lines = [summary(snap.counts, snap.elapsed, [])]
    if snap.done < snap.total or snap.counts[State.CANCELLED]:
        lines.append("Stopped early: run the same cell again to resume (nothing is paid twice).")
    lines += [f"  {r.key}: [{r.error_kind or 'error'}] {r.error}" for r in snap.failures]
    more = snap.counts[State.FAILED] - len(snap.failures)
    if more > 0:
        lines.append(f"  ... and {more} more failed (see the results table)")
    return "\n".join(lines)


def summary_html(snap: Snapshot) -> str:
    lines = summary_text(snap).splitlines()
    items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in lines[1:])
    return (f'<div class="vb-summary" style="font-family:sans-serif;margin:4px 0">'
            f"<b>videobatch</b> · {html.escape(lines[0])}<div style='margin:4px 0'>"
            f"{chips_html(snap)}</div>{f'<ul>{items}</ul>' if items else ''}</div>")
