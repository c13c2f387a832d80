"""Read CSV/DataFrame/list, validate every row with pydantic, assign stable row keys;
report all bad rows at once (by row number, CSV line and column), before anything is submitted.

``load_prompts`` is the only entry point. It returns ``Prompts``: the user's table untouched, one
validated ``VideoRequest`` per row and one stable key per row (the ``id`` column, else a hash of the
resolved request). Anything wrong raises one ``InputError`` listing every problem.

The pieces: ``videobatch._input_read`` (CSV, DataFrame or list into a table),
``videobatch._input_check`` (defaults, the table, every row, the ids) and ``videobatch._input_keys``
(request JSON, hashed keys, fingerprint, and ``Prompts`` itself).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
import pyarrow as pa

from ._gc import gc_paused
from ._input_check import (
    check_defaults,
    is_blank,
    keys_from_ids,
    table_problems,
    validate_rows,
    warn_near_misses,
)
from ._input_formats import read_table
from ._input_keys import ID_COLUMN, Prompts, canonical_json, hashed_keys
from ._input_read import frame_from_list, scan, unsupported_type
from ._input_table import Table, column_names, column_values, to_frame
from ._templates import fill_templates
from .errors import ConfigError, InputError, Problem
from .request import RequestRules

__all__ = ["ID_COLUMN", "Prompts", "canonical_json", "load_prompts"]


@gc_paused()
def load_prompts(
    source: str | os.PathLike[str] | pd.DataFrame | Sequence[str | Mapping[str, Any]] | Prompts,
    *,
    defaults: Mapping[str, Any] | None = None,
    rules: RequestRules | None = None,
    template: bool = False,
) -> Prompts:
    """Read and validate a prompts table.

    ``source``: a CSV path, a pandas DataFrame, a list of prompt texts and/or dicts of columns, or
    an existing ``Prompts`` (returned as is without ``defaults``, re-validated from its frame with
    them). ``defaults``: run-wide values for request fields and options, used where
    a row's cell is empty or its column is missing. ``rules``: the provider's options and model
    catalogue (``Provider.rules()``) every row is checked against; without them only the shared
    fields are. ``template``: fill each prompt's ``{column}`` placeholders from its row first
    (``videobatch._templates``). Files: any format ``videobatch._input_formats`` reads.

    Raises ``InputError`` listing every problem of the table, ``ConfigError`` for bad ``defaults``.
    """
    if isinstance(source, Prompts) and defaults is None and not template:
        return source
    try:
        return _load(source, defaults, rules, template)
    finally:
        # Parsing a big CSV leaves Arrow's pool holding freed memory: hand it back to the OS before
        # the run builds its jobs and checkpoint.
        pa.default_memory_pool().release_unused()


def _load(source: object, defaults: Mapping[str, Any] | None, rules: RequestRules | None,
          template: bool = False) -> Prompts:
    run_defaults = check_defaults(defaults, rules)
    given: object = source  # checked at run time: callers pass anything
    frame: Table
    if isinstance(given, Prompts):
        frame, name, text = given.table, given.source, None
    elif isinstance(given, pd.DataFrame):  # (a sweep's table names its file in attrs)
        frame, name, text = given.copy(), str(given.attrs.get("source") or "DataFrame"), None
    elif isinstance(given, str | os.PathLike):
        name = os.fspath(given)
        frame, text = read_table(name)
    elif isinstance(given, Sequence) and not isinstance(given, bytes | bytearray):
        frame, name, text = frame_from_list(given), "list", None
    else:
        raise InputError([Problem(None, None, unsupported_type(given))], source="input")
    early: list[Problem] = []
    if template:  # before anything reads the prompts: every row then holds its own text
        frame, early = fill_templates(to_frame(frame), run_defaults)
    return _validate(frame, name, run_defaults, rules, csv_text=text, early=early)


def _validate(
    frame: Table,
    source: str,
    defaults: dict[str, Any],
    rules: RequestRules | None,
    csv_text: str | None,
    early: Sequence[Problem] = (),
) -> Prompts:
    """Check the table and every row; raise one InputError with everything found (``early``:
    problems found before, e.g. in the prompt templates)."""
    rules = _with_named_providers(frame, rules)
    problems, blocking = table_problems(frame, defaults, rules)
    problems += early
    if not blocking:
        requests, row_problems = validate_rows(frame, defaults, rules)
        problems += row_problems
        keys: list[str] | None = None
        if ID_COLUMN in column_names(frame):
            keys, id_problems = keys_from_ids(column_values(frame, ID_COLUMN))
            problems += id_problems
    if problems:
        problems = _locate(problems, frame, csv_text)
        raise InputError(problems, source=source)
    warn_near_misses(frame, source, rules)
    texts = requests.texts()  # each row's request JSON: what hashed keys are made of
    prompts = Prompts(frame=frame, requests=requests, keys=hashed_keys(texts) if keys is None else keys,
                      source=source)
    prompts._keep_texts(texts)  # the checkpoint stores the same texts
    return prompts


def _with_named_providers(frame: Table, rules: RequestRules | None) -> RequestRules | None:
    """``rules`` extended with those of every other provider the ``provider`` column names (a
    mixed table); a name no provider answers to is left out, so its rows report it."""
    if rules is None or "provider" not in column_names(frame):
        return rules
    from .providers import rules_of  # the registry: only a mixed table needs it

    others: dict[str, RequestRules] = {}
    for name in dict.fromkeys(column_values(frame, "provider")):
        if is_blank(name):
            continue
        name = str(name).strip()
        if name and name != rules.provider and name not in rules.others and name not in others:
            try:
                others[name] = rules_of(name)
            except ConfigError:
                continue
    return rules.with_others(others) if others else rules


def _locate(problems: list[Problem], frame: Table, csv_text: str | None) -> list[Problem]:
    """Whole-table problems first, then by row; add CSV lines, or DataFrame index labels."""
    problems = sorted(problems, key=lambda p: (p.row is not None, p.row or 0))
    if csv_text is not None:
        rows = scan(csv_text)[1]
        lines = [line for line, _ in rows] if rows and len(rows) == len(frame) else None
        return [
            p if p.row is None or p.line is not None
            else replace(p, line=lines[p.row - 1] if lines else p.row + 1)
            for p in problems
        ]
    if isinstance(frame, pa.Table):
        return problems
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return problems
    labels = index.tolist()
    return [
        p if p.row is None else replace(p, message=f"{p.message} [index {labels[p.row - 1]!r}]")
        for p in problems
    ]
