"""The sub-commands that work on a checkpoint: ``retry``, ``download`` and ``report`` (``status`` is
its own module, ``videobatch.cli.status``).

    python -m videobatch status CHECKPOINT            counts, failures by reason, what is in flight
    python -m videobatch retry CHECKPOINT [--only-failed-with REASON] [--unknown] [--cancelled]
    python -m videobatch download CHECKPOINT DIR      fetch finished videos not on disk yet
    python -m videobatch report CHECKPOINT [--out report.html]          the HTML contact sheet

Each is a ``*_main(argv) -> exit code`` that ``videobatch.cli.main`` dispatches to; their options
come from the groups in ``_options`` that the main command uses too, and so do the exit codes:
0 ok · 1 some rows failed or are unknown (or downloads failed) · 2 usage, setup or unusable
checkpoint · 130 interrupted (run the same command again).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._jobs import IN_FLIGHT, State
from ..errors import CheckpointError, ConfigError, InputError
from ._boundary import describe_os_error, log_to_stderr
from ._checks import Place, check_numbers, check_places, check_results_format, refuse
from ._options import (
    EXIT_CODES_HELP,
    ExitCode,
    add_delivery,
    add_name,
    add_output,
    add_provider,
    add_results,
    add_run,
    command_parser,
    delivery_options,
    provider_options,
    reuse_options,
    scoped_options,
)
from ._planning import confirmed, declined, plan_lines
from ._running import finish_run, log_event
from .status import load_or_say, status_main, status_report

__all__ = ["download_main", "report_main", "retry_main", "status_main", "status_report"]  # status:
# its own module (``status``), named here too for those who import it from here

_ORDER = (State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED,
          State.UNKNOWN, State.CANCELLED)


# ---------------------------------------------------------------------- retry
def _retry_parser() -> Any:
    p = command_parser(
        "retry", "Run the failed rows of a checkpoint again (each retried row is a new, separately "
                 "paid submission, except timed-out rows, which wait for their open task again); "
                 "rows still in flight are finished too, and rows never sent are sent. Cancelled "
                 "rows stay cancelled unless --cancelled is given (running the original command "
                 "again resumes them too). With --unknown, the rows whose outcome is unknown "
                 "instead: a paid task may exist for them that could not be found, so "
                 "resubmitting them may pay twice.\n\n"
                 "Provider options (-P latency=..., --base-url) are not stored in the checkpoint: "
                 "pass them again when they matter.",
        epilog="examples:\n"
               "  python -m videobatch retry run.parquet --dry-run\n"
               "  python -m videobatch retry run.parquet --only-failed-with timeout,transient\n"
               "  python -m videobatch retry run.parquet --unknown\n"
               "  python -m videobatch retry run.parquet --cancelled\n"
               "  python -m videobatch retry run.parquet --provider kling --concurrency 3\n\n"
               + EXIT_CODES_HELP)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    g = p.add_argument_group("which rows")
    g.add_argument("--only-failed-with", action="append", default=[], metavar="REASON",
                   help="retry only rows failed for this reason (error_kind, e.g. transient, "
                        "timeout, generation_failed); repeatable or comma-separated")
    g.add_argument("--unknown", action="store_true",
                   help="resubmit the rows whose outcome is unknown instead of the failed ones (add "
                        "--only-failed-with to take those failed rows too); a paid task may exist "
                        "for each: they may be paid twice")
    g.add_argument("--cancelled", action="store_true",
                   help="also resume the rows a cancel stopped (each is a paid submission); "
                        "without it they stay cancelled")
    add_provider(p, default=None)
    add_run(p)
    add_results(p, default_out=None)
    add_delivery(p)
    add_output(p)
    return p


def _retry_problems(args: Any) -> list[str]:
    problems = check_numbers(args)
    places = [Place(Path(args.checkpoint), f"checkpoint {args.checkpoint}",
                    "copy the checkpoint (with its .journal.* files) to a writable folder and retry "
                    "it there")]
    if args.out:
        bad_format = check_results_format(Path(args.out), f"--out {args.out}")
        problems += [bad_format] if bad_format else []
        places.append(Place(Path(args.out), f"--out {args.out}", "pass --out PATH in a writable folder"))
    if args.download:
        places.append(Place(Path(args.download), f"--download {args.download}",
                            "choose a writable DIR", is_folder=True))
    if args.report:
        places.append(Place(Path(args.report), f"--report {args.report}", "choose a writable PATH"))
    return problems + check_places(places)


def retry_main(argv: Sequence[str]) -> int:
    p = _retry_parser()
    args = p.parse_args(list(argv))
    log_to_stderr(args.verbose)
    options = provider_options(args, p)
    kinds = [k.strip() for item in args.only_failed_with for k in item.split(",") if k.strip()] or None
    take_failed = not args.unknown or kinds is not None

    loaded = load_or_say(args.checkpoint)
    if loaded is None:
        return ExitCode.USAGE
    problems = _retry_problems(args)
    if problems:
        return refuse(problems)
    failed = [j for j in loaded.jobs if j.state is State.FAILED]
    chosen = [j for j in failed if take_failed and (kinds is None or j.error_kind in kinds)]
    unknown = [j for j in loaded.jobs if j.state is State.UNKNOWN]
    cancelled = sum(1 for j in loaded.jobs if j.state is State.CANCELLED)
    in_flight = sum(1 for j in loaded.jobs if j.state in IN_FLIGHT)
    unsent = sum(1 for j in loaded.jobs if j.state is State.PENDING)
    present = Counter(j.error_kind or "error" for j in failed)
    if kinds and not chosen and failed:
        print(f"no failed rows with reason {', '.join(kinds)}; failed rows have: "
              + ", ".join(f"{k} ×{n}" for k, n in present.most_common()), file=sys.stderr)
    reattach = sum(1 for j in chosen if j.error_kind == "timeout" and j.task_id)
    print(f"{len(chosen) - reattach} failed row(s) to retry as new paid submissions"
          + (f", {reattach} timed-out row(s) to wait for again (their tasks, not paid again)"
             if reattach else "")
          + (f", {len(unknown)} row(s) of unknown outcome to resubmit" if args.unknown else "")
          + (f", {in_flight} row(s) in flight to finish (not paid again)" if in_flight else "")
          + (f", {unsent} row(s) never sent to submit" if unsent else "")
          + (f", {cancelled} cancelled row(s) to resume as paid submissions"
             if args.cancelled and cancelled else ""))
    if cancelled and not args.cancelled:
        print(f"{cancelled} cancelled row(s) left as they are; --cancelled resumes them "
              "(each a paid submission)", file=sys.stderr)
    if args.unknown and unknown:
        print(f"warning: {'would resubmit' if args.dry_run else 'resubmitting'} {len(unknown)} "
              "row(s) whose outcome is unknown: a paid task may already exist for each (check the "
              "provider's console), so they may be paid twice", file=sys.stderr)
    elif unknown:
        print(f"{len(unknown)} row(s) of unknown outcome left as they are (a paid task may exist); "
              "--unknown resubmits them", file=sys.stderr)
    todo = (bool(chosen) or (args.unknown and bool(unknown)) or in_flight + unsent > 0
            or (args.cancelled and cancelled > 0))
    if not todo and not args.dry_run:
        print("nothing to retry")
        return ExitCode.OK

    from .._api import Batch

    try:  # a dry run builds the same batch, reading the checkpoint without writing it
        batch = Batch.from_checkpoint(args.checkpoint, args.provider, concurrency=args.concurrency,
                                      progress=not args.quiet, timeout=args.timeout,
                                      max_attempts=args.max_attempts, max_cost=args.max_cost,
                                      observers=[log_event] if args.verbose else [],
                                      providers=scoped_options(args, p), dry_run=args.dry_run,
                                      check_images=not args.no_check_images,
                                      **delivery_options(args), **reuse_options(args), **options)
    except (InputError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:  # opening the checkpoint: the folder went read-only, the disk is full
        print(f"error: {describe_os_error(exc, where=args.checkpoint)} (nothing was submitted)",
              file=sys.stderr)
        return ExitCode.USAGE
    batch.retry(failed=take_failed, unknown=args.unknown, kinds=kinds)  # cancelled rows stay
    if args.cancelled:
        batch.resume_cancelled()
    if args.dry_run:
        print("\n".join(plan_lines(batch, batch.plan(), checkpoint=args.checkpoint)))
        print("dry run: nothing was submitted")
        return ExitCode.OK
    if not args.yes and not confirmed(batch, checkpoint=args.checkpoint):
        return declined(batch)
    return finish_run(batch, out=Path(args.out) if args.out else None, checkpoint=args.checkpoint,
                      download=args.download, report=args.report)


# ---------------------------------------------------------------------- download
def download_main(argv: Sequence[str]) -> int:
    p = command_parser("download", "Download every finished video of a checkpoint that is not in DIR yet "
                            "(verified, atomically renamed), make poster thumbnails and the "
                            "DIR/report.html contact sheet. Safe to run again: intact files are "
                            "skipped, interrupted ones resume. Outcomes are recorded in the "
                            "checkpoint (local_path, bytes, sha256, download_error).",
                epilog="examples:\n"
                       "  python -m videobatch download run.parquet videos/\n"
                       "  python -m videobatch download run.parquet videos/ --name '{team}/{row:04d}'\n\n"
                       "exit codes: 0 every finished video is on disk, 1 some downloads failed, "
                       "2 bad checkpoint, usage or setup (a read-only DIR), 130 interrupted.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("directory", metavar="DIR", help="where the videos go (created if missing)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="downloads at once (default 4)")
    add_name(p)
    p.add_argument("--max-attempts", type=int, default=4, metavar="N",
                   help="tries per video before it is reported as failed (default 4)")
    p.add_argument("--no-thumbnails", action="store_true", help="skip poster PNGs")
    p.add_argument("--no-report", action="store_true", help="skip DIR/report.html")
    add_output(p, quiet=False)
    args = p.parse_args(list(argv))
    log_to_stderr(args.verbose)
    loaded = load_or_say(args.checkpoint)
    if loaded is None:
        return ExitCode.USAGE
    problems = check_numbers(args) + check_places([
        Place(Path(args.directory), f"DIR {args.directory}", "choose a writable DIR", is_folder=True),
        Place(Path(args.checkpoint), f"checkpoint {args.checkpoint} (records what is on disk)",
              "copy the checkpoint (with its .journal.* files) to a writable folder"),
    ])
    if problems:
        return refuse(problems, "nothing was downloaded")
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
        return ExitCode.INTERRUPTED
    except (ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
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
    return ExitCode.OK if result.ok else ExitCode.FAILED


# ---------------------------------------------------------------------- report
def report_main(argv: Sequence[str]) -> int:
    p = command_parser("report", "Write the HTML contact sheet of a checkpoint: thumbnail, prompt, "
                          "parameters, status and link per row; opens from disk without a server.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the run's checkpoint (.parquet)")
    p.add_argument("--out", default="report.html", metavar="PATH", help="default: report.html")
    p.add_argument("--embed", action="store_true",
                   help="put the thumbnails inside the HTML (one portable file)")
    add_output(p, quiet=False)
    args = p.parse_args(list(argv))
    log_to_stderr(args.verbose)
    problems = check_places([Place(Path(args.out), f"--out {args.out}",
                                   "pass --out PATH in a writable folder")])
    if problems:
        return refuse(problems, "nothing was written")
    from ..delivery.report import write_report

    try:
        path = write_report(args.checkpoint, args.out, embed=args.embed)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"contact sheet: {path}")
    return ExitCode.OK
