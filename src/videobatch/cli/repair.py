"""``python -m videobatch repair CHECKPOINT``: make a damaged checkpoint usable again, paying nothing twice.

What it can do depends on what is left:

- the snapshot reads: the journal is replayed past every damaged line and folded into a fresh
  snapshot. A row named in a skipped line that looks unsubmitted is kept in ``submitting``, so the
  next run looks it up at the provider by its idempotency key before paying for anything;
- the snapshot is lost or unreadable (it is moved aside to ``CHECKPOINT.damaged-<time>``): every
  journal segment starts with a header holding the run id and the rows' generations, everything an
  idempotency key depends on. The rows themselves (their requests) were in the snapshot, so they
  come from the input: ``--input PROMPTS`` rebuilds now, or running the original command (or
  ``videobatch.run``) again with the same input rebuilds at its start. Either way rows keep their
  keys, take the state the journal last recorded, and rows whose state was lost are looked up by
  idempotency key before anything is submitted: nothing already submitted is submitted again.

With ``--verify-tasks`` it then asks the provider (its options as for ``status``: ``--provider``,
``-P``, ``--base-url``, the credentials in the environment) whether each row's task carries the
row's own idempotency key, and names every row whose task does not: an older release could adopt
another system's task after a lost answer, so the row shows that system's video while its own
paid task is orphaned. Nothing is changed for those rows; the lines say what to do.

It prints what it recovered (run id, rows and their states) and what it could not (damaged lines,
rows whose state was lost). Exit codes: 0 repaired (or nothing to repair) · 1 partially repaired
(something was lost, the rows wait for the input, or a row holds a task that is not its own) ·
2 usage, or no checkpoint it can use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._inputs import Prompts, load_prompts
from .._journal import FORMAT, Replay, WriterLock, iter_records, replay, segments
from .._snapshot import REPAIR_HINT
from .._store import Checkpoint, load
from ..errors import CheckpointError, InputError
from ._options import add_provider, provider_options

__all__ = ["repair_main"]

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def repair_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m videobatch repair",
        description="Rebuild a damaged checkpoint from what is left of it (snapshot, journal, input) "
                    "without paying again for any row already submitted, and say what could and "
                    "could not be recovered.",
        epilog="examples:\n"
               "  python -m videobatch repair run.parquet\n"
               "  python -m videobatch repair run.parquet --input prompts.csv\n"
               "  python -m videobatch repair run.parquet --verify-tasks --provider kling\n\n"
               "exit codes: 0 repaired, 1 partially repaired or a row holds a task that is not "
               "its own (see the output for what is left to do), 2 usage or no usable checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("--input", metavar="PROMPTS",
                   help="the original prompts file, to rebuild the rows at once when the snapshot "
                        "is lost (a run made with run-wide options such as --duration: run its "
                        "original command again instead)")
    p.add_argument("--verify-tasks", action="store_true",
                   help="then ask the provider whether each row's task carries the row's own key, "
                        "and name the rows whose task is another's (needs its credentials)")
    add_provider(p, default=None)
    args = p.parse_args(list(argv))
    code = _repair(p, args)
    if args.verify_tasks and code != EXIT_USAGE:
        code = max(code, _verify(p, args))
    return code


def _verify(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Name the rows whose task does not carry their own idempotency key (exit 1 if any)."""
    from ._recheck import verify_tasks

    try:
        with _quiet():
            loaded = load(Path(args.checkpoint))
    except CheckpointError as exc:
        print(f"tasks not verified: {exc}")
        return EXIT_PARTIAL
    lines = verify_tasks(loaded, args.provider, provider_options(args, p))
    for line in lines or ["no row has a task yet: nothing to verify"]:
        print(line)
    unverified = bool(lines) and lines[0].startswith("Could not")
    return EXIT_PARTIAL if unverified or any(line.startswith("  ") for line in lines) else EXIT_OK


def _repair(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    path = Path(args.checkpoint)
    try:
        if not path.exists() and not segments(path):
            raise CheckpointError(f"no checkpoint at {path} (no snapshot, no journal files)")
        try:
            with _quiet():
                loaded = load(path)
        except CheckpointError as exc:
            problem = (str(exc).replace(REPAIR_HINT.format(path=path), "") if path.exists()
                       else "the snapshot is missing")
            return _rebuild(path, problem, args.input)
        prompts = Prompts(frame=loaded.frame, requests=[j.request for j in loaded.jobs],
                          keys=[j.key for j in loaded.jobs], source=str(path))
        damaged = bool(loaded.journal.skipped or loaded.journal.salvaged)
        print(f"{path}: snapshot readable, run {loaded.meta.get('run_id')}")
        if damaged:
            with _quiet():
                store, jobs = Checkpoint.open(path, prompts, settings=loaded.meta.get("settings", {}))
                # Folded into a fresh snapshot now (an unchanged resume would leave it to the run).
                asyncio.run(store.close(jobs))
        _report(loaded.journal, Counter(j.state.value for j in loaded.jobs), [])
    except (CheckpointError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not damaged:
        print("nothing to repair: every journal line reads")
        return EXIT_OK
    print("repaired: a fresh snapshot holds the rows above; the damaged journal lines are gone")
    return EXIT_PARTIAL if loaded.journal.skipped else EXIT_OK


def _rebuild(path: Path, problem: str, input_path: str | None) -> int:
    """The snapshot is lost or unreadable: recover from the journal's header and row records."""
    lock = WriterLock(path)
    lock.acquire()  # CheckpointError if a run is writing it
    try:
        with _quiet():
            scan = replay(path, 0, {})
        if not scan.headers:
            raise CheckpointError(
                f"{problem}; its journal holds no header record (written by an older videobatch, "
                "or lost), so the run id is gone and rows already submitted cannot be recognised. "
                f"Restore {path.name} from a backup; or move it and {path.name}.journal.* aside to "
                "start over (which pays again for every row)")
        newer = {h.get("format") for h in scan.headers} - {FORMAT}
        if newer:
            raise CheckpointError(f"the journal of {path} has format {newer.pop()}; this videobatch "
                                  f"reads {FORMAT}: repair it with the videobatch that wrote it")
        header = scan.headers[-1]
        print(f"{path}: {problem}")
        if path.exists():
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            os.replace(path, aside)
            print(f"  moved the unreadable snapshot aside to {aside.name}")
        print(f"run {header.get('run_id')} recovered from the journal header (idempotency keys "
              "unchanged)")
    finally:
        lock.release()
    if input_path is None:
        last = {r["k"]: r["s"] for r in iter_records(path) if isinstance(r.get("s"), str)}
        print(f"{len(last)} row(s) have their latest state in the journal")
        _report(scan, Counter(last.values()), [])
        print("not recovered yet: the rows' requests (they were in the snapshot). To finish, run "
              "the original command again with the same input and options (e.g. python -m "
              f"videobatch PROMPTS.csv --checkpoint {path}), or videobatch.run(...) with the same "
              f"rows and checkpoint, or: python -m videobatch repair {path} --input PROMPTS.csv. "
              "It keeps this run id; rows whose state was lost are looked up at the provider by "
              "their idempotency key before anything is submitted.")
        return EXIT_PARTIAL
    prompts = load_prompts(input_path)
    with _quiet():
        store, jobs = Checkpoint.open(path, prompts, settings=header.get("settings") or {})
    store.release()
    _report(store.recovery or scan, Counter(j.state.value for j in jobs), store.lost_rows)
    print(f"repaired: a fresh snapshot of {len(jobs)} row(s) from {input_path} and the journal")
    return EXIT_PARTIAL if store.lost_rows or scan.skipped else EXIT_OK


def _report(scan: Replay, states: Counter[str], lost: list[str]) -> None:
    if states:
        print("  rows: " + " · ".join(f"{state} {n}" for state, n in states.most_common()))
    if scan.skipped:
        print(f"  lost: {len(scan.skipped)} damaged journal line(s) skipped: "
              + ", ".join(scan.skipped[:5]) + (" ..." if len(scan.skipped) > 5 else ""))
    if scan.damaged_rows:
        print("  rows named in them, looked up at the provider before anything is paid: "
              + ", ".join(sorted(scan.damaged_rows)[:10]))
    if scan.salvaged:
        print(f"  recovered: {len(scan.salvaged)} damaged journal line(s) still held a whole record")
    if scan.torn:
        print(f"  ignored: {len(scan.torn)} last line(s) cut short by a crash (never acted upon)")
    if lost:
        print(f"  {len(lost)} row(s) whose state was lost with the snapshot are in `submitting`: "
              "the next run looks each up by its idempotency key before paying (e.g. "
              + ", ".join(lost[:5]) + ")")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Repair reports damaged lines itself: no replay warnings on top."""
    logger = logging.getLogger("videobatch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
