"""The prompts table either way it comes: a pandas DataFrame, or an Arrow table (a CSV read by
Arrow, ``videobatch._csv_arrow``). What checking rows reads of it (column names, a column's cells)
works on both, and the DataFrame of an Arrow table is made only when something asks for it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["Table", "column_names", "column_values", "maybe_padded", "to_frame"]

Table: TypeAlias = pd.DataFrame | pa.Table


def column_names(table: Table) -> list[Any]:
    """The table's column names, in order (a DataFrame's may be other than text)."""
    return list(table.column_names) if isinstance(table, pa.Table) else list(table.columns)


def column_values(table: Table, name: str) -> list[Any]:
    """The cells of column ``name`` as Python values (an empty cell: None or NaN)."""
    values: list[Any] = (table.column(name).to_pylist() if isinstance(table, pa.Table)
                         else table[name].tolist())
    return values


def maybe_padded(table: Table, name: str) -> list[int] | None:
    """For an Arrow text column: the rows that are empty or null, or whose first or last byte may
    belong to a character ``str.strip()`` removes (the others need no stripping); else None."""
    column = table.column(name) if isinstance(table, pa.Table) else None
    if column is None or column.type != pa.string():
        return None
    rows: list[int] = []
    base = 0
    for chunk in column.chunks:
        rows += (_maybe_padded(chunk) + base).tolist()
        base += len(chunk)
    return rows


# Bytes that may begin (end) the UTF-8 of a character str.strip() removes: ASCII whitespace, and the
# first (last) bytes of U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
_ASCII_SPACE = [*range(0x09, 0x0E), *range(0x1C, 0x21)]
_MAY_BEGIN = np.isin(np.arange(256), [*_ASCII_SPACE, 0xC2, 0xE1, 0xE2, 0xE3])
_MAY_END = np.isin(np.arange(256), [*_ASCII_SPACE, 0x85, 0xA0, *range(0x80, 0x8B), 0xA8, 0xA9, 0xAF, 0x9F])


def _maybe_padded(chunk: pa.StringArray) -> np.ndarray[Any, Any]:
    _, offsets, data = chunk.buffers()
    bounds = np.frombuffer(offsets, np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
    starts, ends = bounds[:-1], bounds[1:]
    if data is None or data.size == 0:
        return np.arange(len(chunk))
    text = np.frombuffer(data, np.uint8)
    last = len(text) - 1
    suspect = ((ends <= starts) | _MAY_BEGIN[text[np.minimum(starts, last)]]
               | _MAY_END[text[np.clip(ends - 1, 0, last)]])
    if chunk.null_count:
        suspect |= chunk.is_null().to_numpy(zero_copy_only=False)
    return np.flatnonzero(suspect)


def to_frame(table: Table) -> pd.DataFrame:
    """The table as a DataFrame (an Arrow table is converted)."""
    if isinstance(table, pa.Table):
        frame: pd.DataFrame = table.to_pandas()
        return frame
    return table
