"""What every command line shares, defined once: exit codes, option groups, option parsing.

The main command and each sub-command build their parser from these groups, so a flag means the
same thing (and has the same help) wherever it appears:

    provider    --provider, -P [NAME.]KEY=VALUE, --base-url
    run         --concurrency, --timeout, --max-attempts, --max-cost, --yes, --no-check-images,
                --reuse, --reuse-dir
    table       --sweep NAME=V1,V2, --template (the main command)
    results     --out, --dry-run
    delivery    --download, --download-concurrency, --name, --webhook, --report
    output      -q/--quiet (progress bar), -v/--verbose (log retries and failures)
"""

from __future__ import annotations

import argparse
import enum
import os
import textwrap
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

__all__ = [
    "EXIT_CODES_HELP",
    "FORMATS_TEXT",
    "REQUEST_DEFAULTS",
    "ExitCode",
    "add_delivery",
    "add_name",
    "add_output",
    "add_provider",
    "add_results",
    "add_run",
    "add_table",
    "command_parser",
    "delivery_options",
    "parse_options",
    "provider_options",
    "request_defaults",
    "reuse_options",
    "scoped_options",
    "sweep_axes",
    "table_options",
]


class ExitCode(enum.IntEnum):
    """The exit codes of every command (README, "Command line")."""

    OK = 0  # every row completed (or: the sub-command did all it was asked)
    FAILED = 1  # some rows failed, have an unknown outcome or were left undone
    USAGE = 2  # bad input, usage or configuration, found before the first paid request; or a
    # setup problem that stopped the run (refused credentials, a full disk, a read-only folder)
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: run the same command again to resume


EXIT_CODES_HELP = textwrap.fill(
    "exit codes: 0 all completed, 1 some failed, unknown or left undone, 2 bad input, usage or "
    "setup (e.g. a full disk, a read-only folder), 130 interrupted (Ctrl-C or SIGTERM: run the "
    "same command again to resume).", 88)

FORMATS_TEXT = ".csv, .parquet or .jsonl"  # _results.RESULT_FORMATS, as people read it

# Request fields the main command takes as flags, used for empty cells.
REQUEST_DEFAULTS = ("model", "duration", "aspect_ratio", "resolution", "mode", "negative_prompt")


def command_parser(command: str | None, description: str, epilog: str | None = None, *,
                   wrap: bool = True) -> argparse.ArgumentParser:
    """A parser for ``python -m videobatch [COMMAND]``; ``description`` paragraphs are wrapped."""
    if wrap:
        description = "\n\n".join(textwrap.fill(part, 88) for part in description.split("\n\n"))
    prog = "python -m videobatch" + (f" {command}" if command else "")
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


# ---------------------------------------------------------------------- option groups
def add_provider(p: argparse.ArgumentParser, *, default: str | None) -> None:
    from ..providers import available

    g = p.add_argument_group("provider")
    g.add_argument("--provider", default=default, metavar="NAME",
                   help=f"video provider: {', '.join(available())} "
                        + ("(default: local, offline)" if default == "local"
                           else "(default: the checkpoint's)"))
    g.add_argument("-P", "--provider-option", action="append", default=[], metavar="[NAME.]KEY=VALUE",
                   help="provider setting, repeatable (local: latency, jitter, failure_rate, "
                        "max_parallel, root; kling: base_url, max_parallel, max_rps, ...); "
                        "NAME.KEY=VALUE sets an option of another provider a mixed table's "
                        "'provider' column names (-P fal.max_parallel=4); not stored in the "
                        "checkpoint")
    g.add_argument("--base-url", metavar="URL", help="provider API address (same as -P base_url=URL)")


def add_run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--concurrency", type=int, metavar="N",
                   help="tasks in flight at once (default and maximum: the provider's limit)")
    g.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="give up on a row this long after the provider accepted it (default 3600)")
    g.add_argument("--max-attempts", type=int, default=5, metavar="N",
                   help="submits per row that may fail transiently before the row fails (default 5)")
    g.add_argument("--max-cost", type=float, metavar="USD",
                   help="budget of the checkpoint, in USD by the catalogue prices: what it has "
                        "spent, counting every request that may have been paid, plus what is "
                        "being sent, never exceeds it; rows that would exceed it stay pending "
                        "(error_kind budget; run again with a higher --max-cost), so do rows "
                        "without a price")
    g.add_argument("-y", "--yes", action="store_true",
                   help="do not ask before paying (asked only in a terminal, when the estimate "
                        "is above $VIDEOBATCH_CONFIRM_ABOVE)")
    g.add_argument("--no-check-images", action="store_true",
                   help="do not check image cells before paying (by default every image of a row "
                        "to send must be a file that is an image, or an http(s) URL answering "
                        "with one within 10 s)")
    g.add_argument("--reuse", action="store_true",
                   help="take the clip of a row whose identical request (same provider, model "
                        "and settings) completed in any earlier run, from the result cache, "
                        "instead of paying again; finished rows are remembered there")
    g.add_argument("--reuse-dir", metavar="DIR",
                   help="the result cache's folder (default $VIDEOBATCH_CACHE_DIR, else "
                        "~/.cache/videobatch)")


def add_table(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("table")
    g.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                   help="run every row once per value of NAME (repeatable: the product of all; "
                        "e.g. --sweep model=kling-v2-6,kling-v3 --sweep duration=5,10); each "
                        "variant's id is the row's id (else a hash of its cells) plus its values, "
                        "so the same sweep run again resumes; a column PROMPTS already has cannot "
                        "be swept")
    g.add_argument("--template", action="store_true",
                   help="fill {column} placeholders in each prompt from its row, e.g. "
                        "'{subject} at {time_of_day}' ({{ and }} are literal braces)")


def add_results(p: argparse.ArgumentParser, *, default_out: str | None,
                title: str = "results") -> argparse._ArgumentGroup:
    g = p.add_argument_group(title)
    g.add_argument("--out", metavar="PATH",
                   help=f"results table, {FORMATS_TEXT}" + (f" (default: {default_out})"
                                                           if default_out else ""))
    g.add_argument("--dry-run", action="store_true",
                   help="validate and show what would be submitted; call no provider")
    return g


def add_name(g: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    g.add_argument("--name", metavar="TEMPLATE",
                   help="file name of each clip from row columns, e.g. '{campaign}/{id}' "
                        "(default '{key}'; also {row}, {index}); the extension is added")


def add_delivery(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("delivery")
    g.add_argument("--download", metavar="DIR",
                   help="save each finished clip to DIR as soon as it completes (verified, with a "
                        "poster frame), and write DIR/report.html at the end")
    g.add_argument("--download-concurrency", type=int, default=4, metavar="N",
                   help="downloads at once, separate from generation (default 4)")
    add_name(g)
    g.add_argument("--webhook", metavar="URL",
                   help="POST each row's outcome to URL (a webhook_url column overrides it per row); "
                        "signed with HMAC-SHA256 when VIDEOBATCH_WEBHOOK_SECRET is set")
    g.add_argument("--report", metavar="PATH", help="write an HTML contact sheet of the results")


def add_output(p: argparse.ArgumentParser, *, quiet: bool = True) -> None:
    g = p.add_argument_group("output")
    if quiet:
        g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="log retries and failures, with tracebacks")


# ---------------------------------------------------------------------- reading them
def parse_options(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``-P KEY=VALUE`` items as provider options (``-`` in keys read as ``_``)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"-P expects KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = value
    return options


def provider_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The run's provider's options from ``-P KEY=VALUE`` and ``--base-url``."""
    options = {k: v for k, v in parse_options(args.provider_option, parser).items()
               if _scope(k, parser) is None}
    if args.base_url:
        options["base_url"] = args.base_url
    return options


def scoped_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """Options of the other providers of a mixed table, from ``-P NAME.KEY=VALUE``
    (``-P fal.max_parallel=4``), by provider name."""
    scoped: dict[str, dict[str, Any]] = {}
    for key, value in parse_options(args.provider_option, parser).items():
        name = _scope(key, parser)
        if name is not None:
            scoped.setdefault(name, {})[key.partition(".")[2]] = value
    return scoped


def _scope(key: str, parser: argparse.ArgumentParser) -> str | None:
    """The provider a ``-P`` key is scoped to (``fal.base_url`` -> ``fal``), or None."""
    name, dot, rest = key.partition(".")
    if not dot:
        return None
    from ..providers import available

    if name not in available() or not rest:
        parser.error(f"-P {key}=...: {name!r} is not a provider (scoped options are "
                     f"NAME.KEY=VALUE with NAME one of {', '.join(available())})")
    return name


def request_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Run-wide defaults for empty cells from the flags that name a request field, and ``-O``."""
    defaults = {n: getattr(args, n) for n in REQUEST_DEFAULTS if getattr(args, n, None) is not None}
    for item in getattr(args, "request_option", None) or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-O expects NAME=VALUE, got {item!r}")
        defaults[key.strip().replace("-", "_")] = value
    return defaults


def sweep_axes(args: argparse.Namespace) -> dict[str, list[str]]:
    """The ``--sweep NAME=V1,V2`` items as NAME -> values (ConfigError for a malformed one)."""
    axes: dict[str, list[str]] = {}
    for item in getattr(args, "sweep", None) or ():
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        listed = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not listed:
            raise ConfigError(f"--sweep expects NAME=VALUE,VALUE,..., got {item!r}")
        if name in axes:
            raise ConfigError(f"--sweep {name} is given twice: list all its values in one, "
                              f"--sweep {name}={','.join(axes[name] + listed)}")
        axes[name] = listed
    return axes


def table_options(args: argparse.Namespace) -> dict[str, Any]:
    """Batch keywords from the table and image flags."""
    options: dict[str, Any] = {"check_images": not args.no_check_images}
    if getattr(args, "template", False):
        options["template"] = True
    return options


def delivery_options(args: argparse.Namespace) -> dict[str, Any]:
    """Batch keywords from the delivery flags (the webhook secret from the environment only, never
    a flag: flags show in ``ps``)."""
    return {"download": args.download, "download_name": args.name, "webhook": args.webhook,
            "download_concurrency": args.download_concurrency,
            "webhook_secret": os.environ.get("VIDEOBATCH_WEBHOOK_SECRET") or None}


def reuse_options(args: argparse.Namespace) -> dict[str, Any]:
    """Batch keywords from ``--reuse`` and ``--reuse-dir`` (a folder alone means reuse too)."""
    return {"reuse": bool(args.reuse or args.reuse_dir), "reuse_dir": args.reuse_dir}
