"""THE numpy-to-Python conversion (rows.records.plain): the reader, the export, the history and the web UI
give the same Python value for the same stored value."""

from __future__ import annotations

import math

import numpy as np

from preprocess.rows.records import plain


def test_numpy_scalars_become_python_values() -> None:
    for value, want in ((np.int16(7), 7), (np.int64(-3), -3), (np.float32(0.5), 0.5), (np.bool_(True), True),
                        (np.str_("a"), "a"), (np.bytes_(b"x"), b"x"), ("s", "s"), (b"b", b"b"), (3, 3), (None, None)):
        got = plain(value)
        assert got == want and type(got) is type(want), value


def test_nan_is_none_unless_kept() -> None:
    assert plain(np.float32("nan")) is None and plain(float("nan")) is None
    kept = plain(np.float32("nan"), keep_nan=True)
    assert isinstance(kept, float) and math.isnan(kept)  # the Python API's records stay floats
    assert plain(np.float32(1.0), keep_nan=True) == 1.0


def test_anything_else_becomes_its_text() -> None:
    assert plain(np.datetime64("2026-01-02")) == "2026-01-02"
    column = np.array(["a", "b"], dtype=np.dtypes.StringDType())
    assert plain(column[1]) == "b"
