"""Checking a prompts table before anything is paid: the run's defaults, the table as a whole
(rows, a prompt column, repeated or reserved names), every row with pydantic and the ids, each
problem located by row and column, all of them reported at once.

Rows usually differ only in their prompt: each distinct combination of their other cells is
validated once, and the rows of a valid combination get copies with their own prompt.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from pydantic import ValidationError

from ._input_keys import ID_COLUMN, prompt_template
from ._input_read import join_numbers
from ._input_table import Table, column_names, column_values, utf8_only
from ._jobs import RESULT_COLUMNS
from ._row_requests import RowRequests, Shared
from .errors import ConfigError, Problem
from .request import REQUEST_FIELDS, RequestRules, VideoRequest, is_unicode, request_errors

__all__ = ["check_defaults", "is_blank", "keys_from_ids", "request_columns", "table_problems", "validate_rows",
           "warn_near_misses"]

# What to show as "allowed" when pydantic's own error carries no hint.
_HINTS = {
    "prompt": "text",
    "negative_prompt": "text",
    "model": "a model name",
    "duration": "5 or 10",
    "cfg_scale": "a number from 0 to 1",
    "image": "an image URL or base64 text",
    "end_image": "an image URL or base64 text",
    "image_tail": "an image URL or base64 text",
    "camera_control": 'a JSON object such as {"type": "simple", "config": {"zoom": 5}}',
}
# Columns the first release read as request fields: still read (as end_image, and as options).
_EARLIER = ("image_tail", "mode", "cfg_scale", "camera_control")


def request_columns(rules: RequestRules | None) -> tuple[str, ...]:
    """Every column name a row's request is read from: the shared fields, the provider's options
    (without a provider: the first release's), and ``image_tail`` (``end_image`` spelled as before)."""
    options = rules.all_option_names if rules is not None else _EARLIER[1:]
    names = [*REQUEST_FIELDS, *options, "image_tail"]
    return tuple(dict.fromkeys(names))


def _context(rules: RequestRules | None) -> dict[str, Any] | None:
    return None if rules is None else {"rules": rules}


def check_defaults(defaults: Mapping[str, Any] | None, rules: RequestRules | None = None) -> dict[str, Any]:
    """Run-wide defaults with blanks dropped; ConfigError for unknown keys or unusable values."""
    if not defaults:
        return {}
    known = request_columns(rules)
    unknown = [key for key in defaults if key not in known]
    if unknown:
        hints = [_did_you_mean(str(key), known) for key in unknown]
        raise ConfigError(
            f"defaults: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}{''.join(hints)}; "
            f"allowed keys: {', '.join(known)}"
        )
    cleaned = {key: _cell(value) for key, value in defaults.items() if not is_blank(value)}
    try:
        VideoRequest.model_validate({"prompt": "check", **cleaned}, context=_context(rules))
    except ValidationError as exc:
        # A field error is wrong whatever the rows say; a model-level error (e.g. duration 7 for
        # the default model) depends on each row's values and is reported per row instead.
        wrong = [p for p in _problems_from(exc, row=None, field_errors_only=True)
                 if p.column in cleaned]
        wrong += [p for p in _problems_from(exc, row=None)  # a model nobody offers: no row can help
                  if p.column == "model" and "model" in cleaned and p not in wrong]
        if wrong:
            raise ConfigError("defaults: " + "; ".join(
                f"{p.column}: {p.message}" + (f" (allowed: {p.allowed})" if p.allowed else "")
                for p in wrong
            )) from None
    return cleaned

def table_problems(frame: Table, defaults: Mapping[str, Any],
                   rules: RequestRules | None = None) -> tuple[list[Problem], bool]:
    """Problems with the table as a whole, and whether rows cannot be checked because of them."""
    columns = column_names(frame)
    problems: list[Problem] = []
    blocking = False
    if len(frame) == 0:
        problems.append(Problem(None, None, "no rows: the table has no data rows; add one row "
                                            "per video"))
        blocking = True
        if not columns:
            return problems, blocking
    needs_prompt = "prompt" not in defaults and "image" not in columns
    if "prompt" not in columns and needs_prompt:
        problems.append(_missing_prompt(columns))
        blocking = True
    counts = Counter(columns)
    for name, count in counts.items():
        if count > 1 and (name in request_columns(rules) or name == ID_COLUMN):
            problems.append(Problem(None, str(name), f"appears {count} times; keep one column "
                                                     "with this name"))
            blocking = True
    problems += [
        Problem(None, str(name), "this name is reserved for results; rename the column "
                                 f"(e.g. 'input_{name}')")
        for name in counts
        if name in RESULT_COLUMNS
    ]
    return problems, blocking


def _missing_prompt(columns: list[Any]) -> Problem:
    names = [str(c) for c in columns]
    shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
    message = f"there is no 'prompt' column (columns found: {shown or 'none'})"
    close = [n for n in names if n.strip().lower() in ("prompt", "prompts")]
    close += [n for n in difflib.get_close_matches("prompt", names, n=2) if n not in close]
    if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
        sep = "';'" if ";" in names[0] else "a tab"
        message += f"; the header seems to be separated by {sep}: save the file with commas"
    elif close:
        message += f"; did you mean {close[0]!r}? Column names are matched exactly"
    return Problem(None, "prompt", message, allowed="a column named exactly 'prompt'")


def validate_rows(
    frame: Table, defaults: Mapping[str, Any], rules: RequestRules | None = None
) -> tuple[RowRequests, list[Problem]]:
    """One VideoRequest per valid row (cell, else default, else field default; with the rows'
    request JSON: ``RowRequests.texts``) and every row problem.

    Rows usually differ only in their prompt: pydantic checks each distinct combination of the
    other cells once, with a stand-in prompt (the checks look at the prompt only to see whether it
    is empty), and every row of a valid combination gets its request with its own prompt, built
    when asked for (``RowRequests``). A row whose combination fails, whose prompt is not text, or
    with a camera_control is validated on its own, so its problems are exactly those pydantic
    reports for it.
    """
    names = column_names(frame)
    fields = [name for name in request_columns(rules) if name in names]
    context = _context(rules)
    columns = [_cells(column_values(frame, name)) for name in fields]
    prompts = columns[fields.index("prompt")] if "prompt" in fields else [_EMPTY] * len(frame)
    default_prompt = defaults.get("prompt", _EMPTY)
    if type(default_prompt) is str:  # stripped like a cell (the validator strips it too)
        default_prompt = default_prompt.strip() or _EMPTY
    # What decides a row's combination: each cell, tagged so that 1, 1.0, True and 0.0, -0.0 differ.
    tagged = [_tagged(name, column) for name, column in zip(fields, columns, strict=True)
              if name != "prompt"]
    combos = zip(*tagged, strict=True) if tagged else iter([()] * len(frame))
    alone = {row for column in tagged if _SLOW in column  # rows validated on their own
             for row, value in enumerate(column, 1) if value is _SLOW}
    # Pydantic sees no prompt of a checked combination: one with a lone surrogate (a DataFrame may
    # hold one; Arrow text is UTF-8) is validated on its own, and refused there.
    if not utf8_only(frame) and not is_unicode("".join([p for p in prompts if type(p) is str])):
        alone |= {row for row, p in enumerate(prompts, 1) if type(p) is str and not is_unicode(p)}
    provider_at = fields.index("provider") if "provider" in fields else None
    # A mixed table: an option default applies to rows whose provider has it.
    by_provider = _defaults_by_provider(defaults, rules) if provider_at is not None else {}

    def row_defaults(cells: tuple[Any, ...]) -> Mapping[str, Any]:
        return by_provider.get(cells[provider_at], defaults) if by_provider else defaults  # type: ignore[index]

    # Each combination checked (by its cells, and apart for rows with and without a prompt): its
    # number and parts, or None (refused: its rows are validated on their own).
    checked: dict[Any, tuple[int, dict[str, Any]] | None] = {}
    checked_no_prompt: dict[Any, tuple[int, dict[str, Any]] | None] = {}
    shared: list[Shared] = []  # RowRequests' parts, filled in row order
    first: list[int] = []
    templates: list[tuple[str, str] | None] = []
    combo_of: list[int] = []
    items: list[Any] = []
    problems: list[Problem] = []
    add_combo, add_item = combo_of.append, items.append
    for row, (prompt, combo) in enumerate(zip(prompts, combos, strict=True), 1):
        if prompt is _EMPTY:
            prompt = default_prompt
        entry = None
        if (prompt is _EMPTY or type(prompt) is str) and row not in alone:
            seen = checked_no_prompt if prompt is _EMPTY else checked
            entry = seen.get(combo, _UNSEEN)
            if entry is _UNSEEN:
                cells = tuple(column[row - 1] for column in columns)
                found = _check_combination(fields, cells, row_defaults(cells), prompt is _EMPTY, context)
                if found is not None:
                    shared.append(found[0])
                    first.append(len(items))
                    templates.append(found[1])
                entry = seen[combo] = None if found is None else (len(shared) - 1, found[0][0])
        if entry is not None:
            # The combination's request with this row's prompt (built when asked for).
            number, values = entry
            add_combo(number)
            add_item(values["prompt"] if prompt is _EMPTY else prompt)
            continue
        cells = tuple(column[row - 1] for column in columns)
        row_given = row_defaults(cells)
        given = {name: v for name, v in zip(fields, cells, strict=True) if v is not _EMPTY}
        try:
            request = VideoRequest.model_validate({**row_given, **given}, context=context)
        except ValidationError as exc:
            problems += _problems_from(exc, row, from_defaults=row_given.keys() - given.keys())
        else:
            add_combo(-1)
            add_item(request)
    return RowRequests(shared, first, combo_of, items, templates), problems


def _defaults_by_provider(defaults: Mapping[str, Any], rules: RequestRules | None) -> dict[Any, Mapping[str, Any]]:
    """For each other provider of a mixed table, the run's defaults without the options it lacks."""
    if rules is None or not rules.others or not defaults:
        return {}
    options = set(rules.all_option_names)
    return {name: {k: v for k, v in defaults.items() if k not in options or k in other.option_names}
            for name, other in rules.others.items()}


_SLOW: Any = object()  # a cell that makes its row be validated on its own
_UNSEEN: Any = object()  # a combination not checked yet
_SCALARS = frozenset({int, float, bool})


def _tagged(name: str, column: list[Any]) -> list[Any]:
    if name == "camera_control":  # a nested value: each row on its own
        return [_EMPTY if v is _EMPTY else _SLOW for v in column]
    return [v if type(v) is str or v is _EMPTY
            else ((type(v), v) if v else (type(v), repr(v))) if type(v) in _SCALARS  # 0.0 != -0.0
            else _SLOW
            for v in column]


# A validated combination: its request but the prompt (``_row_requests.Shared``), and its JSON
# before and after the prompt (None: spell each row's JSON in full).
_Combination = tuple[Shared, tuple[str, str] | None]


def _check_combination(
    fields: list[str], cells: tuple[Any, ...], defaults: Mapping[str, Any], no_prompt: bool,
    context: dict[str, Any] | None,
) -> _Combination | None:
    """pydantic's request for these cells with a stand-in prompt ("x", or none), split into the
    parts each of its rows copies; None if pydantic refuses the combination."""
    given = {name: v for name, v in zip(fields, cells, strict=True)
             if v is not _EMPTY and name != "prompt"}
    values = {**defaults, **given}
    if no_prompt:
        values.pop("prompt", None)
    else:
        values["prompt"] = "x"
    try:
        request = VideoRequest.model_validate(values, context=context)
    except ValidationError:
        return None
    if request.image is not None or request.end_image is not None:
        return None  # the image decides what is checked (text or image input): each row on its own
    shared = object.__new__(VideoRequest).__dict__  # a key-sharing dict, filled in field order
    for name, value in request.__dict__.items():
        shared[name] = value
    return ((shared, request.__pydantic_fields_set__, request.__pydantic_extra__,
             request.__pydantic_private__), prompt_template(request))


def _problems_from(
    exc: ValidationError,
    row: int | None,
    from_defaults: Iterable[str] = (),
    *,
    field_errors_only: bool = False,
) -> list[Problem]:
    """Pydantic errors as Problems: column = field (or ctx['field']), hint = ctx['allowed']."""
    defaulted = set(from_defaults)
    problems = []
    for error in request_errors(exc):  # a row's several cross-field problems come one by one
        ctx = error.get("ctx") or {}
        loc = error["loc"]
        if field_errors_only and not loc:
            continue
        column = str(loc[0]) if loc else ctx.get("field")
        message = error["msg"]
        if loc and "allowed" not in ctx:
            message += f", got {_short(error['input'])}"
        if column in defaulted:
            message += " (the value comes from defaults)"
        allowed = ctx.get("allowed", _HINTS.get(column or ""))
        problems.append(Problem(row, column, message, None if allowed is None else str(allowed)))
    return problems


def keys_from_ids(ids: list[Any]) -> tuple[list[str], list[Problem]]:
    """Row keys from the id column, with a problem per empty id and per id used more than once."""
    keys = [v.strip() if isinstance(v, str) else _id_text(v) for v in ids]
    problems = [
        Problem(row, ID_COLUMN, "id is empty",
                allowed="a unique text per row (or no id column at all, for automatic keys)")
        for row, key in enumerate(keys, 1)
        if not key
    ]
    repeated = {key for key, count in Counter(keys).items() if count > 1 and key}
    rows_by_key: dict[str, list[int]] = {key: [] for key in repeated}
    if repeated:
        for row, key in enumerate(keys, 1):
            if key in repeated:
                rows_by_key[key].append(row)
    problems += [
        Problem(rows[1], ID_COLUMN, f"id {key!r} is used by rows {join_numbers(rows)}; ids must be "
                                    "unique", allowed="a unique text per row")
        for key, rows in rows_by_key.items()
    ]
    return keys, problems


def warn_near_misses(frame: Table, source: str, rules: RequestRules | None = None) -> None:
    """Warn about a column that looks like a request field but is not one (e.g. 'Duration')."""
    wanted = {_normalize(name): name for name in (*request_columns(rules), ID_COLUMN)}
    names = column_names(frame)
    for column in names:
        if not isinstance(column, str) or column in wanted.values():
            continue
        meant = wanted.get(_normalize(column))
        if meant is not None and meant not in names:
            warnings.warn(
                f"{source}: column {column!r} is not used as {meant!r} (names are matched "
                f"exactly) and is only carried through; rename it to {meant!r} if you meant it",
                UserWarning,
                stacklevel=6,  # load_prompts's caller (through _validate, _load and gc_paused)
            )


# ---------------------------------------------------------------------------------------- helpers


_EMPTY: Any = object()  # an empty cell: the default applies


def _cell(value: Any) -> Any:
    """A cell as a request value: text stripped; ``_EMPTY`` for an empty cell."""
    if isinstance(value, str):
        return value.strip() or _EMPTY
    if value is None or value is pd.NA or value is pd.NaT:
        return _EMPTY
    if isinstance(value, float) and value != value:  # NaN
        return _EMPTY
    return value


def _cells(values: list[Any]) -> list[Any]:
    """``_cell`` of each value; text and floats (most cells) handled inline."""
    return [(v.strip() or _EMPTY) if type(v) is str
            else (v if v == v else _EMPTY) if type(v) is float
            else _EMPTY if v is None
            else _cell(v)
            for v in values]


def is_blank(value: Any) -> bool:
    """An empty cell: None, NaN, pd.NA/NaT, or text that is empty or only whitespace."""
    return _cell(value) is _EMPTY


def _id_text(value: Any) -> str:
    """An id as key text ('' when empty): 7 and 7.0 (an int column with blanks) both give '7'."""
    if is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _normalize(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"

