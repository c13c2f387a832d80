"""The dashboard's model: what a run looks like at a glance, as plain data and HTML, no widgets.

``DashboardModel`` follows the runner's events — counts per state, the pace of this run, the most
recent rows, the latest finished clips, every clip and failure for the gallery (``.gallery``,
``videobatch.ui.gallery``), spent / reserved / budget and the estimated and actual cost of what
was sent (``.spend``, ``videobatch.ui.spend``), rows of unknown
outcome, what each button would do — and decides when a redraw is due (``due()``).
``update(event)`` is O(1), so a 10,000-row batch costs nothing per event. The ``*_html`` and
``summary_text`` functions render a ``Snapshot`` (that data, ``Snapshot`` and ``Row``, is
``videobatch.ui.dashboard_snapshot``; re-exported here).
``videobatch.ui.dashboard`` puts this on screen with ipywidgets; keeping the two apart lets the
logic be tested without a browser or a kernel.

What it promises to show truthfully:
- cancelled rows are their own state, never "done" (done = completed or failed);
- the pace (rows/s) and ETA count only rows sent and ended in this run (not rows finished in an
  earlier run, nor rows that were already in flight when it resumed, nor cancelled ones) and are
  not shown once the run is over;
- the status says Running / Cancelling… / Cancelled / Stopped (with the reason) / Finished;
- rows are named by their ``id`` or row number, never by the hash key of a table without ids.
"""

from __future__ import annotations

import html
import itertools
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

from .._events import Event, Progress
from .._jobs import RowSnapshot, State
from .._spend import Figures
from .actions import Action, Pool, Pricer, Prices
from .dashboard_snapshot import LEFT_STATES, Row, Snapshot, excerpt, row_label
from .gallery import PER_PAGE, Gallery
from .spend import SendPricer, Spend, spend_html
from .text import duration, summary

__all__ = ["COLOURS", "ORDER", "DashboardModel", "Row", "Snapshot", "attention_html", "chips_html",
           "row_label", "stats_html", "status_html", "summary_html", "summary_text", "table_html"]


ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
         State.UNKNOWN, State.CANCELLED)
COLOURS = {State.PENDING: "#9e9e9e", State.SUBMITTING: "#64b5f6", State.GENERATING: "#1e88e5",
           State.COMPLETED: "#43a047", State.FAILED: "#e53935", State.UNKNOWN: "#8e24aa",
           State.CANCELLED: "#fb8c00"}
UNKNOWN_HELP = ("a paid task may exist for each: check them in the provider's console; "
                "batch.retry(unknown=True) resubmits them (may pay twice)")


# ---------------------------------------------------------------------------------------- model
class DashboardModel:
    """What the dashboard shows, kept current by runner events; knows nothing of widgets.

    ``label``: how rows are named (default ``row_label``); ``price``: the estimated price of a
    request (``Provider.estimate_cost``), for the buttons' cost estimates.
    """

    def __init__(self, *, recent: int = 10, clips: int = 4, failures: int = 10,
                 interval: float = 0.3, heartbeat: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 label: Callable[[RowSnapshot], str] = row_label,
                 price: Pricer | None = None, per_page: int = PER_PAGE,
                 spend: SendPricer | None = None) -> None:
        self.interval = interval  # at most one render per interval while events arrive
        self.heartbeat = heartbeat  # re-render this often anyway while running (elapsed, ETA)
        self.renders = 0
        self._clock = clock
        self._label = label
        prices = Prices(price)
        self._retry, self._resume = Pool.retry(prices), Pool.resume(prices)
        self._recent_size, self._failures_shown = recent, failures
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._recent: OrderedDict[str, RowSnapshot] = OrderedDict()
        self._clips: OrderedDict[str, RowSnapshot] = OrderedDict()  # oldest first
        self._clips_shown = clips
        self.gallery = Gallery(per_page)  # every finished clip, a page at a time; failures by reason
        self._gallery_on = bool(clips)  # the text bar (clips=0) keeps no gallery
        self.spend = Spend(spend)  # estimated (and actual) cost of the submissions sent
        self._figures: Callable[[], Figures] | None = None  # the run's spent / reserved / budget
        # Every row in these states, by key (what the buttons count and price).
        self._failures: dict[str, RowSnapshot] = {}
        self._cancelled: dict[str, RowSnapshot] = {}
        self._unknown: dict[str, RowSnapshot] = {}
        self._running = False
        self._elapsed: float | None = None  # this run's wall time, once it ended
        self._sent: set[str] = set()  # rows sent in this run and not ended yet
        self._ended = 0  # rows sent in this run that ended (completed or failed): the pace
        self._cancel_asked = False
        self._cancelled_before = 0  # cancelled rows when this run started
        self._conclusion: tuple[bool, str | None] | None = None  # (cancelled, reason), told after
        self._note = ""
        self._dirty = True
        self._last = float("-inf")

    @property
    def running(self) -> bool:
        return self._running

    def describe_rows(self, *, label: Callable[[RowSnapshot], str] = row_label,
                      price: Pricer | None = None, spend: SendPricer | None = None) -> None:
        """How rows are named and priced (the batch's id column and providers say)."""
        with self._lock:
            self._label, self._dirty = label, True
            self.spend.pricer = spend
            prices = Prices(price)
            self._retry, self._resume = Pool.retry(prices), Pool.resume(prices)
            for row in self._failures.values():
                self._retry.put(row)
            for row in self._cancelled.values():
                self._resume.put(row)

    def describe_spend(self, figures: Callable[[], Figures] | None) -> None:
        """Where spent / reserved / budget are read when drawing (``RunContext.spend``)."""
        with self._lock:
            self._figures, self._dirty = figures, True

    def label(self, row: RowSnapshot) -> str:
        """What the dashboard calls ``row``."""
        return self._label(row)

    def seed(self, rows: Iterable[RowSnapshot]) -> None:
        """The batch's rows as this run starts (finished, failed, cancelled, unknown): shown too,
        and they replace what an earlier run left (a retry between runs moved some)."""
        with self._lock:
            self._failures.clear()
            self._cancelled.clear()
            self._unknown.clear()
            self._retry.clear()
            self._resume.clear()
            self.gallery.clear()
            self.spend.clear()
            for row in rows:
                self._track(row)
            self._dirty = True

    def update(self, event: Event) -> None:
        with self._lock:
            self._progress = progress = event.progress
            if event.kind == "start":
                self._running, self._elapsed, self._conclusion = True, None, None
                self._cancel_asked = False
                self._sent.clear()
                self._ended = 0
                self._cancelled_before = progress.counts[State.CANCELLED]
            elif event.kind == "finish":
                self._end()
            row = event.row
            if row is not None:
                if event.kind == "transition":
                    self._pace(row.key, event.old, event.new)
                self._recent[row.key] = row
                self._recent.move_to_end(row.key, last=False)
                if len(self._recent) > self._recent_size:
                    self._recent.popitem()
                self._track(row)
            self._dirty = True

    def _pace(self, key: str, old: State | None, new: State | None) -> None:
        """Count rows sent in this run that ended: only they tell how fast this run goes."""
        if old is State.PENDING and new is State.SUBMITTING:
            self._sent.add(key)
        elif new in (State.COMPLETED, State.FAILED):
            if key in self._sent:
                self._sent.discard(key)
                self._ended += 1
        elif new in (State.CANCELLED, State.UNKNOWN):
            self._sent.discard(key)

    def end(self) -> None:
        """The run is over (also when it ended without a finish event): freeze the clock."""
        with self._lock:
            self._end()

    def _end(self) -> None:
        p = self._progress
        if self._running and p is not None:
            self._elapsed = p.elapsed
        self._running, self._dirty = False, True

    def cancel_asked(self) -> None:
        """Cancel was pressed: the status says Cancelling… until the run ends."""
        with self._lock:
            self._cancel_asked, self._dirty = True, True

    def conclude(self, *, cancelled: bool, reason: str | None) -> None:
        """How the run ended, once its outcome is known: cancelled, or stopped for ``reason``."""
        with self._lock:
            self._conclusion, self._dirty = (cancelled, reason), True

    def _track(self, row: RowSnapshot) -> None:
        key, state = row.key, row.state
        for wanted, rows in ((State.FAILED, self._failures), (State.CANCELLED, self._cancelled),
                             (State.UNKNOWN, self._unknown)):
            if state is wanted:
                rows[key] = row
            else:
                rows.pop(key, None)
        for wanted, pool in ((State.FAILED, self._retry), (State.CANCELLED, self._resume)):
            if state is wanted:
                pool.put(row)
            else:
                pool.drop(key)
        if self._gallery_on:
            self.gallery.track(row)
        self.spend.track(row)
        if state is State.COMPLETED and row.video_url:
            clips = self._clips  # a clip already shown keeps its place, with its newest snapshot
            fresh = key not in clips
            clips[key] = row
            if fresh and len(clips) > self._clips_shown:
                clips.popitem(last=False)

    def note(self, text: str) -> None:
        """A line shown under the buttons (what a click did)."""
        with self._lock:
            self._note, self._dirty = text, True

    def touch(self) -> None:
        """Something on screen changed outside the events (a gallery page turned): redraw."""
        with self._lock:
            self._dirty = True

    def due(self) -> bool:
        """Whether a render is wanted now: changes are pending and the interval has passed, or
        the heartbeat is due while running. Never more often than every ``interval``."""
        since = self._clock() - self._last
        if since < self.interval:
            return False
        return self._dirty or (self._running and since >= self.heartbeat)

    def actions(self) -> tuple[Action, Action]:
        """What Retry failed and Resume cancelled would do now."""
        with self._lock:
            return self._retry.action(), self._resume.action()

    def snapshot(self) -> Snapshot:
        """The current state; counts as a render (clears the dirty flag)."""
        with self._lock:
            self.renders += 1
            self._dirty, self._last = False, self._clock()
            p = self._progress
            if p is None:
                return Snapshot(0, Counter(), 0.0, None, None, 0, 0, (), (), (), False, self._note)
            counts = Counter(p.counts)
            left = sum(counts[s] for s in LEFT_STATES)
            rate = eta = None
            if self._running:
                elapsed = p.elapsed
                if self._ended and elapsed > 0:
                    rate = self._ended / elapsed
                    eta = left / rate if left else None
            else:
                elapsed = p.elapsed if self._elapsed is None else self._elapsed
            status, reason = self._status(counts, left)
            label = self._label
            page, groups = self.gallery.view(label)
            return Snapshot(
                total=p.total, counts=counts, elapsed=elapsed, throughput=rate, eta=eta,
                slots_in_use=p.slots_in_use if self._running else 0, slots_limit=p.slots_limit,
                rows=tuple(Row.of(j, label(j)) for j in self._recent.values()),
                clips=tuple(Row.of(j, label(j)) for j in reversed(self._clips.values())),
                failures=tuple(Row.of(j, label(j)) for j in
                               itertools.islice(self._failures.values(), self._failures_shown)),
                running=self._running, note=self._note, status=status, reason=reason,
                unknown=tuple(Row.of(j, label(j)) for j in
                              itertools.islice(self._unknown.values(), self._failures_shown)),
                retry=self._retry.action(), resume=self._resume.action(),
                gallery=page, failure_groups=groups, spend=self.spend.lines(),
                figures=self._figures() if self._figures is not None else None)

    def _status(self, counts: Counter[State], left: int) -> tuple[str, str | None]:
        if self._running:
            return ("Cancelling…" if self._cancel_asked else "Running"), None
        if self._conclusion is not None:
            cancelled, reason = self._conclusion
        else:  # not told yet: what the rows say
            cancelled = self._cancel_asked or counts[State.CANCELLED] > self._cancelled_before
            reason = None
        if reason:
            return "Stopped", reason
        if cancelled:
            return "Cancelled", None
        if left:
            return "Stopped", f"{left} row{'s' if left != 1 else ''} not finished"
        return "Finished", None


# ----------------------------------------------------------------------------------------- html
_STATUS_COLOURS = {"Running": "#1e88e5", "Cancelling…": "#fb8c00", "Cancelled": "#fb8c00",
                   "Stopped": "#e53935", "Finished": "#43a047"}


def chips_html(snap: Snapshot) -> str:
    chips = []
    for state in ORDER:
        n = snap.counts[state]
        if n or state in (State.COMPLETED, State.FAILED):
            chips.append(f'<span style="background:{COLOURS[state]};color:white;border-radius:9px;'
                         f'padding:1px 8px;margin-right:4px">{state.value} {n}</span>')
    return "".join(chips)


def status_html(snap: Snapshot) -> str:
    colour = _STATUS_COLOURS.get(snap.status, "#555")
    text = f'<b style="color:{colour}">{html.escape(snap.status)}</b>'
    if snap.reason:
        text += f": {html.escape(snap.reason)}"
    return f'<span class="vb-status">{text}</span>'


def stats_html(snap: Snapshot) -> str:
    parts = [status_html(snap), f"<b>{snap.done} / {snap.total}</b> done"]
    if snap.running:
        parts += snap.pace()
        parts.append(f"slots {snap.slots_in_use} / {snap.slots_limit}")
    elif snap.total:
        parts.append(f"took {duration(snap.elapsed)}")
    return (f'<div class="vb-stats">{chips_html(snap)}</div>'
            f'<div class="vb-pace" style="color:#555">{" · ".join(parts)}</div>'
            + spend_html(snap.spend, snap.figures) + attention_html(snap))


def attention_html(snap: Snapshot) -> str:
    """Rows of unknown outcome: their own block, with what to check."""
    n = snap.counts[State.UNKNOWN]
    if not n:
        return ""
    rows = ", ".join(html.escape(r.label) for r in snap.unknown)
    more = f" and {n - len(snap.unknown)} more" if n > len(snap.unknown) else ""
    return (f'<div class="vb-unknown" style="color:{COLOURS[State.UNKNOWN]}">'
            f"<b>Outcome unknown for {n} row{'s' if n != 1 else ''}</b> ({rows}{more}): "
            f"{html.escape(UNKNOWN_HELP)}.</div>")


def table_html(snap: Snapshot) -> str:
    if not snap.rows:
        return ""
    cells = "padding:2px 8px;text-align:left;vertical-align:top"
    head = "".join(f'<th style="{cells}">{h}</th>' for h in
                   ("row", "prompt", "state", "attempts", "error"))
    body = []
    for row in snap.rows:
        state = f'<span style="color:{COLOURS[row.state]};font-weight:bold">{row.state.value}</span>'
        values = (html.escape(row.label), html.escape(row.prompt), state, str(row.attempts),
                  html.escape(excerpt(row.error, 90)))
        body.append("<tr>" + "".join(f'<td style="{cells}">{v}</td>' for v in values) + "</tr>")
    return (f'<table class="vb-rows" style="border-collapse:collapse;font-size:12px">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def summary_text(snap: Snapshot) -> str:
    """The end-of-run summary: status and counts, why it stopped, what to do about the rows left."""
    lines = [f"{snap.status}: {summary(snap.counts, snap.elapsed, [])}"]
    if snap.reason:
        lines.append(f"Why: {snap.reason}")
    cancelled = snap.counts[State.CANCELLED]
    if cancelled:
        lines.append(f"{cancelled} cancelled row{'s were' if cancelled != 1 else ' was'} not sent: "
                     "batch.resume_cancelled() (or the Resume button) sends them; running the "
                     "same cell again resumes them too.")
    if snap.left and not snap.running:
        lines.append("Stopped early: run the same cell again to resume (nothing is paid twice).")
    lines += [f"  {r.label}: [{r.error_kind or 'error'}] {r.error}" for r in snap.failures]
    more = snap.counts[State.FAILED] - len(snap.failures)
    if more > 0:
        lines.append(f"  ... and {more} more failed (see the results table)")
    unknown = snap.counts[State.UNKNOWN]
    if unknown:
        lines.append(f"Outcome unknown for {unknown} row{'s' if unknown != 1 else ''}: "
                     f"{UNKNOWN_HELP}.")
        lines += [f"  {r.label}: {r.error or 'no answer to the submit'}" for r in snap.unknown]
        if unknown > len(snap.unknown):
            lines.append(f"  ... and {unknown - len(snap.unknown)} more (see the results table)")
    return "\n".join(lines)


def summary_html(snap: Snapshot) -> str:
    lines = summary_text(snap).splitlines()
    items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in lines[1:])
    return (f'<div class="vb-summary" style="font-family:sans-serif;margin:4px 0">'
            f"<b>videobatch</b> · {html.escape(lines[0])}<div style='margin:4px 0'>"
            f"{chips_html(snap)}</div>{f'<ul>{items}</ul>' if items else ''}</div>")
