"""The command line: ``python -m videobatch PROMPTS.csv [options]`` and the dispatch to the
sub-commands (``SUBCOMMANDS``). Exit codes: ``ExitCode`` in ``_options``.

The pieces: ``_options`` (option groups every parser shares, their parsing, exit codes), ``_checks``
(what is checked before paying), ``_boundary`` (the machine: signals, pipes, OSError in one line),
``_running`` (wait, results, summary, exit code: shared with ``retry``), ``commands`` (status, retry,
download, report).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.std import tqdm

from .. import __version__
from .._api import Batch
from .._gc import gc_paused
from .._sweep import sweep
from ..errors import CheckpointError, ConfigError, InputError
from ._boundary import describe_os_error, guarded, log_to_stderr
from ._checks import Place, check_numbers, check_places, check_results_format, refuse
from ._options import (
    EXIT_CODES_HELP,
    ExitCode,
    add_delivery,
    add_output,
    add_provider,
    add_results,
    add_run,
    add_table,
    command_parser,
    delivery_options,
    provider_options,
    request_defaults,
    reuse_options,
    scoped_options,
    sweep_axes,
    table_options,
)
from ._planning import confirmed, declined, plan_lines
from ._running import finish_run, log_event

__all__ = ["SUBCOMMANDS", "main"]

DESCRIPTION = """\
Generate one video per row of PROMPTS, a table with a `prompt` column: a CSV file (or .tsv,
.parquet, .jsonl, .json, .xlsx).

Optional columns set per-row values every provider knows: model, duration, aspect_ratio,
resolution, negative_prompt, seed, audio (on/off), image and end_image (URL or file, for
image-to-video); and the provider's own options (Kling: mode, voice_list, watermark; see
`python -m videobatch models`). An `id` column names rows; every other column is carried through
to the results untouched.

Progress is checkpointed as the run goes. Run the same command again after a crash or Ctrl-C and
it resumes: finished rows are kept, rows already accepted by the provider are picked up again
(never paid twice), the rest continue.
"""

EPILOG = """\
commands on a checkpoint:
  python -m videobatch status CHECKPOINT      counts, failures by reason, what is still running
  python -m videobatch retry CHECKPOINT       run failed rows again (new paid requests);
                                              --unknown: rows whose outcome is unknown
  python -m videobatch download CHECKPOINT DIR   fetch finished videos that are not on disk yet
  python -m videobatch report CHECKPOINT      an HTML contact sheet (thumbnail, prompt, status, link)
  python -m videobatch repair CHECKPOINT      rebuild a damaged checkpoint from its journal (says what it lost)
  python -m videobatch models [--provider P]  each provider's models: what a row may ask for, price per clip

examples:
  python -m videobatch data/prompts.csv --out results.csv
  python -m videobatch prompts.csv --dry-run --duration 10
  python -m videobatch prompts.csv --max-cost 20      (never spend more than $20 on this checkpoint)
  python -m videobatch prompts.csv --reuse    (rows made before, by any run: taken, not paid again)
  python -m videobatch prompts.csv --provider kling --concurrency 5 --model kling-v3 -O mode=pro
  python -m videobatch prompts.csv -P latency=1 -P failure_rate=0.1     (options of the provider)
  python -m videobatch subjects.csv --template --sweep model=kling-v2-6,kling-v3 --sweep seed=1,2 --dry-run

""" + EXIT_CODES_HELP


def _parser() -> argparse.ArgumentParser:
    p = command_parser(None, DESCRIPTION, EPILOG, wrap=False)
    p.add_argument("prompts", metavar="PROMPTS", help="prompts table: .csv (UTF-8, header row), "
                                                      ".tsv, .parquet, .jsonl, .json or .xlsx")
    p.add_argument("--version", action="version", version=f"videobatch {__version__}")
    add_provider(p, default="local")
    add_run(p)
    g = add_results(p, default_out="PROMPTS with .results.csv", title="checkpoint and results")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (default: PROMPTS with .checkpoint.parquet)")
    g.add_argument("--no-checkpoint", action="store_true",
                   help="keep no checkpoint (a crash loses the run's progress)")
    g.add_argument("--force", action="store_true",
                   help="use a checkpoint made from different rows: unchanged finished rows are "
                        "kept, the rest run")
    add_delivery(p)
    add_output(p)
    add_table(p)

    g = p.add_argument_group("defaults for empty cells")
    g.add_argument("--model", help="the provider's model (default: its catalogue's; see `models`)")
    g.add_argument("--duration", help="seconds (what the model takes: see `models`)")
    g.add_argument("--aspect-ratio", help="e.g. 16:9, 9:16, 1:1")
    g.add_argument("--resolution", help="e.g. 720p, 1080p (models that take one)")
    g.add_argument("--mode", help="an option of Kling's (and the local provider's): std or pro")
    g.add_argument("--negative-prompt", metavar="TEXT")
    g.add_argument("-O", "--option", action="append", default=[], metavar="NAME=VALUE",
                   dest="request_option", help="any option of the provider, for every row (repeatable)")
    g.add_argument("--fallback", action="append", metavar="PROVIDER:MODEL",
                   help="where rows go, unpaid, when their provider refuses the account or the "
                        "model (repeatable, tried in order; '-OPTION' after a target leaves that "
                        "option behind; a 'fallback' column wins), e.g. --fallback "
                        "'fal:fal-ai/kling-video/v2.6/pro/text-to-video -mode'")
    return p


def _default_path(prompts: str, suffix: str) -> Path:
    p = Path(prompts)
    return p.with_name(p.stem + suffix)


def _problems(args: argparse.Namespace, checkpoint: Path | None, out: Path) -> list[str]:
    """Everything wrong with the command line that can be known before paying, all at once."""
    problems = check_numbers(args)
    out_label = f"--out {out}" if args.out else f"results {out} (next to PROMPTS)"
    bad_format = check_results_format(out, out_label)
    if bad_format:
        problems.append(bad_format)
    places = [Place(out, out_label, "pass --out PATH in a writable folder")]
    if checkpoint is not None:
        places.append(Place(checkpoint, f"--checkpoint {checkpoint}" if args.checkpoint
                            else f"checkpoint {checkpoint} (next to PROMPTS)",
                            "pass --checkpoint PATH in a writable folder (or --no-checkpoint)"))
    if args.download:
        places.append(Place(Path(args.download), f"--download {args.download}",
                            "choose a writable DIR", is_folder=True))
    if args.report:
        places.append(Place(Path(args.report), f"--report {args.report}",
                            "choose a writable PATH"))
    return problems + check_places(places)


def run_main(argv: Sequence[str]) -> int:
    """The main command: one paid request per row of PROMPTS (see ``--help``)."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    log_to_stderr(args.verbose)
    checkpoint = None if args.no_checkpoint else (
        Path(args.checkpoint) if args.checkpoint else _default_path(args.prompts, ".checkpoint.parquet"))
    out = Path(args.out) if args.out else _default_path(args.prompts, ".results.csv")
    options = provider_options(args, parser)
    scoped = scoped_options(args, parser)
    problems = _problems(args, checkpoint, out)
    if problems:
        return refuse(problems)
    # The rows are built with the cycle collector paused, and frozen before the run (see
    # ``_settle_process``): its collections would otherwise walk the growing table again and again.
    with gc_paused():
        prepared = _prepare(args, checkpoint, out, options, scoped)
        if not isinstance(prepared, Batch):
            return prepared
        _settle_process()
    try:
        return finish_run(prepared, out=out, checkpoint=checkpoint, download=args.download,
                          report=args.report)
    finally:
        gc.unfreeze()  # main() may be called in a process that goes on (a test, a script)


def _prepare(args: argparse.Namespace, checkpoint: Path | None, out: Path,
             options: dict[str, Any], scoped: dict[str, dict[str, Any]]) -> Batch | int:
    """The main command's Batch, ready to run; or the exit code when it ends before running
    (refused input, a dry run, the user declining)."""
    try:
        axes = sweep_axes(args)  # the table's rows times every combination of the swept values
        batch = Batch(
            sweep(args.prompts, axes) if axes else args.prompts, args.provider,
            concurrency=args.concurrency, checkpoint=checkpoint,
            force=args.force, progress=not args.quiet, timeout=args.timeout,
            max_attempts=args.max_attempts, observers=[log_event] if args.verbose else [],
            providers=scoped, fallback=args.fallback, max_cost=args.max_cost,
            dry_run=args.dry_run, **delivery_options(args), **request_defaults(args),
            **table_options(args), **reuse_options(args), **options,
        )
    except (InputError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.dry_run:
            print("dry run: the run would stop here, before paying anything", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:  # opening the checkpoint: the folder went read-only, the disk is full
        print(f"error: {describe_os_error(exc, where=checkpoint)} (nothing was submitted)",
              file=sys.stderr)
        return ExitCode.USAGE
    where = str(checkpoint) if checkpoint else None
    if args.dry_run:  # the same batch, its checkpoint read and not written: what the run would do
        print("\n".join(plan_lines(batch, batch.plan(), checkpoint=where)))
        print("dry run: nothing was submitted")
        return ExitCode.OK
    if not args.yes and not confirmed(batch, checkpoint=where):
        return declined(batch)
    return batch


def _settle_process() -> None:
    """Before a command-line run: the rows just built live as long as the run, so the cyclic
    garbage collector is told to stop walking them until it ends (``gc.freeze``: a 200k-row
    table is about a million objects, 0.3 s per full collection); and the text bar takes a thread
    lock, not tqdm's default multiprocessing one (0.2 s to make, and no other process writes here)."""
    gc.freeze()
    if not hasattr(tqdm, "_lock"):
        tqdm.set_lock(threading.RLock())


# Sub-commands, each a ``main(argv) -> exit code`` in its own module (imported when used).
SUBCOMMANDS = {
    "status": "videobatch.cli.status:status_main",
    "retry": "videobatch.cli.commands:retry_main",
    "download": "videobatch.cli.commands:download_main",
    "report": "videobatch.cli.commands:report_main",
    "repair": "videobatch.cli.repair:repair_main",
    "models": "videobatch.cli.models:models_main",
    "serve": "videobatch.service.cli:serve_main",
    "worker": "videobatch.service.cli:worker_main",
}
# Long-running services handle their own signals (a worker hands its requests over on SIGTERM).
_OWN_SIGNALS = {"serve", "worker"}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m videobatch [COMMAND] ...``: the main command, or the sub-command named first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, _, attr = SUBCOMMANDS[argv[0]].partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        if argv[0] in _OWN_SIGNALS:
            code: int = command(argv[1:])
            return code
        return guarded(command, argv[1:])
    return guarded(run_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
