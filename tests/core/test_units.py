"""Units as people read them (``preprocess.core.units``)."""

from __future__ import annotations

from preprocess.core.units import count, size


def test_a_count_of_one_is_singular() -> None:
    """`gc` said "would delete 1 snapshots" and a ref error "only 1 commits before it"."""
    assert [count(n, "commit") for n in (0, 1, 2)] == ["0 commits", "1 commit", "2 commits"]


def test_sizes_are_decimal() -> None:
    assert [size(n) for n in (812, 27_000, 3_400_000)] == ["812 B", "27.0 KB", "3.4 MB"]
