"""A row's fields as plain Python values: what the lineage, the diff, ``ls`` and the web UI read from
the columns of :class:`preprocess.store.Dataset` (numpy scalars become ``int``/``float``/``str``,
a NaN similarity becomes None)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

type Cell = str | int | float | bool | None
type Record = dict[str, Cell]  # field name -> value (never the stored bytes or the embedding)
type Table = Mapping[str, npt.NDArray[np.generic]]  # field name -> column


def cell(value: object) -> Cell:
    """One column value as plain Python (NaN -> None; anything else that is not a number -> str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def record(table: Table, k: int) -> Record:
    """Row ``k`` of a table of columns."""
    return {name: cell(column[k]) for name, column in table.items()}


def records(table: Table, rows: int) -> list[Record]:
    """The first ``rows`` rows of a table of columns."""
    return [record(table, k) for k in range(rows)]


def same(x: object, y: object) -> bool:
    """Whether two column values are equal (two NaN are)."""
    if isinstance(x, float | np.floating) and isinstance(y, float | np.floating):
        return bool(x == y or (math.isnan(x) and math.isnan(y)))
    return bool(x == y)
