"""One image's lineage (``show --item``, :func:`preprocess.history.lineage`): the rows of a version
that a query names, each with the commit that added it (:mod:`preprocess.store.origins`), and that
commit's spec, model, engine and inputs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import icechunk as ic

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.core.jsonable import JsonObject
from preprocess.rows.provenance import Provenance
from preprocess.rows.schema import ITEM_COLUMNS, item_key
from preprocess.store import lookup, refs
from preprocess.store.cells import Cell, Record, record
from preprocess.store.history import Commit, canonical_metadata, commit
from preprocess.store.origins import origins
from preprocess.store.reader import Dataset
from preprocess.store.refs import Ref

_MADE_BY = ("spec", "spec_path", "spec_sha256", "model_info", "software", "engine", "inputs")


@dataclass(frozen=True)
class MadeBy:
    """The commit that added a row (None only for a row of a store that was not made by appends)."""

    commit: Commit | None

    @property
    def provenance(self) -> Provenance | None:
        return self.commit.provenance if self.commit else None

    def to_dict(self) -> JsonObject:
        c, p = self.commit, self.provenance
        out: JsonObject = {"commit": {k: v for k, v in c.to_dict().items() if k != "refs"} if c else None}
        if p is None:
            return out | dict.fromkeys(_MADE_BY)
        return out | {"spec": p.spec, "spec_path": p.spec_path, "spec_sha256": p.spec_sha256,
                      "model_info": p.model.model_dump(mode="json"), "software": p.software,
                      "engine": p.engine.model_dump(mode="json"), "inputs": p.inputs.model_dump(mode="json")}


@dataclass(frozen=True)
class LineageItem:
    """A stored row that matched, with everything that made it."""

    index: int
    row: Record  # every field of the row (not its bytes or embedding)
    made_by: MadeBy

    @property
    def key(self) -> str:
        return item_key(str(self.row["source_sha256"]), str(self.row["fingerprint"]))

    def _part(self, part: str) -> dict[str, Cell]:
        return {c.name: self.row[c.name] for c in ITEM_COLUMNS if c.part == part and c.name in self.row}

    @property
    def source(self) -> dict[str, Cell]:
        return self._part("source")

    @property
    def stored(self) -> dict[str, Cell]:
        return self._part("stored")

    def to_dict(self) -> JsonObject:
        return {"index": self.index, "key": self.key, "source": self.source, "stored": self.stored,
                "fingerprint": self.row["fingerprint"], "model": self.row["model"], "job_id": self.row["job_id"],
                **self.made_by.to_dict()}


@dataclass(frozen=True)
class LineageFailure:
    """A recorded failure that matched, with the commit that recorded it."""

    index: int
    row: Record  # every field of the failure row
    made_by: MadeBy

    def to_dict(self) -> JsonObject:
        return {**self.row, "index": self.index, **self.made_by.to_dict()}


@dataclass(frozen=True)
class Lineage:
    """:func:`lineage`: the rows and failures of a version whose source matched a query."""

    ref: Ref
    query: str
    items: list[LineageItem]
    failures: list[LineageFailure]
    same_as: str = ""  # the query named a second copy of a source of one job: the source its row is under
    changed: list[int] = field(default_factory=list)  # items of the query's path whose source has changed since
    file_sha256: str | None = None  # the content of the file the query names, now

    def to_dict(self) -> JsonObject:
        return {**self.ref.to_dict(), "query": self.query, "items": [r.to_dict() for r in self.items],
                "failures": [f.to_dict() for f in self.failures], "same_as": self.same_as or None,
                "changed_since_stored": self.changed, "file_sha256": self.file_sha256}


class Commits:
    """Commits by snapshot id, each read once (with the refs that point at it now)."""

    def __init__(self, repo: ic.Repository) -> None:
        self._repo = repo
        self._labels: dict[str, list[str]] | None = None
        self._known: dict[str, Commit] = {}

    def __getitem__(self, snapshot: str) -> Commit:
        if snapshot not in self._known:
            if self._labels is None:
                self._labels = refs.labels(self._repo)
            self._known[snapshot] = commit(refs.snapshot_info(self._repo, snapshot), self._labels)
        return self._known[snapshot]


def lineage(repo: ic.Repository, query: str, ref: str = "main") -> Lineage:
    """Every stored row (and recorded failure) of ``ref`` that ``query`` names, each with the commit
    that added it and the spec and model that made it. ``query``: a source path or file name, a file
    on disk (matched by content: the source's or the stored bytes'), an exported file's name, or 8+
    hex digits of a sha256 (the source's, else the stored bytes'): see :mod:`preprocess.store.lookup`.

    NotFoundError ITEM_MISSING when nothing matches.
    """
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    hits, same_as = lookup.find(ds, query), ""
    if not hits and (same_as := _duplicate_of(repo, target, query)):
        hits = lookup.find(ds, same_as)
    if not hits:
        raise NotFoundError(f"no stored image or failure of {ref!r} comes from {query!r}", code=ErrorCode.ITEM_MISSING,
                            hint="give a source path or file name, a source or stored (exported) file, or 8+ hex "
                                 "digits of its sha256")
    added, commits = origins(repo, target.snapshot), Commits(repo)
    items, failures = ds.items_at(hits.items), ds.failures_at(hits.failures)
    found = [LineageItem(i, record(items, k), MadeBy(commits[added.item(i)])) for k, i in enumerate(hits.items)]
    failed = [LineageFailure(i, record(failures, k), MadeBy(commits[added.failure(i)]))
              for k, i in enumerate(hits.failures)]
    return Lineage(target, query, found, failed, same_as, hits.changed, hits.file_sha256)


def _duplicate_of(repo: ic.Repository, target: Ref, query: str) -> str:
    """The source whose row holds the content of the second copy ``query`` names (its path or file name),
    as the commits of ``target``'s history recorded it (``inputs.duplicates``); "" when none did."""
    text = names.real(query.strip())
    for info in refs.history(repo, snapshot=target.snapshot):
        p = Provenance.from_metadata(canonical_metadata(info.metadata))
        for path, first in ((p.inputs.duplicates or {}).items() if p is not None else ()):
            real = names.real(path)
            if text in (real, os.path.basename(real)):
                return first
    return ""
