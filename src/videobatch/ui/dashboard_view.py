"""The dashboard's widgets: progress bar, status and stats, buttons, recent rows, the gallery.

``DashboardView`` builds the ipywidgets once and re-draws them from a ``Snapshot`` (the model in
``videobatch.ui.dashboard_model``); the buttons say what they will do and cost. The gallery
(``videobatch.ui.gallery_view``: a page of poster thumbnails, one player, failures by reason) is a
fixed set of widgets, so no widget is made per row. ``videobatch.ui.dashboard`` owns a view, wires
its buttons and is the only one that draws on it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from .._jobs import State
from .actions import Action
from .dashboard_model import stats_html, table_html
from .dashboard_snapshot import Snapshot
from .gallery import PER_PAGE
from .gallery_view import GalleryView

__all__ = ["DashboardView"]


class DashboardView:
    """The widgets. Only ``Dashboard._render`` writes to them (one thread at a time)."""

    def __init__(self, title: str, *, per_page: int = PER_PAGE,
                 on_turn: Callable[[int], None] = lambda _: None,
                 on_play: Callable[[str | None], None] = lambda _: None) -> None:
        import ipywidgets as w

        self.w = w
        full = w.Layout(width="100%")
        self.title = w.HTML()
        self.set_title(title)
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=full)
        self.stats = w.HTML()
        # Sized to their captions (which say how many rows and what they cost), never shrunk
        # to "Retry 2 f…" by the note beside them: the row wraps instead.
        wide = w.Layout(width="auto", flex="0 0 auto")
        self.cancel = w.Button(description="Cancel", icon="stop", button_style="danger",
                               tooltip="Stop: rows in flight stay resumable", layout=wide)
        self.retry = w.Button(description="Retry failed (none)", icon="redo",
                              button_style="warning", disabled=True, layout=wide)
        self.resume = w.Button(description="Resume cancelled (none)", icon="play",
                               button_style="info", disabled=True, layout=wide)
        self.note = w.HTML()
        self.table = w.HTML()
        self.gallery = GalleryView(w, per_page, on_turn=on_turn, on_play=on_play)
        self.note.layout = w.Layout(flex="1 1 20em")
        self.buttons = w.HBox([self.cancel, self.retry, self.resume, self.note],
                              layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.buttons.add_class("vb-buttons")
        self.style = w.HTML()  # rules that show the static view when these widgets cannot
        self.box = w.VBox([self.style, self.title, self.bar, self.stats, self.buttons, self.table,
                           self.gallery.box])
        self.box.add_class("videobatch-dashboard")

    def set_title(self, title: str) -> None:
        self.title.value = f"<b>videobatch</b> · {html.escape(title)}"

    def render(self, snap: Snapshot, *, cancelling: bool = False, live: bool = True) -> None:
        self.bar.max = max(1, snap.total)
        self.bar.value = snap.done  # completed or failed: cancelled rows are not done
        if snap.running:
            self.bar.bar_style = "info"
        elif snap.counts[State.COMPLETED] == snap.total and snap.total:
            self.bar.bar_style = "success"
        else:
            self.bar.bar_style = "danger" if snap.reason else "warning"
        self.stats.value = stats_html(snap)
        self.table.value = table_html(snap)
        self.note.value = f'<span style="color:#555">{html.escape(snap.note)}</span>'
        self.cancel.disabled = cancelling or not snap.running or not live
        waiting = snap.counts[State.PENDING] if snap.running else 0
        flying = snap.counts[State.SUBMITTING] + snap.counts[State.GENERATING]
        self.cancel.description = f"Cancel ({waiting} not sent)" if waiting else "Cancel"
        self.cancel.tooltip = (f"Stop: {waiting} row{'s' if waiting != 1 else ''} not sent yet "
                               f"become cancelled (nothing paid); {flying} in flight keep their "
                               "state and finish on the next run")
        self._label(self.retry, snap.retry, enabled=live)
        # Cancelled rows wait for a run to take them: offered once this one is over.
        self._label(self.resume, snap.resume, enabled=live and not snap.running)
        self.gallery.render(snap.gallery, snap.failure_groups, snap.counts[State.FAILED])

    @staticmethod
    def _label(button: Any, action: Action, *, enabled: bool) -> None:
        button.description = action.label()
        button.tooltip = action.tooltip()
        button.disabled = not action.rows or not enabled
