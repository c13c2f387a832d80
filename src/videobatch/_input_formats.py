"""Reading a prompts file of any supported format into a table, chosen by its extension:
``.csv`` (and any other name: ``videobatch._input_read``), ``.tsv``, ``.parquet``, ``.jsonl``,
``.json`` (an array of objects) and ``.xlsx`` (the ``excel`` extra: openpyxl).

Text formats are read as strict UTF-8; request text columns and ``id`` stay text exactly as typed
(as in a CSV). An unreadable file, a missing extra or a bad line raises one ``InputError`` saying
what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import zipfile
from collections.abc import Callable
from typing import Any

import pandas as pd

from ._input_read import (
    _check_header,
    _check_widths,
    _decode,
    _read_bytes,
    _table_error,
    _text_columns,
    read_csv,
    text_lines,
)
from ._input_table import Table

__all__ = ["INPUT_FORMATS", "read_table"]

INPUT_FORMATS = ".csv, .tsv, .parquet, .jsonl, .json or .xlsx"  # as people read it
_EXCEL_HINT = "pip install 'videobatch[excel]' (or: pip install openpyxl)"


def read_table(name: str) -> tuple[Table, str | None]:
    """The file at ``name`` as a table (header names stripped), and its text when it is a CSV
    (its line numbers locate problems). A CSV may come as an Arrow table (``read_csv``); every
    other format is read by pandas."""
    extension = os.path.splitext(name)[1].lower()
    reader = _READERS.get(extension)
    if reader is None:
        return read_csv(name)
    frame = reader(name)
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    if len(frame.columns) == 0:
        raise _table_error(name, "the file has no columns: it needs a 'prompt' column and one row "
                                 "per video")
    return frame, None


def _read_tsv(name: str) -> pd.DataFrame:
    text = _decode(_read_bytes(name), name)
    header: list[str] | None = None
    widths: list[tuple[int, int]] = []
    reader = csv.reader(text_lines(text), delimiter="\t")
    next_line = 1
    for cells in reader:
        first, next_line = next_line, reader.line_num + 1
        if not cells or not any(cell.strip() for cell in cells):
            continue  # a blank line
        if header is None:
            header = [cell.strip() for cell in cells]
        else:
            widths.append((first, len(cells)))
    if header is None:
        raise _table_error(name, "the file is empty: add a header line naming the columns "
                                 "(separated by tabs), e.g. id<TAB>prompt")
    _check_header(header, name)
    _check_widths(widths, len(header), name)
    try:
        return pd.read_csv(io.StringIO(text), sep="\t", dtype=_text_columns(header),
                           keep_default_na=False, na_values=[""], index_col=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise _table_error(name, f"cannot parse the TSV file ({exc}); cells are separated by "
                                 "tabs, text with tabs or line breaks must be in double quotes") from None


def _read_jsonl(name: str) -> pd.DataFrame:
    """One JSON object per line; every bad line is reported (by line number) at once."""
    from .errors import InputError, Problem

    text = _decode(_read_bytes(name), name)
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(None, None, f"line {line} is not valid JSON ({exc.msg} at "
                                                f"column {exc.colno})", line=line))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(None, None, f"line {line} is a JSON {type(value).__name__}, not "
                                                'an object such as {"prompt": "a red fox"}', line=line))
            continue
        rows.append(value)
    if problems:
        raise InputError(problems, source=name)
    return _frame_of(rows, name)


def _read_json(name: str) -> pd.DataFrame:
    text = _decode(_read_bytes(name), name)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _table_error(name, f"not valid JSON ({exc.msg} at line {exc.lineno}, column "
                                 f"{exc.colno}); for one object per line, name the file .jsonl") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _table_error(name, "a .json prompts file must be an array of objects such as "
                                 '[{"prompt": "a red fox"}]; for one object per line, name it .jsonl')
    return _frame_of(value, name)


def _frame_of(rows: list[dict[str, Any]], name: str) -> pd.DataFrame:
    if not rows:
        raise _table_error(name, "the file has no rows: add one JSON object per video")
    return pd.DataFrame(rows)


def _read_parquet(name: str) -> pd.DataFrame:
    _read_bytes(name)  # the same answers as for a CSV: not found, a directory, empty, ...
    try:
        return pd.read_parquet(name)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise _table_error(name, f"cannot read the Parquet file ({_first_line(exc)}); is it a "
                                 "Parquet file? Write it with DataFrame.to_parquet") from None


def _read_excel(name: str) -> pd.DataFrame:
    _read_bytes(name)
    if importlib.util.find_spec("openpyxl") is None:  # pandas needs it for .xlsx
        raise _table_error(name, f"reading .xlsx files needs the 'excel' extra: {_EXCEL_HINT}; "
                                 "or save the sheet as CSV (UTF-8)")
    try:
        header = pd.read_excel(name, engine="openpyxl", nrows=0)
        names = [str(c) for c in header.columns]
        return pd.read_excel(name, engine="openpyxl", dtype=_text_columns(names),
                             keep_default_na=False, na_values=[""])
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise _table_error(name, f"cannot read the Excel file ({_first_line(exc)}); save it as "
                                 ".xlsx from Excel (or as CSV, UTF-8); the first sheet is read, "
                                 "its first row naming the columns") from None


def _unsupported(hint: str) -> Callable[[str], pd.DataFrame]:
    def refuse(name: str) -> pd.DataFrame:
        raise _table_error(name, f"this format is not read: {hint}; supported: {INPUT_FORMATS}")
    return refuse


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_READERS: dict[str, Callable[[str], pd.DataFrame]] = {
    ".tsv": _read_tsv, ".tab": _read_tsv,
    ".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json,
    ".parquet": _read_parquet, ".pq": _read_parquet,
    ".xlsx": _read_excel, ".xlsm": _read_excel,
    ".xls": _unsupported("save the old .xls workbook as .xlsx (or as CSV, UTF-8)"),
    ".ods": _unsupported("save the spreadsheet as .xlsx (or as CSV, UTF-8)"),
    ".feather": _unsupported("load it with pandas.read_feather(path) and pass the DataFrame"),
}
