"""Prompt sweeps: every row of a table once per combination of the values given for some columns
(``videobatch.sweep(rows, model=[...], duration=[5, 10])``, ``--sweep duration=5,10``).

The result is an ordinary table for ``run`` / ``plan``: each source row's variants in a block, in
the order of the values given; a column per swept name holds the variant's value; and an ``id``
column gives each variant a stable key: ``<source key>|<name>=<value>|...`` where the source key
is the row's own ``id`` or, without one, a hash of its cells. Keys never depend on positions, so
running the same sweep again (rows reordered, rows added) maps to the same rows of a checkpoint.

A table that already has a column the sweep names is refused (an ``InputError`` naming it): a
sweep never silently replaces data the table holds. Drop the column first to sweep it instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from ._input_formats import read_table
from ._input_keys import ID_COLUMN, Prompts
from ._input_read import frame_from_list, unsupported_type
from ._input_table import to_frame
from .errors import InputError, Problem

__all__ = ["expand", "sweep"]

_SCALARS = (str, int, float, bool, np.integer, np.floating, np.bool_)


def sweep(prompts: Any, axes: Mapping[str, Any] | None = None, /, **more: Any) -> pd.DataFrame:
    """Every row of ``prompts`` once per combination of the values given for each named column.

    ``prompts``: a prompts file (any format ``load_prompts`` reads), a DataFrame, a list of prompt
    texts and/or dicts, or a ``Prompts``. Name the columns as keywords (``model=[...]``,
    ``duration=[5, 10]``, ``seed=range(3)``, ``style=["noir", "anime"]`` for a prompt template)
    or, for names that are not identifiers, in a mapping first (``{"time of day": [...]}``).
    A single value (not a list) is one value.

    Returns a DataFrame ready for ``run``/``plan``: the source columns, one per swept name, and
    ``id`` (``<source id or hash>|model=...|duration=...``: stable across re-runs). Raises
    ``InputError`` for an unreadable source, a name the table already has, an empty or repeated
    value list.
    """
    frame, source = _frame(prompts)
    expanded = expand(frame, {**(axes or {}), **more}, source=source)
    expanded.attrs["source"] = f"{source} (swept)"
    return expanded


def expand(frame: pd.DataFrame, axes: Mapping[str, Any], *, source: str = "DataFrame") -> pd.DataFrame:
    """``frame``'s rows times the combinations of ``axes`` (see ``sweep``); ``frame`` unchanged."""
    values, problems = _axes(frame, axes)
    if len(frame) == 0:
        problems.append(Problem(None, None, "no rows: the table to sweep has no data rows"))
    if ID_COLUMN in frame.columns:  # a variant's key starts with its row's id
        problems += [Problem(row, ID_COLUMN, "id is empty", allowed="a unique text per row (or no "
                             "id column at all: keys from the rows' cells)")
                     for row, v in enumerate(frame[ID_COLUMN].tolist(), 1) if _blank(v)]
    if problems:
        raise InputError(problems, source=source)
    combos = list(product(*values.values()))
    labels = ["|".join(f"{name}={_label(v)}" for name, v in zip(values, combo, strict=True))
              for combo in combos]
    per_row = len(combos)
    out = frame.iloc[np.repeat(np.arange(len(frame)), per_row)].reset_index(drop=True)
    for position, name in enumerate(values):
        column = [combo[position] for combo in combos] * len(frame)
        out[name] = pd.Series(column, dtype=object if _mixed(column) else None)
    keys = _source_keys(frame)
    ids = [f"{key}|{label}" for key in keys for label in labels]
    if ID_COLUMN in out.columns:
        out[ID_COLUMN] = ids
    else:
        out.insert(0, ID_COLUMN, ids)
    return out


def _frame(prompts: Any) -> tuple[pd.DataFrame, str]:
    if isinstance(prompts, Prompts):
        return prompts.frame, prompts.source
    if isinstance(prompts, pd.DataFrame):
        return prompts, str(prompts.attrs.get("source") or "DataFrame")
    if isinstance(prompts, str | os.PathLike):
        name = os.fspath(prompts)
        return to_frame(read_table(name)[0]), name
    if isinstance(prompts, Sequence) and not isinstance(prompts, bytes | bytearray):
        return frame_from_list(prompts), "list"
    raise InputError([Problem(None, None, unsupported_type(prompts))], source="input")


def _axes(frame: pd.DataFrame, axes: Mapping[str, Any]) -> tuple[dict[str, list[Any]], list[Problem]]:
    """Each swept name's values as a list, and every problem with them."""
    problems: list[Problem] = []
    values: dict[str, list[Any]] = {}
    if not axes:
        problems.append(Problem(None, None, "nothing to sweep: name at least one column and its "
                                            "values, e.g. sweep(rows, duration=[5, 10])"))
    columns = {str(c) for c in frame.columns}
    for name, given in axes.items():
        name = str(name).strip()
        listed = [given] if isinstance(given, _SCALARS) or given is None else _listed(given)
        if name == ID_COLUMN:
            problems.append(Problem(None, name, "the sweep makes each variant's id itself; sweep "
                                                "other columns"))
        elif name in columns:
            problems.append(Problem(None, name, f"the table already has a {name!r} column: drop "
                                                f"it to sweep it (a sweep never replaces a "
                                                "table's data), or sweep other columns"))
        elif listed is None or not listed:
            problems.append(Problem(None, name, "give a non-empty list of values to sweep, e.g. "
                                                f"{name}=[5, 10]"))
        elif bad := [v for v in listed if v is None or not isinstance(v, _SCALARS)]:
            problems.append(Problem(None, name, f"{bad[0]!r} is not a value a cell can hold",
                                    allowed="text, numbers or true/false"))
        elif len({_label(v) for v in listed}) < len(listed):
            twice = sorted({_label(v) for v in listed if [_label(w) for w in listed].count(_label(v)) > 1})
            problems.append(Problem(None, name, f"lists {', '.join(twice)} more than once; each "
                                                "value makes its own variant"))
        else:
            values[name] = [_plain(v) for v in listed]
    return values, problems


def _listed(given: Any) -> list[Any] | None:
    if isinstance(given, Mapping | bytes | bytearray) or not isinstance(given, Iterable):
        return None
    return list(given)


def _plain(value: Any) -> Any:
    """numpy scalars as Python values; text stripped."""
    if isinstance(value, np.generic):
        value = value.item()
    return value.strip() if isinstance(value, str) else value


def _label(value: Any) -> str:
    """A value as its key part: whole floats without '.0' (5 and 5.0 are one value)."""
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _mixed(column: list[Any]) -> bool:
    return len({type(v) for v in column}) > 1


def _source_keys(frame: pd.DataFrame) -> list[str]:
    """Each source row's key: its id, else a hash of its cells (by column name, so reordering
    columns changes nothing); identical rows are told apart by occurrence, as ``hashed_keys`` does."""
    if ID_COLUMN in frame.columns:
        return [_label(v) for v in frame[ID_COLUMN].tolist()]
    names = sorted(str(c) for c in frame.columns)
    columns = [frame[c].tolist() for c in sorted(frame.columns, key=str)]
    seen: dict[str, int] = {}
    keys = []
    for cells in zip(*columns, strict=True):
        body = json.dumps({n: (None if _blank(v) else _label(v)) for n, v in zip(names, cells, strict=True)},
                          sort_keys=True, ensure_ascii=False)
        n = seen[body] = seen.get(body, -1) + 1
        keys.append(hashlib.sha256(f"{body}#{n}".encode()).hexdigest()[:12])
    return keys


def _blank(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()
