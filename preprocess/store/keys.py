"""The dedupe index of a branch being written: which item keys and which failures it holds.

An item is the same item when its key (``source_sha256:fingerprint``, :func:`~preprocess.rows.schema.item_key`)
is; a failure is the same failure when its :func:`~preprocess.rows.schema.failure_key` is. The index
is read from the branch when a writer opens it (what was committed), then grows with what the
writer adds or claims; claims end with the writer.
"""

from __future__ import annotations

from preprocess.core import names
from preprocess.rows import schema
from preprocess.rows.schema import FailureRow, ItemRow
from preprocess.store.append import Table

type FailureKey = tuple[str, str, str]


class Keys:
    """Item keys and failure keys of a branch, plus those added or claimed since it was read."""

    def __init__(self, items: set[str] | None = None, failures: set[FailureKey] | None = None) -> None:
        self.items: set[str] = items if items is not None else set()
        self.failures: set[FailureKey] = failures if failures is not None else set()

    @classmethod
    def read(cls, items: Table[ItemRow], failures: Table[FailureRow]) -> Keys:
        """The keys of the rows already stored in the tables."""
        return cls(_item_keys(items), _failure_keys(failures))

    def claim(self, key: str) -> bool:
        """Reserve item ``key``; False when it is known already (stored, added or claimed)."""
        if key in self.items:
            return False
        self.items.add(key)
        return True


def _item_keys(table: Table[ItemRow]) -> set[str]:
    if not table.stored:
        return set()
    shas = schema.read(table.arrays["source_sha256"])
    fps = schema.read(table.arrays["fingerprint"])
    return {schema.item_key(str(s), str(f)) for s, f in zip(shas, fps, strict=True)}


def _failure_keys(table: Table[FailureRow]) -> set[FailureKey]:
    if not table.stored:
        return set()
    cols = [schema.read(table.arrays[name]) for name in ("source_sha256", "source_path", "fingerprint", "code")]
    return {schema.failure_key(str(s), names.real(str(p)), str(f), str(c))  # the name, as rows in memory hold it
            for s, p, f, c in zip(*cols, strict=True)}
