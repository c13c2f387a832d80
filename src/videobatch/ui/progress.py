"""Progress in a terminal: the tqdm bar observer, the end-of-run summary text, and whether a widget
front-end exists (``videobatch.ui.make_progress`` then picks the notebook dashboard instead).

Bar updates are throttled by tqdm itself (``mininterval``), so 10,000 rows do not flood anything.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from collections.abc import Mapping
from typing import IO, Any

from tqdm.auto import tqdm

from .._events import Event
from .._jobs import State

__all__ = ["TqdmProgress", "summary", "widget_frontend"]

MODES = (True, "auto", "tqdm", "dashboard")

_ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
          State.UNKNOWN, State.CANCELLED)


def _postfix(counts: Mapping[State, int]) -> str:
    return " ".join(f"{s.value}={counts[s]}" for s in _ORDER if counts[s])


class TqdmProgress:
    """An observer that shows a progress bar with counts per state in its postfix."""

    def __init__(self, total: int, *, desc: str = "videos", file: IO[str] | None = None,
                 **tqdm_kwargs: Any) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="row", file=file or sys.stderr,
                        mininterval=0.2, dynamic_ncols=True, **tqdm_kwargs)
        self._shown = 0

    def __call__(self, event: Event) -> None:
        p = event.progress
        if event.kind == "start":
            self._shown = p.done
            self.bar.update(p.done)  # rows finished in an earlier run
        if event.kind in ("transition", "start", "finish"):
            # Postfix first: update() may redraw, and the line must show counts and bar together.
            self.bar.set_postfix_str(_postfix(p.counts), refresh=False)
            done = p.done
            if done > self._shown:
                self.bar.update(done - self._shown)
                self._shown = done
        if event.kind == "finish":
            self.bar.refresh()
            self.bar.close()


def widget_frontend() -> bool:
    """Whether widgets can be shown: a running IPython kernel (Jupyter) and ipywidgets importable."""
    ipython = sys.modules.get("IPython")  # never imported: certainly no kernel
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False  # plain IPython in a terminal
    return importlib.util.find_spec("ipywidgets") is not None


def summary(
    counts: Counter[State],
    elapsed: float,
    failures: list[tuple[str, str | None, str | None]],
    *,
    cancelled: bool = False,
    stopped_by: str | None = None,
    where: list[str] | None = None,
    max_failures: int = 20,
    unknown: list[tuple[str, str | None]] | None = None,
) -> str:
    """The text printed at the end of a CLI run: counts, wall time, failures with reasons, and rows
    whose outcome is unknown (``(key, error)``: what to check, and how to send them again)."""
    total = sum(counts.values())
    lines = [
        f"{counts[State.COMPLETED]}/{total} completed, {counts[State.FAILED]} failed"
        + "".join(f", {counts[s]} {s.value}" for s in (State.UNKNOWN, State.PENDING,
                                                        State.SUBMITTING, State.GENERATING,
                                                        State.CANCELLED)
                  if counts[s])
        + f" in {_duration(elapsed)}"
    ]
    if cancelled:
        lines.append("Interrupted: run the same command again to resume (nothing is paid twice).")
    if stopped_by:
        lines.append(f"Stopped: {stopped_by}")
    if failures:
        by_reason: Counter[str] = Counter(kind or "error" for _, kind, _ in failures)
        lines.append("Failures by reason: " + ", ".join(f"{k} ×{n}" for k, n in
                                                        by_reason.most_common()))
        for key, kind, message in failures[:max_failures]:
            lines.append(f"  {key}: [{kind}] {message}")
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (see the results file)")
    if unknown:
        lines.append(f"Outcome unknown for {len(unknown)} row(s): a paid request may exist for each "
                     "(checked again on every resume, never sent again on its own):")
        for key, message in unknown[:max_failures]:
            lines.append(f"  {key}: {message}")
        if len(unknown) > max_failures:
            lines.append(f"  ... and {len(unknown) - max_failures} more (see the results file)")
    for line in where or []:
        lines.append(line)
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
