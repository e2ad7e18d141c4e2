"""A version's rows that match an expression (``preprocess ls STORE [REF] --where ...``), each with
the commit that added it; and the columns an expression reads, for any reader of a version (the web
UI's search reads the same, through its cache)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import icechunk as ic
import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, did_you_mean
from preprocess.core.jsonable import JsonObject
from preprocess.rows.provenance import Provenance
from preprocess.store import refs
from preprocess.store.cells import Record, record
from preprocess.store.history import canonical_metadata, check_limit
from preprocess.store.origins import origins
from preprocess.store.reader import Dataset
from preprocess.store.refs import Ref
from preprocess.store.where import (
    ALIASES,
    FIELDS,
    HISTORY,
    ITEM_FIELDS,
    Column,
    Columns,
    Where,
    field_values,
    is_number,
    sort_order,
)

LISTED = ("source_path", "status", "format", "width", "height", "bytes", "quality", "similarity",
          "similarity_crops", "capture_time", "camera_model", "fingerprint")  # the fields `ls` shows by default
_STR = np.dtypes.StringDType()


def spec_names(repo: ic.Repository, snapshot: str) -> dict[str, str]:
    """Spec fingerprint -> its pipeline name, for the specs in ``snapshot``'s history."""
    out: dict[str, str] = {}
    for info in reversed(refs.history(repo, snapshot=snapshot)):
        p = Provenance.from_metadata(canonical_metadata(info.metadata))
        if p is not None and p.fingerprint:
            out.setdefault(p.fingerprint, p.spec_info.pipeline.name)
    return out


def version_columns(repo: ic.Repository, snapshot: str, read: Callable[[str], Column]) -> Columns:
    """The columns an expression may ask for: ``read(name)`` for a row field, and those that are not
    stored: ``commit`` (the snapshot that added each row), ``spec_name`` (each row's spec's name) and
    :data:`~preprocess.store.where.HISTORY` (the snapshot ids of the version's history, oldest first)."""
    made: dict[str, Column] = {}

    def column(name: str) -> Column:
        if name == "commit":
            if name not in made:
                made[name] = np.asarray(origins(repo, snapshot).item_commits(), dtype=_STR)
            return made[name]
        if name == HISTORY:
            return np.asarray(origins(repo, snapshot).history, dtype=_STR)
        if name == "spec_name":
            if name not in made:
                names = spec_names(repo, snapshot)
                made[name] = np.asarray([names.get(str(f), "") for f in read("fingerprint").tolist()], dtype=_STR)
            return made[name]
        return read(name)

    return column


@dataclass(frozen=True)
class Listing:
    """:func:`ls`: the matching rows of a version, in order, each with ``row`` and ``commit``."""

    ref: Ref
    where: str
    total: int  # rows in the version
    matched: int  # rows that match (``rows`` may be fewer: ``limit``)
    rows: list[Record]

    def to_dict(self) -> JsonObject:
        return {**self.ref.to_dict(), "where": self.where, "total": self.total, "matched": self.matched,
                "rows": list(self.rows)}


def check_field(name: str, what: str) -> None:
    """``name`` is a field ``--where`` takes (a row field, or one of its aliases: name, folder, camera ...)."""
    if name not in FIELDS:
        raise ConfigError(f"{what} {name!r}: no such field{did_you_mean(name, FIELDS)}",
                          code=ErrorCode.STORE_FIELD, hint=f"fields: {', '.join(FIELDS)}")


@dataclass(frozen=True)
class Order:
    """``ls``'s order: by a field (``row``: as stored), a NaN or an empty text last either way."""

    field: str = "row"
    descending: bool = False


def ls(repo: ic.Repository, ref: str = "main", where: Where | None = None, *, order: Order = Order(),  # noqa: PLR0913 (options, by keyword)
       limit: int | None = None, fields: tuple[str, ...] = LISTED) -> Listing:
    """The rows of version ``ref`` that ``where`` selects (every row without it), in ``order``, at
    most ``limit``; each with ``fields`` (:data:`LISTED`, or e.g. every row field: ``ITEM_FIELDS``; and the
    field ordered by), its ``row`` number and the ``commit`` that added it."""
    where, sort, descending = where or Where(), order.field, order.descending
    check_field(sort, "--sort")
    check_limit(limit, "rows")
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    cache: dict[str, Column] = {}

    def read(name: str) -> Column:
        if name not in cache:
            cache[name] = ds.items_table([name])[name]
        return cache[name]

    column = version_columns(repo, target.snapshot, read)
    picked = np.flatnonzero(where.mask(column, len(ds)))
    if sort != "row":
        picked = picked[sort_order(field_values(sort, column)[picked], numeric=is_number(sort),
                                   descending=descending)]
    elif descending:
        picked = picked[::-1]
    shown = picked[:limit] if limit is not None else picked
    real = ALIASES.get(sort, sort)
    fields = (*fields, real) if real in ITEM_FIELDS and real not in fields else fields  # the order's own column
    table = ds.items_at(shown, [f for f in fields if f not in ("row", "commit")])
    commits = column("commit")
    rows = [{"row": int(r), **record(table, k), "commit": str(commits[int(r)])} for k, r in enumerate(shown)]
    return Listing(target, str(where), len(ds), int(picked.size), rows)
