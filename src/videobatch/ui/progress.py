"""Progress as text (a terminal, CI, a notebook without widgets): the tqdm bar observer, and
whether a widget front-end exists (``videobatch.ui.make_progress`` then picks the notebook
dashboard instead, and says in one line how to get it where it is missing).

The bar keeps the dashboard's rules, computed by the dashboard's own model: done means completed
or failed (cancelled rows are counted apart, never done); pace and ETA count only this run's rows
and are gone once it ends; a word says Running, Cancelling…, Cancelled, Stopped or Finished. The
bar is made when the run starts, not before, so a notebook cell that starts a batch prints nothing
ahead of its own output and the bar stays in one piece. It is plain tqdm (``tqdm.std``), never
tqdm's notebook widget: nothing warns about a missing ipywidgets but us.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import IO, Any

from tqdm.std import tqdm

from .._events import Event
from .._jobs import State
from .dashboard_model import ORDER, DashboardModel, Snapshot
from .text import duration, summary

__all__ = ["TqdmProgress", "bar_text", "missing_widgets_note", "summary", "widget_frontend"]

MODES = (True, "auto", "tqdm", "dashboard")
_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} done{postfix}"


def bar_text(snap: Snapshot) -> str:
    """What follows the bar: status, this run's pace and ETA while it runs, counts per state."""
    parts = [snap.status]
    if snap.running:
        parts += snap.pace()
    else:
        parts.append(f"took {duration(snap.elapsed)}")
    counts = " ".join(f"{s.value}={snap.counts[s]}" for s in ORDER
                      if snap.counts[s] or s is State.COMPLETED)
    return ", ".join(parts) + " | " + counts


class TqdmProgress:
    """An observer that shows a text bar: rows done of all, status, pace, ETA, counts per state."""

    def __init__(self, total: int, *, desc: str = "videos", file: IO[str] | None = None,
                 **tqdm_kwargs: Any) -> None:
        self.total = total
        self.model = DashboardModel(recent=0, clips=0, failures=0, interval=0.2)
        self.bar: tqdm[Any] | None = None  # made at the start event
        self._desc, self._file, self._kwargs = desc, file, tqdm_kwargs

    def __call__(self, event: Event) -> None:
        self.model.update(event)
        if event.kind == "start":
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=event.progress.total, desc=self._desc, unit="row",
                            file=self._file or sys.stderr, dynamic_ncols=True, bar_format=_FORMAT,
                            **self._kwargs)
            self._draw()
        elif self.bar is None:
            return
        elif event.kind == "finish":
            self._draw()
            self.bar.close()
        elif self.model.due():
            self._draw()

    def _draw(self) -> None:
        bar = self.bar
        assert bar is not None
        snap = self.model.snapshot()
        bar.total, bar.n = snap.total, snap.done
        bar.set_postfix_str(bar_text(snap), refresh=False)
        bar.refresh()


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")  # never imported: certainly no kernel
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None  # not a terminal


def widget_frontend() -> bool:
    """Whether widgets can be shown: a running IPython kernel (Jupyter) and ipywidgets importable."""
    return _in_kernel() and importlib.util.find_spec("ipywidgets") is not None


def missing_widgets_note() -> str | None:
    """In a Jupyter kernel without ipywidgets, the one line that says how to get the dashboard."""
    if not _in_kernel() or importlib.util.find_spec("ipywidgets") is not None:
        return None
    return ('videobatch: the live notebook dashboard needs ipywidgets: '
            'pip install "videobatch[notebook]" (until then runs show a text progress bar)')
