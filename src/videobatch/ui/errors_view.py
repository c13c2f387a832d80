"""How a videobatch error looks in a notebook: what went wrong and what to do, as a short list
(every problem of every row, each row named by its ``id`` or row number), without the library's
traceback, which says nothing to the person who fed it a table.

IPython shows ``VideobatchError._render_traceback_()`` in place of the traceback, and
``_repr_html_()`` when the error object itself is displayed; both come here. An error that means
a bug in videobatch (``IllegalTransition``) keeps its full traceback: that one is for us.
"""

from __future__ import annotations

import html
import traceback
from typing import Any

from ..errors import IllegalTransition, InputError, Problem, ProviderError, VideobatchError, show_in_notebook_with

__all__ = ["MAX_LINES", "error_html", "error_lines", "traceback_lines"]

MAX_LINES = 200  # problems listed before "... and N more" (``.problems`` holds every one)
_RED, _BOLD, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"


def _problem_text(problem: Problem) -> str:
    """A problem without its row: ``column 'duration': 30 is too long (allowed: 5, 10)``."""
    text = (f"column {problem.column!r}: " if problem.column else "") + problem.message
    return text + (f" (allowed: {problem.allowed})" if problem.allowed else "")


def _input_lines(error: InputError) -> list[str]:
    by_row: dict[int | None, list[Problem]] = {}
    for problem in error.problems:
        by_row.setdefault(problem.row, []).append(problem)
    n, rows = len(error.problems), sum(1 for row in by_row if row is not None)
    head = (f"{error.source}: {n} problem{'s' if n != 1 else ''}"
            + (f" in {rows} row{'s' if rows != 1 else ''}" if rows else "")
            + ", nothing was submitted")
    body: list[str] = []
    for row, problems in by_row.items():
        first = problems[0]
        where = "the table" if row is None else (
            f"row {row}" + (f" (line {first.line})" if first.line else ""))
        if len(problems) == 1:
            body.append(f"  {where}: {_problem_text(first)}")
        else:
            body.append(f"  {where}:")
            body += [f"    - {_problem_text(p)}" for p in problems]
    if len(body) > MAX_LINES:
        left = len(body) - MAX_LINES
        body = [*body[:MAX_LINES], f"  ... and {left} more lines (.problems lists every problem)"]
    return [head, *body, "Fix these rows (or pass run-wide defaults) and run again."]


def _row_name(error: ProviderError) -> str | None:
    """The row a provider error is about, as people know it: its id, else its row number, read
    from the results the error carries when it stopped a run."""
    frame: Any = error.results
    key = error.row_key
    if key is None or frame is None or "key" not in getattr(frame, "columns", ()):
        return None
    matches = [i for i, k in enumerate(frame["key"]) if k == key]
    if not matches:
        return None
    if "id" in frame.columns:
        return f"row {frame['id'].iloc[matches[0]]!r}"
    return f"row {matches[0] + 1}"


def error_lines(error: BaseException) -> list[str]:
    """What went wrong and what to do, as plain lines: first ``Kind: message``, then the list."""
    name = type(error).__name__
    if isinstance(error, InputError):
        head, *rest = _input_lines(error)
        return [f"{name}: {head}", *rest]
    text = str(error)
    if isinstance(error, ProviderError):
        label = _row_name(error)
        if label is not None and error.row_key is not None:
            text = text.replace(f"row {error.row_key!r}", label)
    head, *rest = text.splitlines() or [""]
    lines = [f"{name}: {head}", *rest]
    if isinstance(error, ProviderError) and error.results is not None:
        lines.append("The results so far are in .results (a DataFrame); the checkpoint, if any, "
                     "keeps them too.")
    cause = error.__cause__
    if cause is not None:
        lines.append(f"(because of {type(cause).__name__}: {cause})")
    return lines


def traceback_lines(error: VideobatchError) -> list[str]:
    """What IPython shows instead of the traceback: the lines, the kind in red."""
    if isinstance(error, IllegalTransition):  # a bug in videobatch: the traceback is the point
        return "".join(traceback.format_exception(error)).splitlines()
    head, *rest = error_lines(error)
    name, _, message = head.partition(": ")
    return [f"{_RED}{_BOLD}{name}{_RESET}: {message}", *rest]


def error_html(error: VideobatchError) -> str:
    head, *rest = error_lines(error)
    name, _, message = head.partition(": ")
    items = ""
    for line in rest:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("- "):  # one of several problems of the row above
            items += f"<li style='margin-left:1.5em;list-style:circle'>{html.escape(stripped[2:])}</li>"
        else:
            items += f"<li>{html.escape(stripped)}</li>"
    return (f'<div class="vb-error" style="font-family:sans-serif">'
            f'<b style="color:#c62828">{html.escape(name)}</b>: {html.escape(message)}'
            f"{f'<ul>{items}</ul>' if items else ''}</div>")


show_in_notebook_with(traceback_lines, error_html)  # the errors' own hooks use this view
