"""Checks made before the first paid request, so bad settings cost nothing (design invariant 4).

Numbers in range, a results format we can write, and every folder the run will write to — the
checkpoint's, the results', the downloads', the report's — tested honestly: a probe file is created
and removed there. Permissions cannot be trusted for this (root ignores them; a read-only mount or an
immutable folder refuses root too), so the probe is the only true test.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .._results import RESULT_FORMATS
from ._options import FORMATS_TEXT, ExitCode

__all__ = ["Place", "check_numbers", "check_places", "check_results_format", "os_reason",
           "refuse"]

_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}


def os_reason(exc: OSError) -> str:
    """What an ``OSError`` from the machine means, in a few words."""
    text = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return f"the disk is full ({text})"
    if exc.errno == errno.EROFS:
        return f"read-only ({text})"
    if exc.errno in _READ_ONLY:
        return f"read-only or not permitted ({text})"
    return text


@dataclass(frozen=True)
class Place:
    """Somewhere the command will write: a file (its folder is probed) or a folder."""

    path: Path
    label: str  # how messages name it, e.g. "--out r.csv" or "checkpoint p.checkpoint.parquet"
    advice: str  # what to do instead, e.g. "pass --out PATH in a writable folder"
    is_folder: bool = False


def _probe(folder: Path) -> tuple[Path, OSError | None]:
    """Create and remove a file in ``folder`` — or, if it does not exist yet, in the nearest folder
    above it (where it would be created). Returns the folder probed and what went wrong, if anything."""
    target = folder
    while not target.exists() and target.parent != target:
        target = target.parent
    if not target.is_dir():
        return target, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
    try:
        fd, name = tempfile.mkstemp(prefix=".videobatch-probe-", dir=target)
    except OSError as exc:
        return target, exc
    os.close(fd)
    try:
        os.unlink(name)
    except OSError as exc:
        return target, exc
    return target, None


def check_places(places: Iterable[Place]) -> list[str]:
    """One problem line per place that cannot be written (each folder probed once)."""
    problems = []
    seen: dict[Path, tuple[Path, OSError | None]] = {}
    for place in places:
        folder = (place.path if place.is_folder else place.path.parent).absolute()
        if folder not in seen:
            seen[folder] = _probe(folder)
        probed, error = seen[folder]
        if error is not None:
            problems.append(f"{place.label}: cannot write in {probed}: {os_reason(error)}; "
                            f"{place.advice}")
    return problems


def check_results_format(path: Path, label: str) -> str | None:
    if path.suffix.lower() in RESULT_FORMATS:
        return None
    suffix = path.suffix or "no extension"
    return f"{label}: unknown results format {suffix!r}; use {FORMATS_TEXT}"


def check_numbers(args: argparse.Namespace) -> list[str]:
    """The run settings among ``args`` that no run could use."""
    problems = []
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not timeout > 0:  # NaN too
        problems.append(f"--timeout must be more than 0 seconds, got {timeout:g}")
    for flag in ("max_attempts", "concurrency", "download_concurrency"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            problems.append(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    budget = getattr(args, "max_cost", None)
    if budget is not None and not 0 <= budget < float("inf"):  # NaN too
        problems.append(f"--max-cost must be a number of USD, 0 or more, got {budget:g}")
    return problems


def refuse(problems: list[str], nothing: str = "nothing was submitted") -> ExitCode:
    """Print ``problems`` (one line each) and return exit code 2 (``nothing`` was done)."""
    if len(problems) == 1:
        print(f"error: {problems[0]} ({nothing})", file=sys.stderr)
    else:
        print(f"error: {len(problems)} problems, {nothing}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    return ExitCode.USAGE
