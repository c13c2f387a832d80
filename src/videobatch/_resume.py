"""Resuming a checkpoint with rows that changed since it was made: refused with what differs, or
(``force``) row by row: a row whose key and request are unchanged keeps its state, a changed row
starts afresh under a new generation (a new idempotency key), a row no longer in the input is dropped.

Resuming with unchanged rows (the same fingerprint) is ``videobatch._snapshot.resumed_jobs``; a lost
snapshot is ``videobatch._recover``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._jobs import RESULT_FIELDS, Job, State
from ._snapshot import LoadedCheckpoint, load
from .errors import CheckpointError

__all__ = ["Carried", "carry_over"]


@dataclass(frozen=True)
class Carried:
    """What ``carry_over`` read, and what it did to the rows (keys, in input order)."""

    old: LoadedCheckpoint
    changed: list[str]  # same key, another request: start afresh (a new paid submission)
    added: list[str]  # not in the checkpoint
    dropped: list[str]  # in the checkpoint, no longer in the input
    dropped_cost: float = 0.0  # what the dropped rows cost (USD estimates): still spent


def carry_over(
    path: Path, jobs: Sequence[Job], keys: Sequence[str], request_json: Sequence[str], *,
    fingerprint: str, settings: dict[str, Any], force: bool,
) -> Carried:
    """Give ``jobs`` (fresh from the input) the state the checkpoint at ``path`` holds for them, or
    raise CheckpointError when its rows or settings differ and not ``force``. Reads only."""
    old = load(path, requests=False)
    same = old.meta.get("fingerprint") == fingerprint and old.meta.get("settings") == settings
    if not same and not force:
        diff = _describe_difference(old, keys, request_json, settings)
        raise CheckpointError(
            f"checkpoint {path} was made from different rows or settings: {diff}.\n"
            "Use --force (force=True) to keep the finished rows whose request is unchanged "
            "and run the rest, or choose another checkpoint path."
        )
    old_rows = {j.key: (j, text) for j, text in zip(old.jobs, old.request_json, strict=True)}
    changed: list[str] = []
    added: list[str] = []
    for job, text in zip(jobs, request_json, strict=True):
        prev, prev_text = old_rows.pop(job.key, (None, None))
        if prev is None:
            added.append(job.key)
            continue
        if prev_text == text:
            for name in RESULT_FIELDS:
                setattr(job, name, getattr(prev, name))
            job.extras = prev.extras
            job.state = prev.state
            job.updated_at = prev.updated_at
        else:
            # Same key, new request: a new submission that must not collide with the old one.
            # What the old request cost stays counted (``videobatch._spend``).
            job.generation = prev.generation + 1
            job.cost_earlier = _cost_so_far(prev)
            changed.append(job.key)
    dropped = sum(_cost_so_far(prev) or 0.0 for prev, _ in old_rows.values())
    return Carried(old, changed, added, list(old_rows), round(dropped, 6))


def _cost_so_far(job: Job) -> float | None:
    """What a row of the checkpoint has cost or may have cost (a submit in doubt counts)."""
    if job.state is State.SUBMITTING and job.cost_estimated is not None:
        return round((job.cost_earlier or 0.0) + job.cost_estimated, 6)
    return job.carried_cost()


def _describe_difference(
    old: LoadedCheckpoint, keys: Sequence[str], request_json: Sequence[str], settings: dict[str, Any]
) -> str:
    old_req = dict(zip((j.key for j in old.jobs), old.request_json, strict=True))
    new_req = dict(zip(keys, request_json, strict=True))
    changed = [k for k in new_req if k in old_req and old_req[k] != new_req[k]]
    added = [k for k in new_req if k not in old_req]
    removed = [k for k in old_req if k not in new_req]
    parts = []
    for label, ks in (("changed", changed), ("new", added), ("no longer in the input", removed)):
        if ks:
            parts.append(f"{len(ks)} row(s) {label} (e.g. {', '.join(map(repr, ks[:3]))})")
    old_settings = old.meta.get("settings")
    if old_settings != settings:
        parts.append(f"settings differ (checkpoint: {old_settings}, now: {settings})")
    if not parts:
        parts.append("the rows are the same but in a different order")
    return "; ".join(parts)
