"""Reading a prompts source into a table: a CSV file (strict UTF-8, a header line, rows no wider
than it), a pandas DataFrame or a list of prompt texts and/or dicts of columns.

An unreadable source raises one ``InputError`` saying what is wrong and how to fix it; the rows
themselves are checked by ``videobatch._input_check``.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from ._csv_arrow import read_typed
from ._input_keys import ID_COLUMN
from ._input_table import Table
from .errors import InputError, Problem
from .request import REQUEST_FIELDS, is_unicode, not_unicode

__all__ = ["frame_from_list", "join_numbers", "read_csv", "scan", "text_lines", "unsupported_type"]

# Request columns pandas may read as numbers from a CSV; every other request column (and ``id``) is
# read as text, so a prompt like "123" or an id like "007" stays exactly as typed.
_NUMERIC_FIELDS = frozenset({"duration", "cfg_scale"})

_OTHER_FORMATS = {
    ".xlsx": "read_excel", ".xlsm": "read_excel", ".xls": "read_excel", ".ods": "read_excel",
    ".parquet": "read_parquet", ".feather": "read_feather", ".json": "read_json",
}
_NO_HEADER = (
    "the file has no header line: the first line must name the columns, e.g. id,prompt,duration"
)
_QUOTING_HINT = (
    "text containing commas, quotes or line breaks must be in double quotes, "
    'with quotes inside it doubled ("")'
)


def read_csv(name: str) -> tuple[Table, str]:
    """The CSV at ``name`` as a table (header names stripped), and its text: an Arrow table typed as
    pandas would type it where that is certain (``videobatch._csv_arrow``), else a DataFrame."""
    raw = _read_bytes(name)
    reader = _OTHER_FORMATS.get(os.path.splitext(name)[1].lower())
    if reader:
        raise _table_error(name, f"this is not a CSV file: save it as CSV (UTF-8), or load it with "
                                 f"pandas.{reader}(path) and pass the DataFrame")
    text = _decode(raw, name)
    header, first_rows = scan(text, limit=1)
    if header is None and first_rows is not None:
        raise _table_error(name, _NO_HEADER)
    if header is not None:
        _check_header([cell.strip() for cell in header], name)
        if first_rows and first_rows[0][1] > len(header):
            # pandas would silently drop the first row's extra cells: refuse every such row
            _check_widths(scan(text)[1] or first_rows, len(header), name)
    body = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    if header is not None:
        table = read_typed(body, header, {n.strip() for n in _text_columns(header)})
        if table is not None:
            return table, text
    try:  # what Arrow cannot be sure to read as pandas would
        # From the bytes (checked above to be UTF-8): a StringIO would copy the text at 4 bytes a
        # character first; pandas parses UTF-8 bytes either way.
        frame = pd.read_csv(
            io.BytesIO(body), encoding="utf-8", dtype=_text_columns(header), keep_default_na=False,
            na_values=[""], index_col=False,
        )
    except pd.errors.EmptyDataError:
        raise _table_error(name, _NO_HEADER) from None
    except (pd.errors.ParserError, ValueError) as exc:
        header, rows = scan(text)
        if header is not None and rows:
            _check_widths(rows, len(header), name)  # one problem per row with too many cells
        reason = str(exc).strip().removeprefix("Error tokenizing data. C error: ")
        raise _table_error(name, f"cannot parse the CSV ({reason}); {_QUOTING_HINT}") from None
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    return frame, text


def _text_columns(header: list[str] | None) -> dict[str, str]:
    """Request columns (but numbers) and ``id`` are read as text, so 'NA', '123', '007' stay."""
    return {
        raw: "str"
        for raw in header or ()
        if raw.strip() == ID_COLUMN
        or (raw.strip() in REQUEST_FIELDS and raw.strip() not in _NUMERIC_FIELDS)
    }


def _read_bytes(name: str) -> bytes:
    try:
        with open(name, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise _table_error(name, f"file not found: {os.path.abspath(name)} (check the path; "
                                 "to pass prompt texts directly, pass a list of strings)") from None
    except IsADirectoryError:
        raise _table_error(name, "this is a directory, not a CSV file: pass the path of the "
                                 "file itself") from None
    except PermissionError:
        raise _table_error(name, "permission denied: cannot read the file (check its permissions, "
                                 "or whether it is a directory)") from None
    except OSError as exc:
        raise _table_error(name, f"cannot read the file: {exc.strerror or exc}") from None
    if not raw:
        raise _table_error(name, "the file is empty (0 bytes): add a header line with a 'prompt' "
                                 "column and one line per video")
    return raw


def _decode(raw: bytes, name: str) -> str:
    """Strict UTF-8 (a leading byte-order mark is fine); the first bad byte is located exactly."""
    offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        line = raw.count(b"\n", 0, at) + 1
        bad = raw[at : at + 1].hex()
        raise InputError(
            [Problem(None, None,
                     f"not UTF-8: byte 0x{bad} at byte offset {at} (line {line}) is not valid "
                     "UTF-8; save it as UTF-8 (in Excel: Save As > 'CSV UTF-8')", line=line)],
            source=name,
        ) from None


def scan(
    text: str, limit: int | None = None
) -> tuple[list[str] | None, list[tuple[int, int]] | None]:
    """The header cells, and (first line, cell count) of each data row (up to ``limit`` rows),
    skipping blank lines as pandas does. Rows are None when the csv module cannot read the text
    (e.g. a cell over its 128 KiB limit): line numbers then fall back to row + 1."""
    reader = csv.reader(text_lines(text))
    header: list[str] | None = None
    rows: list[tuple[int, int]] = []
    next_line = 1
    try:
        for cells in reader:
            first, next_line = next_line, reader.line_num + 1
            if not cells or (len(cells) == 1 and cells[0] and not cells[0].strip()):
                continue  # a blank line
            if header is None:
                header = cells
            elif limit is not None and len(rows) >= limit:
                break
            else:
                rows.append((first, len(cells)))
    except csv.Error:
        return header, None
    return header, rows


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def text_lines(text: str) -> Iterator[str]:
    """The lines ``io.StringIO(text, newline="")`` yields (ends kept), one at a time: no copy of
    the whole text (a StringIO holds 4 bytes a character)."""
    return (match.group() for match in _LINE.finditer(text))


def _check_header(names: list[str], source: str) -> None:
    seen: dict[str, list[int]] = {}
    for position, name in enumerate(names, 1):
        if name:
            seen.setdefault(name, []).append(position)
    problems = [
        Problem(None, name, f"appears {len(positions)} times in the header (columns "
                            f"{join_numbers(positions)}); keep one or rename the others")
        for name, positions in seen.items()
        if len(positions) > 1
    ]
    if problems:
        raise InputError(problems, source=source)


def _check_widths(records: list[tuple[int, int]], width: int, source: str) -> None:
    """A row with more cells than the header would shift or lose data: refuse it."""
    problems = [
        Problem(row, None, f"has {cells} cells but the header has {width} columns; "
                           f"{_QUOTING_HINT}", line=line)
        for row, (line, cells) in enumerate(records, 1)
        if cells > width
    ]
    if problems:
        raise InputError(problems, source=source)


def frame_from_list(items: Sequence[Any]) -> pd.DataFrame:
    """A str item is a prompt; a mapping is a row (columns: union of keys, first appearance)."""
    rows: list[dict[Any, Any]] = []
    problems: list[Problem] = []
    for row, item in enumerate(items, 1):
        if isinstance(item, str):
            rows.append({"prompt": item})
        elif isinstance(item, Mapping):
            rows.append(dict(item))
        else:
            problems.append(Problem(
                row, None, f"item is of type {type(item).__name__}; each item must be a prompt "
                           "text or a dict of columns such as {'prompt': 'a red fox', "
                           "'duration': 10}"))
    if problems:
        raise InputError(problems, source="list")
    try:
        return pd.DataFrame(rows)
    except UnicodeEncodeError:  # a lone surrogate (Python or JSON's "\ud800" allow one): not text
        raise InputError([
            Problem(row, str(column), *not_unicode(str(column), value))
            for row, cells in enumerate(rows, 1) for column, value in cells.items()
            if isinstance(value, str) and not is_unicode(value)], source="list") from None


def unsupported_type(source: object) -> str:
    kind = type(source).__name__
    text = (f"cannot read prompts from a {kind}: pass a CSV path, a pandas DataFrame, or a list "
            "of prompt texts and/or dicts of columns")
    if isinstance(source, pd.Series):
        text += " (for a Series of prompts: series.to_frame('prompt'))"
    elif isinstance(source, Mapping):
        text += " (for a dict of columns: pandas.DataFrame(your_dict))"
    elif isinstance(source, bytes | bytearray):
        text += " (for CSV bytes: write them to a file, or decode them and use io.StringIO "
        text += "with pandas.read_csv)"
    return text



def join_numbers(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:20]))
    return shown + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")



def _table_error(source: str, message: str) -> InputError:
    return InputError([Problem(None, None, message)], source=source)
