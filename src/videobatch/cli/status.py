"""``python -m videobatch status CHECKPOINT``: where a batch stands — counts per state, failures
grouped by reason, the oldest rows in flight, the time left, and its spend (spent / reserved /
budget, ``videobatch._spend``)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .._jobs import IN_FLIGHT, Job, State
from .._spend import BUDGET, Actuals, Figures, Ledger
from .._store import LoadedCheckpoint, load
from ..errors import CheckpointError
from ._boundary import log_to_stderr
from ._options import ExitCode, add_output, add_provider, command_parser, provider_options
from ._planning import budget_lines

__all__ = ["load_or_say", "status_main", "status_report"]


def load_or_say(path: str) -> LoadedCheckpoint | None:
    """The checkpoint at ``path``, or None once its problem is printed."""
    try:
        return load(path)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


_ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
          State.UNKNOWN, State.CANCELLED)


def _span(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a duration for people."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def status_report(loaded: LoadedCheckpoint, *, now: float | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (``status --json`` prints it)."""
    now = time.time() if now is None else now
    jobs = loaded.jobs
    counts = Counter(j.state for j in jobs)
    failures: dict[str, list[Job]] = {}
    for job in jobs:
        if job.state is State.FAILED:
            failures.setdefault(job.error_kind or "error", []).append(job)
    flying = sorted((j for j in jobs if j.state in IN_FLIGHT),
                    key=lambda j: j.submitted_at or j.updated_at)
    finished = [j for j in jobs if j.state in (State.COMPLETED, State.FAILED) and j.completed_at]
    started = [j.submitted_at for j in jobs if j.submitted_at]
    left = sum(counts[s] for s in (State.PENDING, State.CANCELLED, *IN_FLIGHT))
    rate = None
    if finished and started:
        span = max(j.completed_at or 0.0 for j in finished) - min(started)
        rate = len(finished) / span if span > 0 else None
    extras = [j.extras for j in jobs]
    settings = loaded.meta.get("settings", {})
    spend = Ledger(jobs, loaded.meta.get("max_cost"),
                   dropped=float(loaded.meta.get("cost_dropped") or 0)).figures()
    actuals = Actuals.of(jobs)
    return {
        "rows": len(jobs),
        "provider": settings.get("provider"),
        "run_id": loaded.meta.get("run_id"),
        "updated_at": loaded.meta.get("updated_at"),
        "counts": {s.value: counts[s] for s in _ORDER},
        "failures": {kind: {"count": len(rows), "example_row": rows[0].key,
                            "example_error": rows[0].error}
                     for kind, rows in sorted(failures.items(), key=lambda kv: -len(kv[1]))},
        "in_flight": [{"key": j.key, "state": j.state.value, "task_id": j.task_id,
                       "age_s": now - (j.submitted_at or j.updated_at)} for j in flying[:10]],
        "remaining_rows": left,
        "rows_per_second": rate,
        "eta_s": (left / rate) if (rate and left) else (0.0 if not left else None),
        "downloads": {"on_disk": sum(1 for x in extras if x.get("local_path")),
                      "failed": sum(1 for x in extras if x.get("download_error"))},
        "webhooks": dict(Counter(str(x["webhook_status"]) for x in extras if x.get("webhook_status"))),
        # USD (videobatch._spend): actual where the provider reported it, else estimates;
        # budget: the last run's --max-cost (None: none set, or a checkpoint older than budgets)
        "spend": {"spent": spend.spent, "reserved": spend.reserved, "budget": spend.budget,
                  "left": spend.left,
                  "actual": {"tasks": actuals.tasks, "cost": actuals.actual,
                             "estimated": actuals.estimated},
                  "not_sent_budget": sum(1 for j in jobs if j.state is State.PENDING
                                         and j.error_kind == BUDGET)},
    }


def _status_text(path: str, info: dict[str, Any]) -> str:
    updated = info["updated_at"]
    lines = [f"{path}: {info['rows']} rows via {info['provider']!r}"
             + (f", last written {_span(time.time() - updated)} ago" if updated else "")]
    lines.append("  " + " · ".join(f"{state} {n}" for state, n in info["counts"].items() if n))
    if info["failures"]:
        lines.append("Failures by reason:")
        for kind, f in info["failures"].items():
            lines.append(f"  {kind} ×{f['count']}  e.g. {f['example_row']}: {f['example_error']}")
        lines.append("  retry with: python -m videobatch retry " + path
                     + " [--only-failed-with REASON]")
    if info["counts"].get(State.UNKNOWN.value):
        lines.append(f"Outcome unknown: {info['counts'][State.UNKNOWN.value]} row(s) may have a paid "
                     "task at the provider that could not be found; check them in its console, "
                     f"or resubmit them (may pay twice): python -m videobatch retry {path} --unknown")
    if info["in_flight"]:
        lines.append("Oldest in flight:")
        for row in info["in_flight"][:5]:
            lines.append(f"  {row['key']}  {row['state']} for {_span(row['age_s'])}"
                         + (f"  task {row['task_id']}" if row["task_id"] else ""))
    if info["remaining_rows"]:
        if info["eta_s"] is not None:
            lines.append(f"Estimated remaining: about {_span(info['eta_s'])} for "
                         f"{info['remaining_rows']} rows at the pace so far "
                         f"({info['rows_per_second'] * 60:.1f} rows/min), once running")
        else:
            lines.append(f"Estimated remaining: unknown ({info['remaining_rows']} rows left, "
                         "none finished yet to measure the pace)")
    spend = info["spend"]
    actual = spend["actual"]
    lines += budget_lines(Figures(spend["spent"], spend["reserved"], spend["budget"]), "Spend",
                          Actuals(actual["tasks"], actual["cost"], actual["estimated"]))
    if spend["not_sent_budget"]:
        lines.append(f"  {spend['not_sent_budget']} row(s) not sent because of the budget (they "
                     "stay pending): run again with a higher --max-cost to send them")
    dl = info["downloads"]
    if dl["on_disk"] or dl["failed"]:
        lines.append(f"Downloads: {dl['on_disk']} on disk, {dl['failed']} failed")
    if info["webhooks"]:
        lines.append("Webhooks: " + ", ".join(f"{n} {s}" for s, n in info["webhooks"].items()))
    return "\n".join(lines)


def status_main(argv: Sequence[str]) -> int:
    p = command_parser("status", "Show where a batch stands: counts per state, failures grouped by "
                          "reason, the oldest rows still in flight and an estimate of the time left.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--no-check", action="store_true",
                   help="do not ask the provider again about rows whose outcome is unknown")
    p.add_argument("--verify-tasks", action="store_true",
                   help="ask the provider whether each row's task carries the row's own key (a "
                        "task adopted by mistake shows another system's video)")
    add_provider(p, default=None)
    add_output(p, quiet=False)
    args = p.parse_args(list(argv))
    log_to_stderr(args.verbose)
    loaded = load_or_say(args.checkpoint)
    if loaded is None:
        return ExitCode.USAGE
    info = status_report(loaded)
    if not args.no_check:
        from ._recheck import recheck_unknown

        info["unknown_checked"] = recheck_unknown(loaded, args.provider, provider_options(args, p))
    if args.verify_tasks:
        from ._recheck import verify_tasks

        info["tasks_verified"] = verify_tasks(loaded, args.provider, provider_options(args, p))
    text = _status_text(args.checkpoint, info)
    for name in ("unknown_checked", "tasks_verified"):
        if info.get(name):
            text += "\n" + "\n".join(info[name])
    print(json.dumps(info, indent=2, default=str) if args.json else text)
    return ExitCode.OK
