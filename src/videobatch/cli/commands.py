"""The sub-commands that work on a checkpoint: ``status``, ``retry``, ``download`` and ``report``.

    python -m videobatch status CHECKPOINT            counts, failures by reason, what is in flight
    python -m videobatch retry CHECKPOINT [--only-failed-with REASON]   run failed rows again
    python -m videobatch download CHECKPOINT DIR      fetch finished videos not on disk yet
    python -m videobatch report CHECKPOINT [--out report.html]          the HTML contact sheet

Each is a ``*_main(argv) -> exit code`` called by ``videobatch.cli.main``. Exit codes are the main
command's: 0 ok · 1 some rows failed (or downloads failed) · 2 usage or unusable checkpoint ·
130 interrupted (run the same command again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._jobs import IN_FLIGHT, Job, State
from .._store import LoadedCheckpoint, load
from ..errors import CheckpointError, ConfigError, InputError

__all__ = ["download_main", "report_main", "retry_main", "status_main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
          State.CANCELLED)


def _span(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a duration for people."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _parser(command: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    text = "\n\n".join(textwrap.fill(part, 88) for part in description.split("\n\n"))
    return argparse.ArgumentParser(prog=f"python -m videobatch {command}", description=text,
                                   epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def _load(path: str) -> LoadedCheckpoint | None:
    try:
        return load(path)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


# ---------------------------------------------------------------------- status
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
    dl = info["downloads"]
    if dl["on_disk"] or dl["failed"]:
        lines.append(f"Downloads: {dl['on_disk']} on disk, {dl['failed']} failed")
    if info["webhooks"]:
        lines.append("Webhooks: " + ", ".join(f"{n} {s}" for s, n in info["webhooks"].items()))
    return "\n".join(lines)


def status_main(argv: Sequence[str]) -> int:
    p = _parser("status", "Show where a batch stands: counts per state, failures grouped by "
                          "reason, the oldest rows still in flight and an estimate of the time left.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = p.parse_args(list(argv))
    loaded = _load(args.checkpoint)
    if loaded is None:
        return EXIT_USAGE
    info = status_report(loaded)
    print(json.dumps(info, indent=2, default=str) if args.json else _status_text(args.checkpoint, info))
    return EXIT_OK


# ---------------------------------------------------------------------- retry
def retry_main(argv: Sequence[str]) -> int:
    p = _parser("retry", "Run the failed rows of a checkpoint again (each retried row is a new, "
                         "separately paid submission); unfinished rows are resumed too.\n\n"
                         "Provider options (-P latency=..., --base-url) are not stored in the "
                         "checkpoint: pass them again when they matter.",
                epilog="examples:\n"
                       "  python -m videobatch retry run.parquet --dry-run\n"
                       "  python -m videobatch retry run.parquet --only-failed-with timeout,transient\n"
                       "  python -m videobatch retry run.parquet --provider kling --concurrency 3\n\n"
                       "exit codes: 0 all completed, 1 some failed or left undone, 2 bad checkpoint "
                       "or usage, 130 interrupted.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("--only-failed-with", action="append", default=[], metavar="REASON",
                   help="retry only rows failed for this reason (error_kind, e.g. transient, "
                        "timeout, generation_failed); repeatable or comma-separated")
    p.add_argument("--provider", metavar="NAME", help="default: the checkpoint's provider")
    p.add_argument("-P", "--provider-option", action="append", default=[], metavar="KEY=VALUE",
                   help="provider setting, repeatable (as for the main command)")
    p.add_argument("--base-url", metavar="URL", help="provider API address (-P base_url=URL)")
    p.add_argument("--concurrency", type=int, metavar="N", help="tasks in flight at once")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="give up on a row this long after the provider accepted it (default 3600)")
    p.add_argument("--max-attempts", type=int, default=5, metavar="N",
                   help="submits per row that may fail transiently (default 5)")
    p.add_argument("--out", metavar="PATH", help="also write the results (.csv, .parquet, .jsonl)")
    p.add_argument("--dry-run", action="store_true", help="show what would be retried; submit nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--download", metavar="DIR",
                   help="save each clip to DIR as soon as it is ready (as for the main command)")
    p.add_argument("--name", metavar="TEMPLATE", help="clip file names from row columns")
    p.add_argument("--webhook", metavar="URL",
                   help="POST each retried row's outcome (signed with $VIDEOBATCH_WEBHOOK_SECRET)")
    args = p.parse_args(list(argv))
    from .main import delivery_options, parse_options

    options = parse_options(args.provider_option, p)
    if args.base_url:
        options["base_url"] = args.base_url
    kinds = [k.strip() for item in args.only_failed_with for k in item.split(",") if k.strip()] or None

    loaded = _load(args.checkpoint)
    if loaded is None:
        return EXIT_USAGE
    failed = [j for j in loaded.jobs if j.state is State.FAILED]
    chosen = [j for j in failed if kinds is None or j.error_kind in kinds]
    unfinished = sum(1 for j in loaded.jobs if not j.terminal or j.state is State.CANCELLED)
    present = Counter(j.error_kind or "error" for j in failed)
    if kinds and not chosen and failed:
        print(f"no failed rows with reason {', '.join(kinds)}; failed rows have: "
              + ", ".join(f"{k} ×{n}" for k, n in present.most_common()), file=sys.stderr)
    reattach = sum(1 for j in chosen if j.error_kind == "timeout" and j.task_id)
    print(f"{len(chosen) - reattach} failed row(s) to retry as new paid submissions"
          + (f", {reattach} timed-out row(s) to wait for again (their tasks, not paid again)"
             if reattach else "")
          + (f", {unfinished} unfinished row(s) to resume" if unfinished else ""))
    if args.dry_run or (not chosen and not unfinished):
        if not args.dry_run:
            print("nothing to retry")
        return EXIT_OK

    from .._api import Batch

    try:
        batch = Batch.from_checkpoint(args.checkpoint, args.provider, concurrency=args.concurrency,
                                      progress=not args.quiet, timeout=args.timeout,
                                      max_attempts=args.max_attempts,
                                      **delivery_options(args), **options)
    except (InputError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    batch.retry_failed(kinds)
    from .main import finish_run

    return finish_run(batch, out=Path(args.out) if args.out else None, checkpoint=args.checkpoint,
                      download=args.download)


# ---------------------------------------------------------------------- download
def download_main(argv: Sequence[str]) -> int:
    p = _parser("download", "Download every finished video of a checkpoint that is not in DIR yet "
                            "(verified, atomically renamed), make poster thumbnails and the "
                            "DIR/report.html contact sheet. Safe to run again: intact files are "
                            "skipped, interrupted ones resume. Outcomes are recorded in the "
                            "checkpoint (local_path, bytes, sha256, download_error).",
                epilog="examples:\n"
                       "  python -m videobatch download run.parquet videos/\n"
                       "  python -m videobatch download run.parquet videos/ --name '{team}/{row:04d}'\n\n"
                       "exit codes: 0 every finished video is on disk, 1 some downloads failed, "
                       "2 bad checkpoint or usage, 130 interrupted.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("directory", metavar="DIR", help="where the videos go (created if missing)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="downloads at once (default 4)")
    p.add_argument("--name", metavar="TEMPLATE",
                   help="file name from row columns, e.g. '{team}/{key}' (default '{key}'; "
                        "also {row}, {index}); the extension is added")
    p.add_argument("--max-attempts", type=int, default=4, metavar="N",
                   help="tries per video before it is reported as failed (default 4)")
    p.add_argument("--no-thumbnails", action="store_true", help="skip poster PNGs")
    p.add_argument("--no-report", action="store_true", help="skip DIR/report.html")
    p.add_argument("-v", "--verbose", action="store_true", help="log each retry")
    args = p.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    loaded = _load(args.checkpoint)
    if loaded is None:
        return EXIT_USAGE
    now = time.time()
    completed = [j for j in loaded.jobs if j.state is State.COMPLETED and j.video_url]
    expired = [j.key for j in completed if j.expires_at and j.expires_at < now
               and not (j.extras.get("local_path") and Path(j.extras["local_path"]).exists())]
    if expired:
        print(f"warning: {len(expired)} video URL(s) are past their expiry (expires_at) and may be "
              f"gone: {', '.join(expired[:10])}{' ...' if len(expired) > 10 else ''}", file=sys.stderr)

    from ..delivery.downloads import download_missing

    try:
        result = asyncio.run(download_missing(
            args.checkpoint, args.directory, concurrency=args.concurrency, name_template=args.name,
            max_attempts=args.max_attempts, thumbnails=not args.no_thumbnails))
    except KeyboardInterrupt:
        print("Interrupted: run the same command again to resume the downloads.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    without = len(loaded.jobs) - len(completed)
    print(f"{len(result.downloaded)} downloaded, {len(result.skipped)} already on disk, "
          f"{len(result.failed)} failed" + (f"; {without} row(s) have no video (not completed)"
                                            if without else "") + f" -> {args.directory}")
    for key, reason in result.failed[:20]:
        print(f"  {key}: {reason}")
    if not args.no_report:
        from ..delivery.report import write_report

        report = write_report(args.checkpoint, Path(args.directory) / "report.html")
        print(f"contact sheet: {report}")
    return EXIT_OK if result.ok else EXIT_FAILED


# ---------------------------------------------------------------------- report
def report_main(argv: Sequence[str]) -> int:
    p = _parser("report", "Write the HTML contact sheet of a checkpoint: thumbnail, prompt, "
                          "parameters, status and link per row; opens from disk without a server.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("--out", default="report.html", metavar="PATH", help="default: report.html")
    p.add_argument("--embed", action="store_true",
                   help="put the thumbnails inside the HTML (one portable file)")
    args = p.parse_args(list(argv))
    from ..delivery.report import write_report

    try:
        path = write_report(args.checkpoint, args.out, embed=args.embed)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"contact sheet: {path}")
    return EXIT_OK
