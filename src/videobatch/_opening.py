"""Which state each row of an input starts a run in, given the checkpoint on disk: decided once, by
reading only. ``Checkpoint.open`` writes what ``decide`` says; a plan (``--dry-run``) shows it.

The cases: no checkpoint yet (every row pending); the same rows and settings (each row resumes as
the checkpoint left it, ``_snapshot.resumed_jobs``); other rows or settings (refused, or with
``force`` row by row: ``_resume.carry_over``); a lost snapshot (rebuilt from the journal,
``_recover``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._gc import gc_paused
from ._input_keys import KEYS
from ._inputs import Prompts
from ._jobs import Job
from ._journal import FORMAT, Replay
from ._journal import segments as _segments
from ._recover import rebuild
from ._resume import Carried, carry_over
from ._snapshot import key_scheme, read_meta, resumed_jobs

__all__ = ["Opening", "decide", "new_jobs"]

Kind = Literal["new", "resumed", "changed", "rebuilt"]


@dataclass
class Opening:
    """What opening a checkpoint for an input means (see the module docstring)."""

    kind: Kind
    prompts: Prompts  # the input, keyed as the checkpoint keys it (an old file: the first way)
    jobs: list[Job]  # each row in the state the run starts from ("new" and not built: empty)
    meta: dict[str, Any]
    carried: Carried | None = None  # "changed": which rows changed, were added, were dropped
    recovery: Replay | None = None  # "rebuilt": what the replay of the journal met
    lost: list[str] = field(default_factory=list)  # "rebuilt": rows looked up before paying

    @property
    def cost_dropped(self) -> float:
        """USD the checkpoint spent on rows no longer in its input (they still count)."""
        return float(self.meta.get("cost_dropped") or 0.0)

    def describe(self, path: Path) -> str:
        """One sentence for a plan: what the run does with the checkpoint."""
        if self.kind == "new":
            return f"a new checkpoint {path}"
        if self.kind == "resumed":
            return f"resumes checkpoint {path} (same rows and settings)"
        if self.kind == "rebuilt":
            return (f"rebuilds the lost snapshot of {path} from its journal; {len(self.lost)} row(s) "
                    "whose state was lost are looked up by key before anything is paid")
        assert self.carried is not None
        c = self.carried
        parts = [f"{len(c.changed)} row(s) changed since (new requests: they start afresh)"
                 if c.changed else "", f"{len(c.added)} new row(s)" if c.added else "",
                 f"{len(c.dropped)} row(s) no longer in the input dropped" if c.dropped else ""]
        said = "; ".join(p for p in parts if p) or "the settings changed"
        return f"--force on checkpoint {path}: {said}; unchanged rows keep their state"


def new_jobs(prompts: Prompts) -> list[Job]:
    return Job.fresh(prompts.keys, prompts.requests)


@gc_paused()
def decide(path: Path, prompts: Prompts, *, settings: dict[str, Any], force: bool,
           build_new: bool = True) -> Opening:
    """How the checkpoint at ``path`` opens for ``prompts``: reads, never writes. Raises
    CheckpointError when the run would be refused (other rows or settings without ``force``).
    ``build_new``: build the jobs of a new checkpoint too (``Checkpoint.open`` builds them while
    it writes the first snapshot)."""
    if key_scheme(path, default=KEYS) == 1:  # written before keys were made from given values
        prompts = prompts.first_release()
    if len(prompts.keys) != len(prompts.requests):
        raise ValueError("Prompts: keys and requests must have one entry per row")
    fingerprint = prompts.fingerprint()
    if not path.exists() and _segments(path):  # the snapshot is lost: rebuild it
        jobs = new_jobs(prompts)
        meta, report, lost = rebuild(path, jobs, fingerprint=fingerprint, settings=settings,
                                     force=force)
        return Opening("rebuilt", prompts, jobs, meta, recovery=report, lost=lost)
    if not path.exists():
        meta = {"format": FORMAT, "run_id": uuid.uuid4().hex, "fingerprint": fingerprint,
                "settings": settings, "created_at": time.time(), "journal_seq": 0, "keys": KEYS}
        return Opening("new", prompts, new_jobs(prompts) if build_new else [], meta)
    old_meta = read_meta(path)
    same = old_meta.get("fingerprint") == fingerprint and old_meta.get("settings") == settings
    # Same fingerprint: the same keys and requests in the same order, so the rows resume as the
    # checkpoint left them, built from the input's keys and requests.
    resumed = resumed_jobs(path, old_meta, prompts.keys, prompts.requests) if same else None
    if resumed is not None:
        return Opening("resumed", prompts, resumed[0], old_meta)
    jobs = new_jobs(prompts)
    carried = carry_over(path, jobs, prompts.keys, prompts.request_json(),
                         fingerprint=fingerprint, settings=settings, force=force)
    meta = {**carried.old.meta, "fingerprint": fingerprint, "settings": settings}
    if carried.dropped_cost:  # rows gone from the input: what they cost is still spent
        meta["cost_dropped"] = round(float(meta.get("cost_dropped") or 0) + carried.dropped_cost, 6)
    return Opening("changed", prompts, jobs, meta, carried=carried)
