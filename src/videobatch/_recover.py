"""Recovering a checkpoint whose snapshot is lost: rows from the input, run id and states from the journal.

A snapshot can vanish (deleted by hand, moved aside by ``python -m videobatch repair`` because it was
corrupt) while its journal segments survive. Every segment opens with a header record holding the
run id and each row's generation, which is all an idempotency key depends on besides the row key
(``videobatch._jobs.idempotency_key``). So a run given the same input again keeps its keys, and:

- a row whose latest transition is in the journal takes that state;
- a row the journal says nothing about may have been submitted before the snapshot was lost: it
  starts in ``submitting``, so the run looks it up by its idempotency key (adopting the task the
  provider has) before it pays for anything; only when every row was still unsubmitted at the start
  of the oldest segment (its header says ``untouched``) do such rows start ``pending``.

What cannot come back: result fields that only the lost snapshot held (a completed row's task id
when its ``generating`` record was folded into that snapshot); the provider fills them in again for
rows that are looked up.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._jobs import Job, State
from ._journal import FORMAT, Replay, replay
from .errors import CheckpointError

__all__ = ["rebuild"]

_NEVER = -1.0  # updated_at of a row no journal record has touched


def rebuild(
    path: Path, jobs: Sequence[Job], *, fingerprint: str, settings: dict[str, Any], force: bool
) -> tuple[dict[str, Any], Replay, list[str]]:
    """Put ``jobs`` (fresh from the input) where the journal of ``path`` says they are.

    Returns the checkpoint metadata to write, what the replay met, and the keys of rows whose state
    was lost (they are in ``submitting``: looked up before anything is submitted). Raises
    CheckpointError when the journal cannot say which run it belongs to, or belongs to other rows.
    """
    for job in jobs:
        job.state = State.SUBMITTING  # unknown until a record says otherwise
        job.updated_at = _NEVER
    report = replay(path, 0, {j.key: j for j in jobs})
    header = _header(path, report, fingerprint, settings, force)
    base = report.headers[0] if report.headers else {}
    contiguous = report.segments == list(range(report.segments[0], report.segments[-1] + 1))
    untouched = (base.get("seq") == report.segments[0] and base.get("untouched") is True
                 and contiguous and not report.skipped)
    generations: dict[str, int] = {}
    for h in report.headers:
        for key, n in dict(h.get("generations") or {}).items():
            generations[key] = max(int(n), generations.get(key, 0))
    created = float(header.get("created_at") or time.time())
    lost = []
    for job in jobs:
        job.generation = max(job.generation, generations.get(job.key, 0))
        if job.updated_at == _NEVER:  # no state record: where it stood went with the snapshot
            job.updated_at = created  # a list scan for its task must reach back to the run's start
            if untouched and job.key not in report.damaged_rows:
                job.state = State.PENDING
                continue
            job.state = State.SUBMITTING
            lost.append(job.key)
        elif job.state is State.GENERATING and not job.task_id:  # its task id went with the snapshot
            job.state = State.SUBMITTING
            lost.append(job.key)
    meta = {
        "format": FORMAT,
        "run_id": header["run_id"],
        "fingerprint": fingerprint,
        "settings": settings,
        "created_at": created,
        "journal_seq": report.segments[-1],
        "rebuilt_at": time.time(),
    }
    if header.get("keys") is not None:  # how its rows were keyed (none: the first release's way)
        meta["keys"] = header["keys"]
    return meta, report, lost


def _header(
    path: Path, report: Replay, fingerprint: str, settings: dict[str, Any], force: bool
) -> dict[str, Any]:
    """The newest header of the journal, checked against the input (CheckpointError if unusable)."""
    if not report.headers or not report.segments:
        raise CheckpointError(
            f"the snapshot {path} is missing and its journal does not record the run id (written by "
            "an older videobatch, or damaged), so rows already submitted cannot be recognised. "
            f"Restore {path} from a backup; or, to start over and pay again for every row, move "
            f"{path.name}.journal.* aside"
        )
    run_ids = {h.get("run_id") for h in report.headers}
    newer = {h.get("format") for h in report.headers} - {FORMAT}
    if newer:
        raise CheckpointError(f"the journal of {path} has format {newer.pop()}; this videobatch "
                              f"reads {FORMAT}: use the videobatch that wrote it")
    if len(run_ids) != 1 or not isinstance(next(iter(run_ids)), str):
        raise CheckpointError(f"the journal files of {path} belong to different runs "
                              f"({sorted(map(str, run_ids))}); keep only one run's files")
    header = report.headers[-1]
    if header.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"the snapshot {path} is missing and its journal was made from different rows: run again "
            "with the original input (and the same run-wide options) to rebuild it"
            + (" first; --force can change rows only once the snapshot is back, because without it "
               "changed rows cannot be told apart" if force else "")
        )
    if header.get("settings") != settings and not force:
        raise CheckpointError(
            f"checkpoint {path} was made with other settings (checkpoint: {header.get('settings')}, "
            f"now: {settings}). Use --force (force=True) to go on with these, or choose another "
            "checkpoint path."
        )
    return header
