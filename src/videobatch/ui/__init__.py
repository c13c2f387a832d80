"""What a person watching a run sees: the text progress bar (``progress``), the notebook
dashboard (``dashboard``): its model (``dashboard_model``) of one instant (``dashboard_snapshot``),
its widgets (``dashboard_view``), what its buttons would do (``actions``), its gallery of clips and
failures (``gallery`` data, ``gallery_view`` widgets, ``gallery_html`` words), the estimated cost
of what was sent (``spend``) and the static view a saved notebook keeps (``static_view``); shared
wording (``text``) and how errors show in a notebook (``errors_view``)."""

from __future__ import annotations

from typing import Any

from .._events import Observer
from . import errors_view as errors_view  # registers how notebooks show our errors
from . import progress
from .progress import MODES, TqdmProgress

__all__ = ["make_progress"]


def make_progress(batch: Any, mode: bool | str = True) -> Observer:
    """The progress observer for a batch.

    ``True``/``"auto"``: the notebook dashboard where a widget front-end is present, else a tqdm
    bar; ``"tqdm"``: always the bar; ``"dashboard"``: the same as ``"auto"``.
    """
    if mode not in MODES:
        raise ValueError(f"progress must be True, False, 'auto', 'tqdm' or 'dashboard', got {mode!r}")
    if mode == "dashboard" or (mode != "tqdm" and progress.widget_frontend()):
        from .dashboard import Dashboard  # widgets load only where they can show

        return Dashboard.for_batch(batch)
    return TqdmProgress(len(batch.jobs))
