"""The items of a version as a grid: which rows, in which order, on which page.

A :class:`GridQuery` is parsed from the URL (every value checked) and :func:`select` turns it into
row numbers from only the columns it sorts or filters on; the page's own fields are then read for
its rows alone (:meth:`preprocess.store.Dataset.items_at`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlencode

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.rows.schema import ITEM_STATUSES

SORTS = {"row": "", "similarity": "similarity", "quality": "quality", "bytes": "bytes"}
PER_PAGE = (24, 48, 96, 192)
RANGES = {"similarity": float, "quality": int, "bytes": int}  # filterable by min/max
CARD_FIELDS = ("source_path", "status", "format", "width", "height", "bytes", "quality", "similarity",
               "fingerprint")
_FINGERPRINT = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")

Column = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class GridQuery:
    """Sort, filters and page of an items grid (the URL's query parameters)."""

    sort: str = "row"
    order: str = "asc"
    status: str = ""
    spec: str = ""  # a spec fingerprint
    similarity_min: float | None = None
    similarity_max: float | None = None
    quality_min: int | None = None
    quality_max: int | None = None
    bytes_min: int | None = None
    bytes_max: int | None = None
    page: int = 1
    per_page: int = 48

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> GridQuery:
        """From query parameters; ConfigError SERVE_PARAM names the first bad one."""
        values: dict[str, Any] = {}
        sort = params.get("sort") or "row"
        _check(sort in SORTS, "sort", sort, f"one of {', '.join(SORTS)}")
        order = params.get("order") or "asc"
        _check(order in ("asc", "desc"), "order", order, "asc or desc")
        status = params.get("status") or ""
        _check(not status or status in ITEM_STATUSES, "status", status, f"one of {', '.join(sorted(ITEM_STATUSES))}")
        spec = params.get("spec") or ""
        _check(not spec or bool(_FINGERPRINT.match(spec)), "spec", spec, "a spec fingerprint")
        values.update(sort=sort, order=order, status=status, spec=spec)
        for name, kind in RANGES.items():
            for end in ("min", "max"):
                key = f"{name}_{end}"
                values[key] = _number(params.get(key) or "", key, kind)
        values["page"] = _number(params.get("page") or "1", "page", int)
        _check(values["page"] >= 1, "page", str(values["page"]), "1 or more")
        values["per_page"] = _number(params.get("per_page") or "48", "per_page", int)
        _check(values["per_page"] in PER_PAGE, "per_page", str(values["per_page"]),
               f"one of {', '.join(map(str, PER_PAGE))}")
        return cls(**values)

    @property
    def selection_key(self) -> tuple[Any, ...]:
        """What decides the rows and their order (not the page)."""
        return tuple(v for k, v in asdict(self).items() if k not in ("page", "per_page"))

    def columns(self) -> list[str]:
        """The columns :func:`select` reads for this query."""
        names = [SORTS[self.sort]] if SORTS[self.sort] else []
        names += ["status"] if self.status else []
        names += ["fingerprint"] if self.spec else []
        names += [n for n in RANGES if self.range(n) != (None, None)]
        return list(dict.fromkeys(names))

    def range(self, name: str) -> tuple[float | None, float | None]:
        return getattr(self, f"{name}_min"), getattr(self, f"{name}_max")

    def params(self, **changes: Any) -> str:
        """This query (with ``changes``) as a URL query string, defaults left out."""
        default = GridQuery()
        q = replace(self, **changes)
        return urlencode({k: v for k, v in asdict(q).items() if v != getattr(default, k) and v is not None})

    @property
    def filtered(self) -> bool:
        return bool(self.status or self.spec or any(self.range(n) != (None, None) for n in RANGES))


def _check(ok: bool, name: str, value: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"bad {name}={value[:80]!r}: expected {expected}", code=ErrorCode.SERVE_PARAM,
                          hint="fix the URL, or start again from the items page")


def _number(text: str, name: str, kind: type) -> Any:
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"bad {name}={text[:80]!r}: expected a number", code=ErrorCode.SERVE_PARAM,
                          hint="fix the URL, or start again from the items page") from None
    _check(math.isfinite(value) and abs(value) < 2**62, name, text, "a finite number")
    return value


def select(column: Column, rows: int, q: GridQuery) -> np.ndarray:
    """The row numbers (int64) that pass ``q``'s filters, in its order; NaN similarities last
    whichever the order. ``column(name)`` gives a whole column; only :meth:`GridQuery.columns` are asked for."""
    keep = np.ones(rows, dtype=bool)
    if q.status:
        keep &= column("status") == q.status
    if q.spec:
        keep &= column("fingerprint") == q.spec
    for name in RANGES:
        low, high = q.range(name)
        if low is not None:
            keep &= column(name) >= low
        if high is not None:
            keep &= column(name) <= high
    picked = np.flatnonzero(keep)
    if not SORTS[q.sort]:
        return picked[::-1].copy() if q.order == "desc" else picked
    values = column(SORTS[q.sort])[picked]
    key = values.astype(np.float64)
    if q.order == "desc":
        key = -key  # stable for ties (row order), NaN still last
    return picked[np.argsort(key, kind="stable")]


@dataclass(frozen=True)
class Page:
    """One page of a selection."""

    rows: np.ndarray  # row numbers on this page, in order
    number: int
    pages: int
    total: int  # rows in the whole selection

    @classmethod
    def of(cls, selection: np.ndarray, q: GridQuery) -> Page:
        total = int(selection.size)
        pages = max(1, math.ceil(total / q.per_page))
        _check(q.page <= pages, "page", str(q.page), f"1 to {pages}")
        start = (q.page - 1) * q.per_page
        return cls(rows=selection[start:start + q.per_page], number=q.page, pages=pages, total=total)
