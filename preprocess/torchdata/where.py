"""Which rows of a version a reader keeps (numpy only: it runs wherever the version's columns are read)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

# the columns a selection reads
WHERE_FIELDS = ("fingerprint", "status", "quality", "similarity", "source_path", "source_sha256")


class Columns(Protocol):
    """What a selection reads a version through (:class:`preprocess.store.Dataset`)."""

    def items_table(self, fields: Sequence[str] | None = None) -> dict[str, npt.NDArray[np.generic]]: ...


@dataclass(frozen=True)
class Where:
    """Which rows of a version to read; every condition given must hold.

    ``fingerprint``/``status``: one value or several; ``quality``/``similarity``: inclusive ``(low,
    high)``; ``source_prefix``: the start of ``source_path``; ``one_per_source``: of the rows left,
    only the newest (last written) per source content (``source_sha256``), e.g. on a branch that
    holds the rows of several specs.
    """

    fingerprint: str | Sequence[str] | None = None
    status: str | Sequence[str] | None = None
    quality: tuple[int, int] | None = None
    similarity: tuple[float, float] | None = None
    source_prefix: str | None = None
    one_per_source: bool = False

    def rows(self, ds: Columns) -> npt.NDArray[np.int64]:
        """The dataset rows (ascending indices) that match."""
        return self.select(ds.items_table(list(WHERE_FIELDS)))

    def select(self, cols: Mapping[str, npt.NDArray[np.generic]]) -> npt.NDArray[np.int64]:
        """The rows (ascending indices) of a version whose columns :data:`WHERE_FIELDS` are ``cols``."""
        n = len(cols["status"])
        keep = np.ones(n, dtype=bool)
        for name, wanted in (("fingerprint", self.fingerprint), ("status", self.status)):
            if wanted is not None:
                keep &= np.isin(cols[name], [wanted] if isinstance(wanted, str) else list(wanted))
        for name, bounds in (("quality", self.quality), ("similarity", self.similarity)):
            if bounds is not None:
                number = np.asarray(cols[name], dtype=np.float64)
                keep &= (number >= bounds[0]) & (number <= bounds[1])
        if self.source_prefix is not None:  # numpy's StringDType column (str_ to the type checker)
            keep &= np.strings.startswith(cast("npt.NDArray[np.str_]", cols["source_path"]), self.source_prefix)
        rows = np.flatnonzero(keep)
        if self.one_per_source and rows.size:
            newest_first = rows[::-1]
            _, first = np.unique(cols["source_sha256"][newest_first], return_index=True)
            rows = np.sort(newest_first[first])
        return rows.astype(np.int64)
