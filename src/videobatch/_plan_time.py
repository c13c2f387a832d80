"""How long a plan's paid rows take: per pool, waves of its parallel slots, each as long as a task.

A task's length comes from this checkpoint's own tasks of the same provider and model when three or
more have finished (their median, acceptance to end: a resumed run knows its provider); otherwise
from the provider's poll hint (``PollHint.first_poll``: when its first results are worth looking
for), which is only a lower bound and said so. Pools run side by side, so the whole run takes as long
as its slowest pool. Rows already accepted are waited for before the slots free up; they add at most
one task's length.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._jobs import Job, State
from .providers.base import Provider

__all__ = ["NOTHING", "Eta", "eta", "task_lengths", "total"]

_ENOUGH = 3  # finished tasks of a model before their median is trusted


@dataclass(frozen=True)
class Eta:
    """About how long some rows take: ``seconds`` (None: unknown), and whether that is only a
    lower bound (no task of the model has finished yet)."""

    seconds: float | None
    at_least: bool
    basis: str  # where the task length came from, for people

    def text(self) -> str:
        if self.seconds is None:
            return "time unknown"
        return f"{'at least' if self.at_least else 'about'} {_duration(self.seconds)} ({self.basis})"


NOTHING = Eta(0.0, False, "nothing to send")


def eta(rows: int, slots: int, provider: Provider, model: str,
        lengths: Mapping[tuple[str, str], list[float]]) -> Eta:
    """About how long ``rows`` paid rows of ``provider``'s ``model`` take on ``slots`` slots, given
    the ``lengths`` of finished tasks (``task_lengths``)."""
    if rows == 0:
        return NOTHING
    seen = lengths.get((provider.name, model), [])
    waves = math.ceil(rows / max(1, slots))
    if len(seen) >= _ENOUGH:
        each = statistics.median(seen)
        return Eta(waves * each, False, f"{waves} wave(s) of {slots} × {_duration(each)}, the median "
                                        f"of {len(seen)} finished tasks")
    first = provider.poll_hint.first_poll
    if first <= 0:
        return Eta(None, True, "no finished task to go by")
    return Eta(waves * first, True, f"{waves} wave(s) of {slots}; no task of this model has finished "
                                    f"here yet, so the provider's first-poll time of "
                                    f"{_duration(first)} stands in")


def task_lengths(jobs: Sequence[Job]) -> dict[tuple[str, str], list[float]]:
    """How long each finished task of ``jobs`` took, by (provider, model)."""
    lengths: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        if (job.state is State.COMPLETED and job.submitted_at is not None
                and job.completed_at is not None and job.provider_used is not None):
            lengths.setdefault((job.provider_used, job.model_used or ""), []).append(
                max(0.0, job.completed_at - job.submitted_at))
    return lengths


def total(etas: Sequence[Eta]) -> Eta:
    """Pools side by side: as long as the slowest; unknown if any is."""
    if not etas:
        return NOTHING
    if len(etas) == 1:
        return etas[0]
    if any(e.seconds is None for e in etas):
        return Eta(None, True, "some pools have no task length to go by")
    slowest = max(etas, key=lambda e: e.seconds or 0.0)
    return Eta(slowest.seconds, any(e.at_least for e in etas), "the slowest pool")


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
