"""Running a batch from the command line, for the main command and ``retry`` alike: wait for it,
write its results, print the summary, and turn the outcome into the exit code."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path

from .._api import Batch
from .._events import Event
from .._jobs import State
from .._results import write_results
from .._spend import Actuals, Ledger, charge, money, usd
from ..errors import AccountError, AuthError, ProviderError
from ..ui.progress import summary
from ._boundary import describe_os_error
from ._options import ExitCode
from ._planning import budget_left, budget_lines

__all__ = ["finish_run", "log_event", "per_provider", "spend_lines"]


def log_event(event: Event) -> None:
    """``-v``: one log line per retry and per failed row."""
    log = logging.getLogger("videobatch")
    if event.kind == "retry" and event.job is not None:
        log.info("row %s: %s; retrying in %.1fs", event.job.key, event.error, event.delay or 0)
    elif event.kind == "transition" and event.job is not None and event.new is State.FAILED:
        log.warning("row %s failed: [%s] %s", event.job.key, event.job.error_kind, event.job.error)


def per_provider(batch: Batch) -> list[str]:
    """A mixed table's summary lines: each provider's rows by state, and what each spent (the
    tasks it accepted or may have, actual cost where reported: ``videobatch._spend``)."""
    lines = ["by provider (spent: cost of the tasks each accepted or may have, actual where the "
             "provider reported it, else estimated):"]
    rows: dict[str, Counter[State]] = {}
    cost: dict[str, float | None] = {}
    for job in batch.jobs:
        provider = batch.providers.for_row(job)
        rows.setdefault(provider.name, Counter())[job.state] += 1
        if job.may_have_paid() or job.cost_earlier:
            request = batch.providers.request_of(job)
            priced = (job.cost_actual is not None or job.cost_estimated is not None
                      or provider.estimate_cost(request) is not None)
            spent = usd(charge(job, provider.estimate_cost)[0])
            before = cost.get(provider.name, 0.0)
            cost[provider.name] = None if not priced or before is None else before + spent
    for name, counts in rows.items():
        states = ", ".join(f"{n} {state.value}" for state, n in counts.most_common())
        spent_here = cost.get(name, 0.0)
        lines.append(f"  {name}: {states}; spent " + ("unknown" if spent_here is None
                                                       else f"about {money(spent_here)}"))
    return lines


def spend_lines(batch: Batch) -> list[str]:
    """The summary's spend: spent / reserved / budget of the checkpoint, spent against what was
    estimated and what the provider reported as the actual cost (where it did), and rows the
    budget left."""
    figures = Ledger(batch.jobs, batch.settings.max_cost, batch.providers.estimate_cost,
                     dropped=batch.store.cost_dropped).figures()
    left = budget_left(batch.jobs)
    return budget_lines(figures, "spend", Actuals.of(batch.jobs)) + ([left] if left else [])


def _stopped_by_machine(exc: OSError, checkpoint: Path | str | None) -> str:
    # The checkpoint store writes through file descriptors, whose errors name no file: then it
    # was the checkpoint (the only thing the run itself writes).
    then = (f"run the same command again to resume ({checkpoint} keeps every finished row)"
            if checkpoint is not None else "run again (without a checkpoint the run starts over)")
    return "the run stopped: " + describe_os_error(exc, where=checkpoint, then=then)


def finish_run(batch: Batch, *, out: Path | None, checkpoint: Path | str | None,
               download: str | None = None, report: str | Path | None = None) -> ExitCode:
    """Wait for ``batch``, write its results, print the summary; the exit code of the command."""
    started = time.monotonic()
    interrupted = False
    stopped: str | None = None
    setup_failed = False
    errors: list[str] = []
    try:
        batch.wait()
    except KeyboardInterrupt:
        interrupted = True
    except AuthError as exc:
        stopped, setup_failed = str(exc), True
    except (AccountError, ProviderError) as exc:  # the account, or a provider breaking its contract
        stopped = str(exc)
    except OSError as exc:  # the machine: a full disk, a folder gone read-only
        errors.append(_stopped_by_machine(exc, checkpoint))
    elapsed = time.monotonic() - started

    df = batch.results()
    where = [f"checkpoint: {checkpoint}"] if checkpoint else []
    if out is not None:
        try:
            write_results(df, out)
            where.insert(0, f"results: {out}")
        except OSError as exc:
            errors.append("results not written: " + describe_os_error(
                exc, where=out, then="run the same command again (nothing is paid again), or "
                                     "pass --out PATH elsewhere"))
    counts: Counter[State] = Counter(j.state for j in batch.jobs)
    failures = [(j.key, j.error_kind, j.error) for j in batch.jobs if j.state is State.FAILED]
    completed = [j for j in batch.jobs if j.state is State.COMPLETED]
    if download:
        saved = sum(1 for j in completed if j.extras.get("local_path"))
        where.append(f"downloads: {saved}/{len(completed)} clips in {download}")
        broken = [j for j in completed if j.extras.get("download_error")]
        if broken:
            where.append(f"  {len(broken)} download(s) failed (e.g. {broken[0].key}: "
                         f"{broken[0].extras['download_error']}); fetch them later with "
                         f"`python -m videobatch download {checkpoint or '<checkpoint>'} {download}`")
    elif completed and completed[0].video_url:
        where.append(f"videos: e.g. {completed[0].video_url}")
    report = report or (Path(download) / "report.html" if download else None)
    if report is not None:
        from ..delivery.report import write_report

        try:
            where.append(f"report: {write_report(df, report)}")
        except OSError as exc:
            errors.append("report not written: " + describe_os_error(
                exc, where=report, then="write it with `python -m videobatch report "
                                        f"{checkpoint or 'CHECKPOINT'} --out PATH`"))
    if len(batch.providers) > 1:
        where += per_provider(batch)
    where += spend_lines(batch)
    found = batch.outcome.slots_found if batch.outcome is not None else {}
    if found:
        where.append("most parallel tasks the account took at once (no limit was given, so the run "
                     "looked for it; --concurrency N states it): "
                     + ", ".join(f"{name} {limit}" for name, limit in found.items()))
    unknown = [(j.key, j.error) for j in batch.jobs if j.state is State.UNKNOWN]
    if unknown and checkpoint:
        where.append("rows of unknown outcome: running the same command again checks them again; "
                     f"`python -m videobatch retry {checkpoint} --unknown` resubmits them (may pay "
                     "twice)")
    print(summary(counts, elapsed, failures, cancelled=interrupted, stopped_by=stopped,
                  where=where, unknown=unknown))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if interrupted:
        return ExitCode.INTERRUPTED
    if setup_failed or errors:
        return ExitCode.USAGE
    return ExitCode.OK if counts[State.COMPLETED] == len(batch.jobs) else ExitCode.FAILED
