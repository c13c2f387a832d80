"""The notebook dashboard: a live ipywidgets view of a run, fed by the runner's events.

Two layers, over the model in ``videobatch.ui.dashboard_model`` (counts, ETA, recent rows,
throttling — plain Python, tested without a browser):

- ``DashboardView`` (``videobatch.ui.dashboard_view``): the ipywidgets (progress bar, status and
  stats with the estimated cost, recent-rows table, buttons that say what they will do and cost,
  the gallery of every clip with its one player and failures by reason), re-drawn from a
  ``Snapshot``. A fixed set of widgets: none is made per row; only the page on screen is sent.
- ``Dashboard``, here: the observer. It renders from a timer on the runner's own event loop (the
  notebook's loop after ``Batch.start()``, a private thread's loop under ``videobatch.run``), so
  all drawing during a run happens on one thread. Beside the widgets it keeps a static view of the
  last state (``videobatch.ui.static_view``), shown where the widgets cannot be (saved, reopened,
  kernel restarted); at the end it draws a final state and displays a static summary (text/plain
  + text/html) that stays in a saved notebook. When the run's outcome
  is known (why it stopped), the dashboard and every summary it displayed are brought up to date,
  also after a run the Retry or Resume button started: they agree with ``batch.results()``.

Where no widget front-end is present (terminal, CI) a ``Dashboard`` quietly becomes a tqdm bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from .._events import Event, RunContext
from .._jobs import State
from .actions import cancelled_text, pricer_of
from .dashboard_model import (
    DashboardModel,
    Row,
    Snapshot,
    summary_html,
    summary_text,
    table_html,
)
from .dashboard_snapshot import row_namer
from .dashboard_view import DashboardView
from .gallery import PER_PAGE
from .progress import TqdmProgress, widget_frontend
from .spend import spend_pricer
from .static_view import StaticOutput, live_style

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._jobs import Job


class Batch(Protocol):
    """What the buttons act on: ``videobatch.Batch`` (the dashboard never imports the faces)."""

    jobs: Sequence[Job]

    @property
    def provider(self) -> Any: ...
    @property
    def running(self) -> bool: ...
    def cancel(self) -> None: ...
    def retry_failed(self) -> int: ...
    def resume_cancelled(self) -> int: ...
    def start(self) -> Any: ...

__all__ = ["Dashboard", "DashboardModel", "Row", "Snapshot", "summary_html", "summary_text",
           "table_html"]

log = logging.getLogger("videobatch")


def _display(obj: Any, **kwargs: Any) -> Any:
    """``IPython.display.display`` (imported on use: the model never needs IPython); with
    ``display_id=True`` it returns a handle whose ``update()`` redraws that output."""
    return importlib.import_module("IPython.display").display(obj, **kwargs)


def _reason(error: BaseException) -> str:
    """Why a run stopped, in a line: the error's own message names the row and what to do."""
    kind = getattr(error, "kind", None) or type(error).__name__
    return f"{kind}: {error}"


# ------------------------------------------------------------------------------------ dashboard
_RESTARTS: weakref.WeakKeyDictionary[Batch, Dashboard] = weakref.WeakKeyDictionary()


class Dashboard:
    """A live dashboard observer, shown under the cell.

    Made for you inside Jupyter (``progress=True``, the default). By hand: ``dash = Dashboard();
    batch = Batch(rows, progress=False, observers=[dash]); dash.batch = batch``. ``batch`` is what
    the buttons act on; without it Cancel acts through the run's context and Retry and Resume are
    unavailable. ``display=None`` shows it only where a widget front-end exists (else it is a tqdm
    bar); ``False`` builds the widgets without showing them (tests).
    """

    def __init__(self, batch: Batch | None = None, *, title: str | None = None,
                 display: bool | None = None, interval: float = 0.3, recent: int = 10,
                 clips: int = 4, per_page: int = PER_PAGE) -> None:
        self._title = title
        self.model = DashboardModel(recent=recent, clips=clips, interval=interval,
                                    per_page=per_page)
        self.batch = batch
        self._context: RunContext | None = None
        self._fallback: TqdmProgress | None = None
        self._display = widget_frontend() if display is None else display
        self._render_lock = threading.RLock()
        self._timer: asyncio.TimerHandle | None = None
        self._run_task: asyncio.Task[Any] | None = None
        self._cancelling = False
        self._live = True  # buttons work (False while a blocked cell drives the run)
        self._restarted = False  # this run was started by a button, not by a cell
        self._note_summary = False  # no cell asked for this run: its summary goes in the note
        self._retry_asked = False  # Retry was pressed during this run
        self._summaries: list[Any] = []  # display handles of the summaries shown so far
        self._home = contextvars.copy_context()  # the cell this dashboard was shown in
        self._cell: contextvars.Context | None = None  # a cell running now, if any
        self._shell: Any = None
        self.view: DashboardView | None = None
        self._static = StaticOutput(_display, uuid.uuid4().hex[:12])  # beside the widgets
        if not self._display and display is None:
            return  # no widget front-end: a tqdm bar is made at each start event
        self.view = DashboardView(self._heading(), per_page=per_page, on_turn=self._on_turn,
                                  on_play=self._on_play)
        self.view.cancel.on_click(self._on_cancel)
        self.view.retry.on_click(self._on_retry)
        self.view.resume.on_click(self._on_resume)
        self.view.box.add_class(f"vb-live-{self._static.uid}")
        self.view.style.value = live_style(self._static.uid)
        if self._display:  # the widgets, and the static view a saved notebook keeps
            self._static.show(self.view.box.model_id, self.model.snapshot(), self._heading())

    @property
    def batch(self) -> Batch | None:
        return self._batch

    @batch.setter
    def batch(self, batch: Batch | None) -> None:
        """What the buttons act on; also how rows are named (id or number) and priced."""
        self._batch = batch
        self.model.describe_rows(label=row_namer(batch), price=pricer_of(batch),
                                spend=spend_pricer(batch))

    def _heading(self) -> str:
        if self._title is not None:
            return self._title
        if self.batch is None:
            return "run"
        return f"{len(self.batch.jobs)} rows via {self.batch.provider.name}"

    @classmethod
    def for_batch(cls, batch: Batch, **kwargs: Any) -> Dashboard:
        """The dashboard for a run of ``batch``: the one whose button restarted it, or new."""
        return _RESTARTS.pop(batch, None) or cls(batch, **kwargs)

    # ------------------------------------------------------------------ observer protocol
    def bind(self, context: RunContext) -> None:
        self._context = context
        self.model.describe_spend(context.spend)  # spent / reserved / budget, read when drawn

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
            if self._context is not None:  # the rows as this run starts, earlier runs' too
                self.model.seed(self._context.rows((State.COMPLETED, State.FAILED,
                                                    State.CANCELLED, State.UNKNOWN)))
            self.view.set_title(self._heading())
            self._watch_cells(True)
            self._render()
            try:  # the runner's loop: renders happen there, between runner steps
                self._run_task = asyncio.current_task()
                self._timer = asyncio.get_running_loop().call_later(self.model.interval, self._tick)
            except RuntimeError:
                self._run_task = None  # fed by hand (tests): call tick() yourself
            if self._run_task is not None:  # its outcome says why the run stopped
                self._run_task.add_done_callback(self._run_ended)
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
        if self._cancelling:  # the Cancel button's "Cancelling…" note: now what it did
            n = self.model.snapshot().counts
            self.model.note(cancelled_text(n[State.CANCELLED],
                                           n[State.SUBMITTING] + n[State.GENERATING]))
        snap = self._render()
        self._note_summary = self._restarted and self._cell is None
        self._restarted = False
        if self._note_summary:  # no cell asked for this run: report in the dashboard itself
            self._note_outcome(snap)
            snap = self._render()
        if self._display and (self._cell is not None or not self._summaries):
            # Into the cell that is waiting for the run (``await batch.wait()``) if one is
            # running, else next to the dashboard (once: later runs update it).
            handle = (self._cell or self._home).copy().run(self._show_summary, snap)
            if handle is not None:
                self._summaries.append(handle)
        self._update_summaries(snap)

    def _run_ended(self, task: asyncio.Task[Any]) -> None:
        """The run's task is over: its outcome says whether it was cancelled or why it stopped;
        the dashboard and every summary it showed are brought up to date."""
        try:
            if task.cancelled():
                cancelled, reason = True, None
            elif task.exception() is not None:
                cancelled, reason = False, self._why(task.exception() or Exception())
            else:
                outcome = task.result()
                stopped = getattr(outcome, "stopped_by", None)
                cancelled = bool(getattr(outcome, "cancelled", False))
                reason = None if stopped is None else self._why(stopped)
            self.model.conclude(cancelled=cancelled, reason=reason)
            if self.model.running:
                self._finish()
            retry_asked, self._retry_asked = self._retry_asked, False
            batch = self.batch
            if (retry_asked and not cancelled and reason is None and batch is not None
                    and not batch.running and any(j.state is State.PENDING for j in batch.jobs)):
                # Retry was pressed as the run was finishing: the rows were put back to work
                # after it, and the user asked for them to run. (Not after Cancel or a stop.)
                self._restart(batch)
                return
            snap = self._render()
            if self._note_summary:
                self._note_outcome(snap)
                snap = self._render()
            self._update_summaries(snap)
        except Exception:
            log.exception("dashboard could not show the run's end; continuing")

    def _note_outcome(self, snap: Snapshot) -> None:
        """A run a button started: its outcome in the note, and where the live table is."""
        self.model.note(summary_text(snap).splitlines()[0] + " (a DataFrame returned before "
                        "is a snapshot: batch.results() is the live table)")

    def _why(self, error: BaseException) -> str:
        """``_reason``, naming the row as the dashboard does (its id or number, not its key)."""
        text = _reason(error)
        key = getattr(error, "row_key", None)
        if key is not None and self.batch is not None:
            job = next((j for j in self.batch.jobs if j.key == key), None)
            if job is not None:
                text = text.replace(f"row {key!r}", self.model.label(job.snapshot()))
        return text

    @staticmethod
    def _bundle(snap: Snapshot) -> dict[str, str]:
        return {"text/plain": summary_text(snap), "text/html": summary_html(snap)}

    @classmethod
    def _show_summary(cls, snap: Snapshot) -> Any:
        return _display(cls._bundle(snap), raw=True, display_id=True)

    def _update_summaries(self, snap: Snapshot) -> None:
        """Every summary this dashboard displayed shows the batch as it is now."""
        self._static.update(snap, self._heading(), force=True)
        bundle = self._bundle(snap)
        for handle in self._summaries:
            handle.update(bundle, raw=True)

    def _render(self) -> Snapshot:
        with self._render_lock:
            snap = self.model.snapshot()
            if self.view is not None:
                self.view.render(snap, cancelling=self._cancelling, live=self._live)
                if snap.running:  # a few times a minute at most; the end always (_finish)
                    self._static.update(snap, self._heading())
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
        # Said before acting: a run stopping on another thread finds the note to replace.
        self.model.note("Cancelling: rows not started stay cancelled (Resume sends them); rows in "
                        "flight keep their state and finish on the next run.")
        self.model.cancel_asked()
        self._cancelling = True
        if self.batch is not None:
            self.batch.cancel()
        elif self._context is not None:
            self._context.cancel()
        if self.view is not None:
            self.view.cancel.disabled = True
        if not self.model.running:
            self._render()

    def _restart(self, batch: Batch) -> None:
        """Run the rows a button put back to work, reporting in this dashboard."""
        _RESTARTS[batch] = self
        self._restarted = True
        batch.start()

    def _on_retry(self, _button: Any = None) -> None:
        batch = self.batch
        if batch is None:
            return
        action, _ = self.model.actions()
        was_running = batch.running
        count = batch.retry_failed()
        if count and not was_running and not batch.running:
            self._restart(batch)
        elif count and was_running:
            self._retry_asked = True  # if the run was finishing, they run right after it
        self.model.note(action.done_text(count))
        if not self.model.running:
            self._render()

    def _on_resume(self, _button: Any = None) -> None:
        batch = self.batch
        if batch is None:
            return
        if batch.running:
            self.model.note("Cancelled rows can be resumed once this run is over.")
        else:
            _, action = self.model.actions()
            count = batch.resume_cancelled()
            if count and not batch.running:
                self._restart(batch)
            self.model.note(action.done_text(count))
        if not self.model.running:
            self._render()

    def _on_turn(self, pages: int) -> None:
        """Prev / next in the gallery: only the new page's tiles go to the browser."""
        self.model.gallery.turn(pages)
        self.model.touch()
        self._render()

    def _on_play(self, key: str | None) -> None:
        """A tile was clicked (or the player closed): that clip, and only it, is sent."""
        self.model.gallery.play(key)
        self.model.touch()
        self._render()
