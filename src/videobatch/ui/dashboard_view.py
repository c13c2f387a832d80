"""The dashboard's widgets: progress bar, status and stats, buttons, recent rows, clip previews.

``DashboardView`` builds the ipywidgets once and re-draws them from a ``Snapshot`` (the model in
``videobatch.ui.dashboard_model``); the buttons say what they will do and cost. Clip widgets are
made once per clip, never re-sent, and closed when they scroll out. ``videobatch.ui.dashboard``
owns a view, wires its buttons and is the only one that draws on it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from .._jobs import State
from .actions import Action
from .dashboard_model import stats_html, table_html
from .dashboard_snapshot import Row, Snapshot

__all__ = ["DashboardView"]


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


class DashboardView:
    """The widgets. Only ``Dashboard._render`` writes to them (one thread at a time)."""

    def __init__(self, title: str) -> None:
        import ipywidgets as w

        self.w = w
        full = w.Layout(width="100%")
        self.title = w.HTML()
        self.set_title(title)
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="info", layout=full)
        self.stats = w.HTML()
        wide = w.Layout(width="auto")
        self.cancel = w.Button(description="Cancel", icon="stop", button_style="danger",
                               tooltip="Stop: rows in flight stay resumable", layout=wide)
        self.retry = w.Button(description="Retry failed (none)", icon="redo",
                              button_style="warning", disabled=True, layout=wide)
        self.resume = w.Button(description="Resume cancelled (none)", icon="play",
                               button_style="info", disabled=True, layout=wide)
        self.note = w.HTML()
        self.table = w.HTML()
        self.clips = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self._shown: dict[str, tuple[str | None, Any]] = {}  # key -> (url, clip box)
        self.box = w.VBox([self.title, self.bar, self.stats,
                           w.HBox([self.cancel, self.retry, self.resume, self.note]), self.table,
                           self.clips])
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
        wanted = [(row.key, row.video_url) for row in snap.clips]
        if wanted != [(key, url) for key, (url, _) in self._shown.items()]:
            self._show_clips(snap.clips)

    @staticmethod
    def _label(button: Any, action: Action, *, enabled: bool) -> None:
        button.description = action.label()
        button.tooltip = action.tooltip()
        button.disabled = not action.rows or not enabled

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
