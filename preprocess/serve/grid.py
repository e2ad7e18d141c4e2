"""The items of a version as a grid: which rows, in which order, on which page.

A :class:`GridQuery` is parsed from the URL (every value checked) and :func:`select` turns it into
row numbers from only the columns it sorts or filters on; the page's own fields are then read for
its rows alone (:meth:`preprocess.store.Dataset.items_at`). Its filters are an expression of
:mod:`preprocess.store.where` (:meth:`GridQuery.where`), the same that ``preprocess ls --where``
reads: the search box and the filters are conditions, and ``where=`` takes any expression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.rows.schema import ITEM_STATUSES
from preprocess.store.where import Condition, Where, is_time, parse, sort_order

SORTS = {"row": "", "similarity": "similarity", "crops": "similarity_crops", "quality": "quality", "bytes": "bytes"}
PER_PAGE = (24, 48, 96, 192)
RANGES = {"similarity": float, "quality": int, "bytes": int}  # filterable by min/max
CARD_FIELDS = ("source_path", "status", "format", "width", "height", "bytes", "quality", "similarity",
               "similarity_crops", "fingerprint")
_FINGERPRINT = re.compile(r"^[0-9A-Za-z_.:-]{1,128}\Z")
_COMMIT = re.compile(r"^[0-9A-Za-z]{4,20}\Z")
_FORMAT = re.compile(r"^[0-9A-Za-z]{1,16}\Z")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
TEXTS = {"q": 200, "camera": 200, "where": 1000}  # free-text parameters and their longest value

type Rows = npt.NDArray[np.int64]
Column = Callable[[str], npt.NDArray[np.generic]]


@dataclass(frozen=True)
class GridQuery:
    """Sort, filters and page of an items grid (the URL's query parameters)."""

    sort: str = "row"
    order: str = "asc"
    status: str = ""
    spec: str = ""  # a spec: a fingerprint, a prefix of one, or its pipeline name (as `ls --where "spec = X"`)
    q: str = ""  # search: the source path (file name, folder) contains this
    commit: str = ""  # the snapshot that added the row (an id or a prefix of 4+)
    format: str = ""
    camera: str = ""
    captured_from: str = ""  # capture dates (EXIF), YYYY-MM-DD, both days included
    captured_to: str = ""
    where: str = ""  # any expression of preprocess.store.where
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
        values: dict[str, str | int | float | None] = {}
        sort = params.get("sort") or "row"
        _check(sort in SORTS, "sort", sort, f"one of {', '.join(SORTS)}")
        order = params.get("order") or "asc"
        _check(order in ("asc", "desc"), "order", order, "asc or desc")
        status = params.get("status") or ""
        _check(not status or status in ITEM_STATUSES, "status", status, f"one of {', '.join(sorted(ITEM_STATUSES))}")
        spec = params.get("spec") or ""
        _check(not spec or bool(_FINGERPRINT.match(spec)), "spec", spec, "a spec fingerprint or name")
        values.update(sort=sort, order=order, status=status, spec=spec)
        commit, fmt = params.get("commit") or "", params.get("format") or ""
        _check(not commit or bool(_COMMIT.match(commit)), "commit", commit, "a snapshot id or a prefix of 4+ of it")
        _check(not fmt or bool(_FORMAT.match(fmt)), "format", fmt, "a format name (jpeg, avif, ...)")
        values.update(commit=commit.upper(), format=fmt.lower())
        for name in ("captured_from", "captured_to"):
            day = params.get(name) or ""
            _check(not day or (bool(_DATE.match(day)) and is_time(day) and day < "9999-12-31"), name, day,
                   "a date, YYYY-MM-DD")  # 9999-12-31 has no next day to compare with
            values[name] = day
        for name, longest in TEXTS.items():
            text = (params.get(name) or "").strip()
            _check(len(text) <= longest and "\0" not in text, name, text, f"at most {longest} characters")
            values[name] = text
        if values["where"]:
            parse(str(values["where"]))  # WHERE_INVALID (a 400 page) names what is wrong
        for name, kind in RANGES.items():
            for end in ("min", "max"):
                key = f"{name}_{end}"
                values[key] = _number(params.get(key) or "", key, kind)
        values["page"] = page = _number(params.get("page") or "1", "page", int)
        _check(page is not None and page >= 1, "page", str(page), "1 or more")
        values["per_page"] = per_page = _number(params.get("per_page") or "48", "per_page", int)
        _check(per_page in PER_PAGE, "per_page", str(per_page),
               f"one of {', '.join(map(str, PER_PAGE))}")
        return cls(**values)  # type: ignore[arg-type]  # each value was checked above

    @property
    def selection_key(self) -> tuple[object, ...]:
        """What decides the rows and their order (not the page)."""
        return tuple(v for k, v in asdict(self).items() if k not in ("page", "per_page"))

    def to_where(self) -> Where:
        """The filters as one expression (what ``preprocess ls --where`` takes)."""
        conditions = [Condition(f, "=", v) for f, v in (("status", self.status), ("spec", self.spec),
                                                        ("format", self.format), ("camera", self.camera),
                                                        ("commit", self.commit)) if v]
        conditions += [Condition("path", "~", self.q)] if self.q else []
        conditions += [Condition("time", ">=", self.captured_from)] if self.captured_from else []
        conditions += [Condition("time", "<", _next_day(self.captured_to))] if self.captured_to else []
        for name in RANGES:
            low, high = self.range(name)
            conditions += [Condition(name, ">=", str(low))] if low is not None else []
            conditions += [Condition(name, "<=", str(high))] if high is not None else []
        own = Where((tuple(conditions),)) if conditions else Where()
        return own & parse(self.where) if self.where else own

    def columns(self) -> list[str]:
        """The columns :func:`select` reads for this query."""
        names = [SORTS[self.sort]] if SORTS[self.sort] else []
        names += self.to_where().columns()
        return list(dict.fromkeys(names))

    def range(self, name: str) -> tuple[float | None, float | None]:
        return getattr(self, f"{name}_min"), getattr(self, f"{name}_max")

    def params(self, **changes: str | int | float | None) -> str:
        """This query (with ``changes``) as a URL query string, defaults left out."""
        default = GridQuery()
        q = replace(self, **changes)  # type: ignore[arg-type]
        return urlencode({k: v for k, v in asdict(q).items() if v != getattr(default, k) and v is not None})

    @property
    def filtered(self) -> bool:
        return bool(self.to_where())


def _check(ok: bool, name: str, value: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"bad {name}={value[:80]!r}: expected {expected}", code=ErrorCode.SERVE_PARAM,
                          hint="fix the URL, or start again from the items page")


def _number(text: str, name: str, kind: type[int] | type[float]) -> int | float | None:
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"bad {name}={text[:80]!r}: expected a number", code=ErrorCode.SERVE_PARAM,
                          hint="fix the URL, or start again from the items page") from None
    # abs() first: math.isfinite(10**400) raises OverflowError (a 500), where a big int is just too big
    _check(abs(value) < 2**62 and math.isfinite(value), name, text, "a finite number")
    return value


def select(column: Column, rows: int, q: GridQuery) -> Rows:
    """The row numbers (int64) that pass ``q``'s filters, in its order; NaN similarities last
    whichever the order. ``column(name)`` gives a whole column (``commit``: the snapshot that added
    each row); only :meth:`GridQuery.columns` are asked for."""
    picked = np.flatnonzero(q.to_where().mask(column, rows))
    if not SORTS[q.sort]:
        return picked[::-1].copy() if q.order == "desc" else picked
    return picked[sort_order(column(SORTS[q.sort])[picked], numeric=True, descending=q.order == "desc")]


@dataclass(frozen=True)
class Page:
    """One page of a selection."""

    rows: Rows  # row numbers on this page, in order
    number: int
    pages: int
    total: int  # rows in the whole selection

    @classmethod
    def of(cls, selection: Rows, q: GridQuery) -> Page:
        total = int(selection.size)
        pages = max(1, math.ceil(total / q.per_page))
        _check(q.page <= pages, "page", str(q.page), f"1 to {pages}")
        start = (q.page - 1) * q.per_page
        return cls(rows=selection[start:start + q.per_page], number=q.page, pages=pages, total=total)


def _next_day(day: str) -> str:
    """The day after ``day`` (YYYY-MM-DD): ``time < it`` takes the whole of ``day`` and reads as ``ls --where``
    takes it (it was ``time < 2015-06-21U``, which the where box refused)."""
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
