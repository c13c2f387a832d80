"""Prompt templates: a ``prompt`` such as ``"{subject} at {time_of_day}, {style}"`` filled from the
row's own columns before the rows are checked (opt-in: ``template=True``, ``--template``).

A placeholder is a column name in braces, matched exactly (``{time of day}`` names that column);
``{{`` and ``}}`` are literal braces. Nothing else is read: no ``{name!r}``, ``{name:>5}``,
attribute or index lookups. A row's empty cell falls back to the run's default of that name;
a missing column, an empty value or a bad template is an input problem of that row (column
``prompt``), reported together with every other problem of the table.

The filled text becomes the row's ``prompt`` (so its key, checkpoint and results are the filled
text) and the template is kept in a ``prompt_template`` column; a table that already has one is
filled from it, so a results table passed in again is filled the same way.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .errors import Problem

__all__ = ["TEMPLATE_COLUMN", "fill_templates", "parse_template"]

TEMPLATE_COLUMN = "prompt_template"
_BRACES = "use {{ and }} for literal braces"
# A template as parts: literal text, then the column it names (None after the last literal).
Parts = list[tuple[str, str | None]]


def parse_template(text: str) -> tuple[Parts, str | None]:
    """The parts of ``text``, or ([], why it is not a template)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        reason = str(exc).replace("format string", "template").replace("format spec", "template")
        return [], f"the prompt template is malformed ({reason}); {_BRACES}"
    parts: Parts = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        if not name.strip():
            return [], f"the prompt template has an empty {{}}: put a column name in it, or {_BRACES}"
        if spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return [], (f"the prompt template's {{{shown}}} is not a plain column name: write "
                        f"{{{name}}} (formats are not supported), or {_BRACES}")
        parts.append((literal, name))
    return parts, None


def fill_templates(frame: pd.DataFrame, defaults: Mapping[str, Any]) -> tuple[pd.DataFrame, list[Problem]]:
    """``frame`` with each row's prompt template filled in (a copy; ``frame`` itself when no row
    holds braces), and a problem per row whose template cannot be filled (its prompt is left as
    the template text, so its other problems are still found)."""
    source = TEMPLATE_COLUMN if TEMPLATE_COLUMN in frame.columns else "prompt"
    default = defaults.get("prompt")
    default = default if isinstance(default, str) and default.strip() else None
    if source in frame.columns:
        templates = [v if isinstance(v, str) and v.strip() else default for v in frame[source].tolist()]
    elif default is not None:
        templates = [default] * len(frame)
    else:
        return frame, []
    if not any(t is not None and ("{" in t or "}" in t) for t in templates):
        return frame, []
    names = [str(c) for c in frame.columns]
    cells: dict[str, list[Any]] = {}
    parsed: dict[str, tuple[Parts, str | None]] = {}
    filled: list[Any] = (list(templates) if source == TEMPLATE_COLUMN
                         else frame["prompt"].tolist() if "prompt" in frame.columns else [None] * len(frame))
    problems: list[Problem] = []
    for index, template in enumerate(templates):
        if template is None or ("{" not in template and "}" not in template):
            continue
        if template not in parsed:
            parsed[template] = parse_template(template)
        parts, error = parsed[template]
        if error is not None:
            problems.append(Problem(index + 1, "prompt", error, allowed="column names in braces"))
            filled[index] = template
            continue
        text, missing = _fill(parts, index, frame, names, cells, defaults)
        if missing:
            problems += [Problem(index + 1, "prompt", message, allowed=_allowed(names))
                         for message in missing]
            filled[index] = template
        else:
            filled[index] = text
    out = frame.copy()
    if TEMPLATE_COLUMN not in out.columns:
        out.insert(list(out.columns).index("prompt") + 1 if "prompt" in out.columns else 0,
                   TEMPLATE_COLUMN, templates)
    out["prompt"] = pd.Series(filled, index=out.index, dtype=object)
    return out, problems


def _fill(parts: Parts, index: int, frame: pd.DataFrame, names: Sequence[str],
          cells: dict[str, list[Any]], defaults: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The row's text, and what stops it being filled (one message per placeholder)."""
    pieces: list[str] = []
    missing: list[str] = []
    for literal, name in parts:
        pieces.append(literal)
        if name is None:
            continue
        if name in frame.columns:
            if name not in cells:
                cells[name] = frame[name].tolist()
            value = _text(cells[name][index])
            if value is None:
                value = _text(defaults.get(name))
            if value is None:
                missing.append(f"the template names {{{name}}}, but this row's {name!r} is empty")
                continue
        else:
            value = _text(defaults.get(name))
            if value is None:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}? names are matched exactly)" if close else ""
                missing.append(f"the template names {{{name}}}, but the table has no column "
                               f"{name!r}{hint}")
                continue
        pieces.append(value)
    return "".join(pieces), missing


def _text(value: Any) -> str | None:
    """A cell as template text: None when empty; a whole float (a number column with blanks)
    without its '.0'."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        if value != value:
            return None
        return str(int(value)) if value.is_integer() else str(value)
    text = str(value).strip()
    return text or None


def _allowed(names: Sequence[str]) -> str:
    shown = ", ".join(f"{{{n}}}" for n in names[:12] if n not in ("prompt", TEMPLATE_COLUMN))
    return (shown + (", ..." if len(names) > 12 else "")) or "column names in braces"
