"""The prompts table either way it comes: a pandas DataFrame, or an Arrow table (a CSV read by
Arrow, ``videobatch._csv_arrow``). What checking rows reads of it (column names, a column's cells)
works on both, and the DataFrame of an Arrow table is made only when something asks for it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa

__all__ = ["Table", "column_names", "column_values", "to_frame", "utf8_only"]

Table: TypeAlias = pd.DataFrame | pa.Table


def column_names(table: Table) -> list[Any]:
    """The table's column names, in order (a DataFrame's may be other than text)."""
    return list(table.column_names) if isinstance(table, pa.Table) else list(table.columns)


def column_values(table: Table, name: str) -> list[Any]:
    """The cells of column ``name`` as Python values (an empty cell: None or NaN)."""
    values: list[Any] = (table.column(name).to_pylist() if isinstance(table, pa.Table)
                         else table[name].tolist())
    return values


def utf8_only(table: Table) -> bool:
    """Whether every text cell is sure to be UTF-8 text: an Arrow table's are by construction; a
    DataFrame's object column may hold a lone surrogate."""
    return isinstance(table, pa.Table)


def to_frame(table: Table) -> pd.DataFrame:
    """The table as a DataFrame (an Arrow table is converted)."""
    if isinstance(table, pa.Table):
        frame: pd.DataFrame = table.to_pandas()
        return frame
    return table
