"""The dashboard as static HTML: what a saved notebook, a reopened one or one whose kernel stopped
shows where the live widgets were, marked as not live, with no buttons.

A live dashboard is two outputs in its cell: the widgets, and beside them this static view (plain
``text/html``, kept up to date through its display handle, a few times a minute at most). While the
widgets are alive, a ``<style>`` they carry (``live_style``) hides the static view; when the kernel
restarts (the widgets turn "disconnected") the same rules hide the widgets and show the static
view. A reopened notebook has no widget models at all: the static view's own rule hides the
"model not found" line the widget output would show in their place. The widgets' output carries a
short ``text/plain`` too, which is what untrusted or rendered copies (nbconvert, GitHub) show.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

from .._jobs import State
from .dashboard_model import attention_html, chips_html, status_html, summary_text
from .dashboard_snapshot import Snapshot
from .gallery_html import failures_html
from .spend import spend_html
from .text import duration

__all__ = ["WIDGET_TEXT", "StaticOutput", "live_style", "static_html", "widget_bundle"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_TEXT = ("videobatch dashboard: live while its kernel runs; the static view of its last "
               "state is the next output")


def widget_bundle(model_id: str) -> dict[str, object]:
    """The widgets' output: the live view, and a line for where widgets cannot show."""
    return {WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": model_id},
            "text/plain": WIDGET_TEXT}


def live_style(uid: str) -> str:
    """Carried by the live widgets: hide the static view while they are connected; once the
    kernel restarts they are "disconnected": hide them (their buttons do nothing) and show it."""
    return (f"<style>body:has(.vb-live-{uid}:not(.jupyter-widgets-disconnected)) "
            f".vb-static-{uid}{{display:none!important}}"
            f".vb-live-{uid}.jupyter-widgets-disconnected{{display:none!important}}</style>")


def _own_style(uid: str) -> str:
    """Carried by the static view: in a reopened notebook the widget output just before it can
    only say "model not found"; hide that line (the static view stands in for it)."""
    return (f"<style>.jp-OutputArea-child:has(+ .jp-OutputArea-child .vb-static-{uid}) "
            ".jp-OutputArea-output.jupyter-widgets:not(:has(*)){display:none}</style>")


def static_html(snap: Snapshot, title: str, uid: str, *, at: float | None = None) -> str:
    """The last state as HTML: status, counts, clips, failures by reason, rows of unknown outcome;
    marked not live (as of ``at``, epoch seconds), without buttons or players."""
    when = time.strftime("%H:%M:%S", time.localtime(at if at is not None else time.time()))
    state = ("was running" if snap.running else "ended") if snap.total else "not started"
    pace = (f"elapsed {duration(snap.elapsed)}" if snap.running else f"took {duration(snap.elapsed)}")
    clips = snap.gallery.total
    lines = [
        f'<div class="vb-static-head" style="color:#6d4c41;background:#fff8e1;padding:2px 6px;'
        f'border-radius:3px;margin-bottom:4px">Not live: the last state of this dashboard '
        f"({state} at {when}). Run the cell again for a live dashboard; batch.results() has every "
        "row.</div>",
        f"<div><b>videobatch</b> · {html.escape(title)}</div>",
        f"<div>{status_html(snap)} · <b>{snap.done:,} / {snap.total:,}</b> done · {pace}</div>",
        f'<div style="margin:4px 0">{chips_html(snap)}</div>',
        spend_html(snap.spend, snap.figures),
        attention_html(snap),
        f"<div>{clips:,} finished clip{'s' if clips != 1 else ''}"
        + (" (the live dashboard shows them in a gallery)" if clips else "") + "</div>",
        failures_html(snap.failure_groups, snap.counts[State.FAILED]),
    ]
    return (f'<div class="vb-static vb-static-{uid}" style="font-family:sans-serif;font-size:13px;'
            f'border:1px dashed #bbb;padding:6px;margin:4px 0">{_own_style(uid)}'
            + "".join(lines) + "</div>")


class StaticOutput:
    """The static view's output in the cell: shown once beside the widgets, then updated through
    its display handle, at most every ``every`` seconds unless forced (the end of a run)."""

    def __init__(self, display: Callable[..., Any], uid: str, *, every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.uid, self.every = uid, every
        self._display, self._clock = display, clock
        self._handle: Any = None
        self._last = float("-inf")

    def show(self, model_id: str, snap: Snapshot, title: str) -> None:
        """The widgets, then the static view right after them (its rule finds it there)."""
        self._display(widget_bundle(model_id), raw=True)
        self._handle = self._display(self._bundle(snap, title), raw=True, display_id=True)
        self._last = self._clock()

    def update(self, snap: Snapshot, title: str, *, force: bool = False) -> None:
        if self._handle is None or (not force and self._clock() - self._last < self.every):
            return
        self._last = self._clock()
        self._handle.update(self._bundle(snap, title), raw=True)

    def _bundle(self, snap: Snapshot, title: str) -> dict[str, str]:
        text = summary_text(snap) if snap.total else f"videobatch · {title}: not started"
        return {"text/plain": f"(not live) {text}", "text/html": static_html(snap, title, self.uid)}
