"""The command line: ``python -m videobatch PROMPTS.csv [options]``.

Exit codes: 0 every row completed · 1 some rows failed or were left undone · 2 bad input, usage or
configuration (nothing submitted) · 130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .._api import Batch
from .._events import Event
from .._inputs import load_prompts
from .._jobs import State
from .._results import write_results
from ..errors import AccountError, AuthError, CheckpointError, ConfigError, InputError
from ..providers import available, get_provider
from ..ui.progress import summary

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
Generate one video per row of PROMPTS, a CSV file with a `prompt` column.

Optional columns set per-row options: negative_prompt, model, duration, aspect_ratio, mode,
cfg_scale, image (URL or file, for image-to-video), image_tail, camera_control (JSON). An `id`
column names rows; every other column is carried through to the results untouched.

Progress is checkpointed as the run goes. Run the same command again after a crash or Ctrl-C and
it resumes: finished rows are kept, rows already accepted by the provider are picked up again
(never paid twice), the rest continue.
"""

EPILOG = """\
commands on a checkpoint:
  python -m videobatch status CHECKPOINT      counts, failures by reason, what is still running
  python -m videobatch retry CHECKPOINT       run failed rows again (new paid requests)
  python -m videobatch download CHECKPOINT DIR   fetch finished videos that are not on disk yet
  python -m videobatch report CHECKPOINT      an HTML contact sheet (thumbnail, prompt, status, link)

examples:
  python -m videobatch data/prompts.csv --out results.csv
  python -m videobatch prompts.csv --dry-run --duration 10
  python -m videobatch prompts.csv --provider kling --concurrency 5 --model kling-v2-1
  python -m videobatch prompts.csv -P latency=1 -P failure_rate=0.1     (options of the provider)

exit codes: 0 all completed, 1 some failed or left undone, 2 bad input/usage, 130 interrupted.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m videobatch", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompts", metavar="PROMPTS", help="CSV file of prompts (UTF-8, header row)")
    p.add_argument("--version", action="version", version=f"videobatch {__version__}")

    g = p.add_argument_group("provider")
    g.add_argument("--provider", default="local", metavar="NAME",
                   help=f"video provider: {', '.join(available())} (default: local, offline)")
    g.add_argument("-P", "--provider-option", action="append", default=[], metavar="KEY=VALUE",
                   help="provider setting, repeatable (local: latency, jitter, failure_rate, "
                        "max_parallel, root; kling: base_url, max_parallel, max_rps, ...)")
    g.add_argument("--base-url", metavar="URL", help="provider API address (same as -P base_url=URL)")

    g = p.add_argument_group("run")
    g.add_argument("--concurrency", type=int, metavar="N",
                   help="tasks in flight at once (default and maximum: the provider's limit)")
    g.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="give up on a row this long after the provider accepted it (default 3600)")
    g.add_argument("--max-attempts", type=int, default=5, metavar="N",
                   help="submits per row that may fail transiently before the row fails (default 5)")

    g = p.add_argument_group("checkpoint and results")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (default: PROMPTS with .checkpoint.parquet)")
    g.add_argument("--no-checkpoint", action="store_true",
                   help="keep no checkpoint (a crash loses the run's progress)")
    g.add_argument("--force", action="store_true",
                   help="use a checkpoint made from different rows: unchanged finished rows are "
                        "kept, the rest run")
    g.add_argument("--out", metavar="PATH",
                   help="results table, .csv, .parquet or .jsonl (default: PROMPTS with "
                        ".results.csv)")
    g.add_argument("--dry-run", action="store_true",
                   help="validate and show what would be submitted; call no provider")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    g = p.add_argument_group("delivery")
    g.add_argument("--download", metavar="DIR",
                   help="save each finished clip to DIR as soon as it completes (verified, with a "
                        "poster frame), and write DIR/report.html at the end")
    g.add_argument("--download-concurrency", type=int, default=4, metavar="N",
                   help="downloads at once, separate from generation (default 4)")
    g.add_argument("--name", metavar="TEMPLATE",
                   help="file name of each clip from row columns, e.g. '{campaign}/{id}' "
                        "(default: the row key)")
    g.add_argument("--webhook", metavar="URL",
                   help="POST each row's outcome to URL (a webhook_url column overrides it per row); "
                        "signed with HMAC-SHA256 when VIDEOBATCH_WEBHOOK_SECRET is set")
    g.add_argument("--report", metavar="PATH", help="write an HTML contact sheet of the results")
    g.add_argument("-v", "--verbose", action="store_true", help="log retries and failures")

    g = p.add_argument_group("defaults for empty cells")
    g.add_argument("--model", help="e.g. kling-v1-6 (default), kling-v2-1, kling-v2-5-turbo")
    g.add_argument("--duration", help="seconds: 5 or 10")
    g.add_argument("--aspect-ratio", help="16:9, 9:16 or 1:1")
    g.add_argument("--mode", help="std or pro")
    g.add_argument("--negative-prompt", metavar="TEXT")
    g.add_argument("--cfg-scale", type=float, metavar="X", help="0 to 1 (kling-v1.x models)")
    return p


def _defaults(args: argparse.Namespace) -> dict[str, Any]:
    names = ("model", "duration", "aspect_ratio", "mode", "negative_prompt", "cfg_scale")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def delivery_options(args: argparse.Namespace) -> dict[str, Any]:
    """Batch keywords from the --download/--name/--webhook flags (the secret from the environment
    only, never a flag: flags show in ``ps``)."""
    return {"download": args.download, "download_name": args.name, "webhook": args.webhook,
            "download_concurrency": getattr(args, "download_concurrency", 4),
            "webhook_secret": os.environ.get("VIDEOBATCH_WEBHOOK_SECRET") or None}


def parse_options(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``-P KEY=VALUE`` items as provider options (``-`` in keys read as ``_``)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"-P expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = value
    return options


def _provider_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    options = parse_options(args.provider_option, parser)
    if args.base_url:
        options["base_url"] = args.base_url
    return options


def _default_path(prompts: str, suffix: str) -> Path:
    p = Path(prompts)
    return p.with_name(p.stem + suffix)


# Sub-commands, each a ``main(argv) -> exit code`` in its own module (imported when used).
SUBCOMMANDS = {
    "status": "videobatch.cli.commands:status_main",
    "retry": "videobatch.cli.commands:retry_main",
    "download": "videobatch.cli.commands:download_main",
    "report": "videobatch.cli.commands:report_main",
    "repair": "videobatch.cli.repair:repair_main",
    "serve": "videobatch.service.cli:serve_main",
    "worker": "videobatch.service.cli:worker_main",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, _, attr = SUBCOMMANDS[argv[0]].partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        code: int = command(argv[1:])
        return code
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    checkpoint = None if args.no_checkpoint else (
        Path(args.checkpoint) if args.checkpoint else _default_path(args.prompts, ".checkpoint.parquet"))
    out = Path(args.out) if args.out else _default_path(args.prompts, ".results.csv")
    try:
        if args.dry_run:
            return _dry_run(args, _provider_options(args, parser), checkpoint)
        batch = Batch(
            args.prompts, args.provider, concurrency=args.concurrency, checkpoint=checkpoint,
            force=args.force, progress=not args.quiet, timeout=args.timeout,
            max_attempts=args.max_attempts,
            observers=[_log_event] if args.verbose else [],
            **delivery_options(args), **_defaults(args), **_provider_options(args, parser),
        )
    except (InputError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    return finish_run(batch, out=out, checkpoint=checkpoint, download=args.download,
                      report=args.report)


def finish_run(batch: Batch, *, out: Path | None, checkpoint: Path | str | None,
               download: str | None = None, report: str | Path | None = None) -> int:
    """Wait for ``batch``, write its results, print the summary; the exit code of the command."""
    started = time.monotonic()
    interrupted = False
    stopped: str | None = None
    auth_failed = False
    try:
        batch.wait()
    except KeyboardInterrupt:
        interrupted = True
    except AuthError as exc:
        stopped, auth_failed = str(exc), True
    except AccountError as exc:
        stopped = str(exc)
    elapsed = time.monotonic() - started

    df = batch.results()
    where = [f"checkpoint: {checkpoint}"] if checkpoint else []
    if out is not None:
        write_results(df, out)
        where.insert(0, f"results: {out}")
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

        where.append(f"report: {write_report(df, report)}")
    print(summary(counts, elapsed, failures, cancelled=interrupted, stopped_by=stopped,
                  where=where))
    if interrupted:
        return EXIT_INTERRUPTED
    if auth_failed:
        return EXIT_USAGE
    return EXIT_OK if counts[State.COMPLETED] == len(batch.jobs) else EXIT_FAILED


def _dry_run(args: argparse.Namespace, provider_options: dict[str, str],
             checkpoint: Path | None) -> int:
    prompts = load_prompts(args.prompts, defaults=_defaults(args) or None)
    provider = get_provider(args.provider, **provider_options)
    problems = provider.check(prompts.requests)
    if problems:
        raise InputError(problems, source=prompts.source)
    done: set[str] = set()
    if checkpoint is not None and checkpoint.exists():
        from .._store import load

        done = {j.key for j in load(checkpoint).jobs if j.state is State.COMPLETED}
    todo = [(k, r) for k, r in zip(prompts.keys, prompts.requests, strict=True) if k not in done]
    costs = [provider.estimate_cost(r) for _, r in todo]
    print(f"{len(prompts)} rows valid; {len(todo)} would be submitted to {provider.name!r}"
          + (f" ({len(done)} already completed in {checkpoint})" if done else ""))
    by_kind = Counter(f"{r.model} {r.mode} {r.duration}s" for _, r in todo)
    for kind, n in by_kind.most_common():
        print(f"  {n:>5} × {kind}")
    if todo and all(c is not None for c in costs):
        print(f"estimated cost: about ${sum(c for c in costs if c is not None):,.2f}")
    for key, request in todo[:20]:
        print(f"  {key}: {request.summary()}")
    if len(todo) > 20:
        print(f"  ... and {len(todo) - 20} more")
    print("dry run: nothing was submitted")
    return EXIT_OK


def _log_event(event: Event) -> None:
    log = logging.getLogger("videobatch")
    if event.kind == "retry" and event.job is not None:
        log.info("row %s: %s; retrying in %.1fs", event.job.key, event.error, event.delay or 0)
    elif event.kind == "transition" and event.job is not None and event.new is State.FAILED:
        log.warning("row %s failed: [%s] %s", event.job.key, event.job.error_kind, event.job.error)


if __name__ == "__main__":
    raise SystemExit(main())
