"""The notebook dashboard: a live ipywidgets view of a run, fed by the runner's events.

Three layers, so the logic is testable without a browser:

- ``DashboardModel`` (pure Python): counts, throughput, ETA, the most recent rows, the latest
  finished clips, failures, and the throttling decision (``due()``). ``update(event)`` is O(1), so a
  10,000-row batch costs nothing per event; rendering happens at most every ``interval`` seconds.
- ``_View``: the ipywidgets (progress bar, stats, recent-rows table, clip previews, buttons),
  re-drawn from a ``Snapshot``. Clip widgets are made once per clip, never re-sent.
- ``Dashboard``: the observer. It renders from a timer on the runner's own event loop (the
  notebook's loop after ``Batch.start()``, a private thread's loop under ``videobatch.run``), so
  all drawing during a run happens on one thread; at the end it draws a final state and displays a
  static summary (text/plain + text/html) that stays in a saved notebook.

Where no widget front-end is present (terminal, CI) a ``Dashboard`` quietly becomes a tqdm bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import html
import importlib
import itertools
import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from .events import Event, Progress
from .jobs import Job, State
from .progress import TqdmProgress, _duration, summary, widget_frontend

if TYPE_CHECKING:
    from .api import Batch
    from .runner import RunContext

__all__ = ["Dashboard", "DashboardModel", "Row", "Snapshot"]

log = logging.getLogger("videobatch")

ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
         State.CANCELLED)
COLOURS = {State.PENDING: "#9e9e9e", State.SUBMITTING: "#64b5f6", State.GENERATING: "#1e88e5",
           State.COMPLETED: "#43a047", State.FAILED: "#e53935", State.CANCELLED: "#fb8c00"}


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
    def of(cls, job: Job) -> Row:
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
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._clips: deque[Job] = deque(maxlen=clips)
        self._failures: dict[str, Job] = {}
        self._running = False
        self._final: tuple[float, float] | None = None  # elapsed, throughput when it finished
        self._note = ""
        self._dirty = True
        self._last = float("-inf")

    @property
    def running(self) -> bool:
        return self._running

    def seed(self, jobs: Iterable[Job]) -> None:
        """Rows finished before this run: their clips and failures are shown too."""
        with self._lock:
            for job in jobs:
                self._track(job)

    def update(self, event: Event) -> None:
        with self._lock:
            self._progress = event.progress
            if event.kind == "start":
                self._running, self._final = True, None
            elif event.kind == "finish":
                self._end()
            job = event.job
            if job is not None:
                self._recent[job.key] = job
                self._recent.move_to_end(job.key, last=False)
                if len(self._recent) > self._recent_size:
                    self._recent.popitem()
                self._track(job)
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

    def _track(self, job: Job) -> None:
        if job.state is State.FAILED:
            self._failures[job.key] = job
        else:
            self._failures.pop(job.key, None)
        if job.state is State.COMPLETED and job.video_url and job not in self._clips:
            self._clips.append(job)

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
                clips=tuple(Row.of(j) for j in reversed(self._clips)),
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


def _display(obj: Any, **kwargs: Any) -> None:
    """``IPython.display.display`` (imported on use: the model never needs IPython)."""
    importlib.import_module("IPython.display").display(obj, **kwargs)


def _clip_widget(widgets: Any, url: str) -> Any:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(url2pathname(parsed.path))
        if not path.is_file():
            return widgets.HTML(f"<i>{html.escape(path.name)} is gone</i>")
        return widgets.Video.from_file(str(path), autoplay=False, loop=False, controls=True)
    return widgets.Video.from_url(url, autoplay=False, loop=False, controls=True)


def _close(box: Any) -> None:
    """Close a clip box and its children: the kernel and the browser let go of the video."""
    for child in box.children:
        child.close()
    box.close()


# ----------------------------------------------------------------------------------------- view
class _View:
    """The widgets. Only ``Dashboard._render`` writes to them (one thread at a time)."""

    def __init__(self, title: str) -> None:
        import ipywidgets as w

        self.w = w
        full = w.Layout(width="100%")
        self.title = w.HTML()
        self.set_title(title)
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=full)
        self.stats = w.HTML()
        self.cancel = w.Button(description="Cancel", icon="stop", button_style="danger",
                               tooltip="Stop: rows in flight stay resumable")
        self.retry = w.Button(description="Retry failed", icon="redo", button_style="warning",
                              tooltip="Queue failed rows again (each retry is a new paid request)",
                              disabled=True)
        self.note = w.HTML()
        self.table = w.HTML()
        self.clips = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self._shown: dict[str, tuple[str | None, Any]] = {}  # key -> (url, clip box)
        self.box = w.VBox([self.title, self.bar, self.stats,
                           w.HBox([self.cancel, self.retry, self.note]), self.table, self.clips])
        self.box.add_class("videobatch-dashboard")

    def set_title(self, title: str) -> None:
        self.title.value = f"<b>videobatch</b> · {html.escape(title)}"

    def render(self, snap: Snapshot, *, cancelling: bool = False, live: bool = True) -> None:
        self.bar.max = max(1, snap.total)
        self.bar.value = snap.done
        if not snap.running and snap.done:
            complete = snap.counts[State.COMPLETED] == snap.total
            self.bar.bar_style = "success" if complete else "warning"
        else:
            self.bar.bar_style = "info"
        self.stats.value = stats_html(snap)
        self.table.value = table_html(snap)
        self.note.value = f'<span style="color:#555">{html.escape(snap.note)}</span>'
        self.cancel.disabled = cancelling or not snap.running or not live
        self.retry.disabled = not snap.failures or not live
        wanted = [(row.key, row.video_url) for row in snap.clips]
        if wanted != [(key, url) for key, (url, _) in self._shown.items()]:
            self._show_clips(snap.clips)

    def _show_clips(self, rows: tuple[Row, ...]) -> None:
        """Clip widgets are made once per clip and closed when they scroll out (bounded)."""
        old, self._shown = self._shown, {}
        for row in rows:
            url, box = old.pop(row.key, (None, None))
            if box is None or url != row.video_url:
                if box is not None:
                    _close(box)
                box = self._clip_box(row)
            self._shown[row.key] = (row.video_url, box)
        self.clips.children = [box for _, box in self._shown.values()]
        for _, box in old.values():
            _close(box)

    def _clip_box(self, row: Row) -> Any:
        w = self.w
        try:
            player = _clip_widget(w, row.video_url or "")
        except OSError as exc:
            player = w.HTML(f"<i>{html.escape(str(exc))}</i>")
        player.layout = w.Layout(width="176px", height="132px")  # letterboxed: an even grid
        box = w.VBox([player, w.HTML(f"<small>{html.escape(row.key)}</small>")])
        box.add_class("vb-clip")
        return box


# ------------------------------------------------------------------------------------ dashboard
_RESTARTS: weakref.WeakKeyDictionary[Batch, Dashboard] = weakref.WeakKeyDictionary()


class Dashboard:
    """A live dashboard observer, shown under the cell.

    Made for you inside Jupyter (``progress=True``, the default). By hand: ``dash = Dashboard();
    batch = Batch(rows, progress=False, observers=[dash]); dash.batch = batch``. ``batch`` is what
    the buttons act on; without it Cancel acts through the run's context and Retry is unavailable.
    ``display=None`` shows it only where a widget front-end exists (else it is a tqdm bar);
    ``False`` builds the widgets without showing them (tests).
    """

    def __init__(self, batch: Batch | None = None, *, title: str | None = None,
                 display: bool | None = None, interval: float = 0.3, recent: int = 10,
                 clips: int = 4) -> None:
        self.batch = batch
        self._title = title
        self.model = DashboardModel(recent=recent, clips=clips, interval=interval)
        self._context: RunContext | None = None
        self._fallback: TqdmProgress | None = None
        self._display = widget_frontend() if display is None else display
        self._render_lock = threading.RLock()
        self._timer: asyncio.TimerHandle | None = None
        self._run_task: asyncio.Task[Any] | None = None
        self._cancelling = False
        self._live = True  # buttons work (False while a blocked cell drives the run)
        self._restarted = False  # this run was started by the Retry button, not by a cell
        self._home = contextvars.copy_context()  # the cell this dashboard was shown in
        self._cell: contextvars.Context | None = None  # a cell running now, if any
        self._shell: Any = None
        self.view: _View | None = None
        if not self._display and display is None:
            return  # no widget front-end: a tqdm bar is made at each start event
        self.view = _View(self._heading())
        self.view.cancel.on_click(self._on_cancel)
        self.view.retry.on_click(self._on_retry)
        if self._display:
            _display(self.view.box)

    def _heading(self) -> str:
        if self._title is not None:
            return self._title
        if self.batch is None:
            return "run"
        return f"{len(self.batch.jobs)} rows via {self.batch.provider.name}"

    @classmethod
    def for_batch(cls, batch: Batch, **kwargs: Any) -> Dashboard:
        """The dashboard for a run of ``batch``: the one whose Retry button restarted it, or new."""
        return _RESTARTS.pop(batch, None) or cls(batch, **kwargs)

    # ------------------------------------------------------------------ observer protocol
    def bind(self, context: RunContext) -> None:
        self._context = context

    def __call__(self, event: Event) -> None:
        if self.view is None:
            if self._fallback is None or event.kind == "start":
                self._fallback = TqdmProgress(event.progress.total)
            self._fallback(event)
            return
        self.model.update(event)
        if event.kind == "start":
            self._cancelling = False
            # ``videobatch.run`` in a cell drives the run on a private thread while the cell
            # blocks the kernel: clicks would only arrive after the end, so say how to stop.
            self._live = not self._display or threading.current_thread() is threading.main_thread()
            if not self._live:
                self.model.note("This cell is busy until the run ends: interrupt the kernel (■) to "
                                "stop it early. Batch(...).start() keeps these buttons live.")
            if self.batch is not None:  # rows finished before this run: show them too
                self.model.seed(self.batch.jobs)
            self.view.set_title(self._heading())
            self._watch_cells(True)
            self._render()
            try:  # the runner's loop: renders happen there, between runner steps
                self._run_task = asyncio.current_task()
                self._timer = asyncio.get_running_loop().call_later(self.model.interval, self._tick)
            except RuntimeError:
                self._run_task = None  # fed by hand (tests): call tick() yourself
        elif event.kind == "finish":
            self._finish()

    def tick(self) -> None:
        """Render if due; called by the timer every ``interval`` while a run goes on."""
        if self._run_task is not None and self._run_task.done():
            self._finish()  # the run ended without its finish event (it raised)
        elif self.model.due():
            self._render()

    def _tick(self) -> None:
        self._timer = None
        if not self.model.running:
            return
        try:
            self.tick()
        except Exception:
            log.exception("dashboard render failed; continuing")
        if self.model.running:
            self._timer = asyncio.get_running_loop().call_later(self.model.interval, self._tick)

    def _finish(self) -> None:
        self.model.end()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch_cells(False)
        if not self._live:
            self._live = True
            self.model.note("")
        snap = self._render()
        if self._restarted and self._cell is None:
            self._restarted = False  # no cell asked for this run: report in the dashboard itself
            self.model.note(summary_text(snap).splitlines()[0])
            self._render()
        elif self._display:
            # Into the cell that is waiting for the run (``await batch.wait()``) if one is
            # running, else next to the dashboard.
            (self._cell or self._home).copy().run(self._show_summary, snap)

    @staticmethod
    def _show_summary(snap: Snapshot) -> None:
        _display({"text/plain": summary_text(snap), "text/html": summary_html(snap)}, raw=True)

    def _render(self) -> Snapshot:
        with self._render_lock:
            snap = self.model.snapshot()
            if self.view is not None:
                self.view.render(snap, cancelling=self._cancelling, live=self._live)
            return snap

    # ------------------------------------------------------------------ which cell is running
    def _watch_cells(self, on: bool) -> None:
        if not self._display:
            return
        shell = importlib.import_module("IPython").get_ipython() if on else self._shell
        if shell is None:
            return
        hooks = (("pre_run_cell", self._cell_starts), ("post_run_cell", self._cell_ends))
        for name, hook in hooks:
            with contextlib.suppress(ValueError):  # already (un)registered
                (shell.events.register if on else shell.events.unregister)(name, hook)
        self._shell = shell if on else None

    def _cell_starts(self, *_: Any) -> None:
        self._cell = contextvars.copy_context()

    def _cell_ends(self, *_: Any) -> None:
        self._cell = None

    # ------------------------------------------------------------------ buttons
    def _on_cancel(self, _button: Any = None) -> None:
        if self.batch is not None:
            self.batch.cancel()
        elif self._context is not None:
            self._context.cancel()
        self.model.note("Cancelling: rows in flight keep their state and resume next time.")
        self._cancelling = True
        if self.view is not None:
            self.view.cancel.disabled = True
        if not self.model.running:
            self._render()

    def _on_retry(self, _button: Any = None) -> None:
        batch = self.batch
        if batch is None:
            return
        was_running = batch.running
        count = batch.retry_failed()
        if count and not was_running and not batch.running:
            _RESTARTS[batch] = self  # the restarted run reports here
            self._restarted = True
            batch.start()
        self.model.note(f"{count} failed row{'s' if count != 1 else ''} queued again "
                        f"(each retry is a new paid request)." if count else "No failed rows.")
        if not self.model.running:
            self._render()
