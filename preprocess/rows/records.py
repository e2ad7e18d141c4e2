"""The read form of the rows: typed records of what the store's reader gives, and THE conversion of a
numpy value to a plain Python value.

- :func:`plain`: one column value (a numpy scalar, or what a numpy array holds) as a Python value. One
  rule for NaN, the "no value" of a float column (a kept source's similarity, a field an older snapshot
  did not have): None, except where a float must stay a float (``keep_nan``: the Python API's records,
  which a PyTorch batch collates). The reader, the export, the history and the web UI all use it.
- :class:`ItemFields`, :class:`ItemRecord`, :class:`Item`, :class:`StoredItem`, :class:`FailureFields`:
  what ``Dataset.record(i)``, ``ds[i]``, ``Dataset.item(i)`` return, field by field. They mirror
  :class:`~preprocess.rows.schema.ItemRow` and :class:`~preprocess.rows.schema.FailureRow`, the one
  declaration of the columns; ``tests/test_architecture.py`` keeps them equal (add a field there, then
  here).
"""

# (no `from __future__ import annotations` here: a TypedDict reads NotRequired at run time)
import builtins
import math
import operator
from typing import Any, NotRequired, TypedDict

import numpy as np
from numpy.typing import NDArray

type Plain = str | int | float | bool | builtins.bytes | None  # a column value as Python holds it


def plain(value: object, *, keep_nan: bool = False) -> Plain:
    """``value`` as a plain Python value: a numpy scalar becomes its Python int, float, bool, str or
    bytes; a float NaN becomes None (unless ``keep_nan``); anything else that is not already plain
    becomes its ``str``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value) and not keep_nan:
        return None
    if value is None or isinstance(value, (str, int, float, bool, builtins.bytes)):
        return value
    return str(value)


class ItemFields(TypedDict):
    """Every field of a stored item but its bytes (``jpeg``) and embedding, as plain Python values
    (:class:`~preprocess.rows.schema.ItemRow` says what each means)."""

    format: str
    encoder: str
    chroma: str
    status: str
    width: int
    height: int
    bytes: int
    quality: int
    similarity: float
    probes: int
    model: str
    source_path: str
    source_sha256: str
    source_bytes: int
    source_width: int
    source_height: int
    source_format: str
    capture_time: str
    camera_model: str
    fingerprint: str
    job_id: str
    similarity_whole: float
    similarity_crops: float
    similarity_tiles: float
    crop_box: str
    checks: str


class ItemRecord(ItemFields):
    """``Dataset.record(i)``: the fields and the row number."""

    index: int


class Item(ItemRecord):
    """``ds[i]``: the fields, the row number, the stored bytes and, when the dataset has a decoder, the
    decoded image (whatever the face's decoder makes: an RGB PIL image from ``preprocess.open_dataset``)."""

    jpeg: builtins.bytes
    image: NotRequired[Any]


class StoredItem(ItemFields):
    """``Dataset.item(i)``: every column, the stored bytes, and the embedding under the row's own model
    (float32 [D]; None when the dataset has no array for that model)."""

    jpeg: builtins.bytes
    embedding: NDArray[np.float32] | None


class FailureFields(TypedDict):
    """One recorded failure's fields (:class:`~preprocess.rows.schema.FailureRow`)."""

    source_path: str
    source_sha256: str
    source_bytes: int
    fingerprint: str
    code: str
    message: str
    job_id: str


def row_number(i: object) -> int:
    """``i`` as a row number (an int, numpy's or torch's too); TypeError, saying what to use, for a slice, an
    array or anything else (a slice was "'<=' not supported between 'int' and 'slice'")."""
    try:
        return operator.index(i)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a row is one whole number, not {type(i).__name__} {i!r:.40}: for many rows, iterate, or "
                        "read columns with items_table / to_pandas") from None
