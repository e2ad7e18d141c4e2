"""What was stored, from what, how and when: the log of a version and one commit's provenance.

Pure functions over an icechunk Repository, returning typed results (each with ``to_dict()`` for
``--json``). The provenance they read is each commit's :class:`~preprocess.rows.provenance.Provenance`
(read tolerantly: commits of older versions still read). Which commit added a row is
:mod:`preprocess.store.origins`; an item's lineage is :mod:`preprocess.store.lineage`; the
item-level difference of two versions is :mod:`preprocess.store.diff`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import icechunk as ic

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.core.jsonable import Json, JsonObject
from preprocess.rows import schema
from preprocess.rows.provenance import Provenance
from preprocess.store import refs
from preprocess.store.reader import Dataset
from preprocess.store.refs import Ref
from preprocess.store.storage import read_errors

ROOT_MESSAGE = "Repository initialized"


@dataclass(frozen=True)
class Commit:
    """One snapshot as the log shows it, with its provenance (None when preprocess did not make it)."""

    id: str
    parent: str | None
    written_at: datetime
    message: str
    refs: list[str]  # branches and tags pointing here now
    metadata: JsonObject = field(repr=False)  # exactly as stored (keys sorted)
    provenance: Provenance | None = field(repr=False)

    @property
    def kind(self) -> str:
        """"run", "watch", ... (the provenance's), "init" (the repository's first snapshot) or "other"."""
        if self.provenance is not None:
            return self.provenance.kind
        return "init" if self.parent is None else "other"

    @property
    def job_id(self) -> str:
        return self.provenance.job_id if self.provenance else ""

    @property
    def added(self) -> int | None:
        """Items stored by this commit."""
        return self.provenance.counts.stored if self.provenance else None

    @property
    def failed(self) -> int | None:
        return self.provenance.counts.failed if self.provenance else None

    @property
    def fingerprint(self) -> str:
        return self.provenance.fingerprint if self.provenance else ""

    @property
    def spec(self) -> str:
        """The spec's pipeline name."""
        return self.provenance.spec_info.pipeline.name if self.provenance else ""

    @property
    def model(self) -> str:
        return self.provenance.model.name if self.provenance else ""

    @property
    def branch(self) -> str:
        """The branch the job committed to."""
        return self.provenance.inputs.branch if self.provenance else ""

    @property
    def engine(self) -> str:
        """What ran the job, in words: ``pillow on cpu``, ``dali on gpu (jpegli 4:2:0: jpegli)``."""
        return engine_words(self.metadata.get("engine"))

    def to_dict(self, *, full: bool = False) -> JsonObject:
        d: JsonObject = {
            "id": self.id, "parent": self.parent, "written_at": self.written_at.isoformat(),
            "message": self.message, "kind": self.kind, "job_id": self.job_id, "added": self.added,
            "failed": self.failed, "fingerprint": self.fingerprint, "spec": self.spec, "model": self.model,
            "branch": self.branch, "refs": self.refs,
        }
        if full:
            d["metadata"] = self.metadata
        return d


def engine_words(engine: Json) -> str:
    """A recorded ``engine`` section in words: ``pillow on cpu, 2 lanes of 4 (jpegli 4:2:0 by jpegli)``:
    the engine on its device, its lanes, and which library encoded each of the spec's variants
    (``encoders``: a mapping, or the ``"variant: library, ..."`` text older versions wrote)."""
    if not isinstance(engine, Mapping):
        return ""
    name, device = str(engine.get("engine") or ""), str(engine.get("device") or "")
    words = " on ".join(p for p in (name, device) if p)
    lanes, batch = engine.get("lanes"), engine.get("lane_batch")
    if lanes not in (None, ""):
        words += f", {lanes} lane{'s' if str(lanes) != '1' else ''}"
        words += f" of {batch}" if batch not in (None, "") else ""
    encoders = engine.get("encoders")
    pairs: list[tuple[str, str]] = []
    if isinstance(encoders, Mapping):
        pairs = [(str(k), str(v)) for k, v in sorted(encoders.items())]
    elif isinstance(encoders, str) and encoders:
        pairs = [(v.strip(), lib.strip()) for part in encoders.split(", ") for v, _, lib in [part.rpartition(": ")]]
    if pairs:
        words += " (" + ", ".join(f"{v} by {lib}" if v else lib for v, lib in pairs) + ")"
    return words


def commit(info: ic.SnapshotInfo, labels: dict[str, list[str]] | None = None) -> Commit:
    md = canonical_metadata(info.metadata)
    return Commit(id=info.id, parent=info.parent_id, written_at=info.written_at, message=info.message,
                  refs=list((labels or {}).get(info.id, [])), metadata=md, provenance=Provenance.from_metadata(md))


def canonical(value: Json) -> Json:
    """``value`` with every mapping's keys in sorted order, recursively. icechunk hands a commit's
    metadata back in a different key order on every read; sorted, whatever is built from it (the
    provenance, ``to_dict()``, ``--json``) is the same bytes for the same content."""
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def canonical_metadata(metadata: Mapping[str, Json] | None) -> JsonObject:
    """A commit's metadata with every mapping's keys sorted (see :func:`canonical`)."""
    md = metadata or {}
    return {k: canonical(md[k]) for k in sorted(md)}


def check_format(repo: ic.Repository, target: Ref) -> None:
    """StorageError STORE_FORMAT when ``target`` holds something preprocess did not write."""
    with read_errors():
        schema.open_layout(refs.session(repo, target).store, writable=False)


@dataclass(frozen=True)
class Log:
    """:func:`log`: the commits of a ref's history, newest first, and whether the ref names the
    repository's first, empty snapshot (which is not a commit of a job, so it is not listed)."""

    ref: Ref
    commits: list[Commit]
    at_root: bool


def log(repo: ic.Repository, ref: str = "main", *, limit: int | None = None) -> list[Commit]:
    """The commits of ``ref``'s history, newest first (without the repository's first, empty snapshot).
    ``limit``: at most that many (ConfigError CLI_USAGE when it is below 1)."""
    return history_of(repo, ref, limit=limit).commits


def check_limit(limit: int | None, things: str) -> None:
    """A ``--limit`` on how many ``things`` to list is 1 or more (ConfigError CLI_USAGE): a negative one
    dropped the oldest commit once, and 0 would list none and read as "there are none"."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: the number of {things} to list must be 1 or more",
                          code=ErrorCode.CLI_USAGE, hint="give --limit 1 or more, or leave it out for every one")


def history_of(repo: ic.Repository, ref: str = "main", *, limit: int | None = None) -> Log:
    """:func:`log`, with the ref it resolved and whether that ref is the repository's first snapshot."""
    check_limit(limit, "commits")
    target = refs.resolve_ref(repo, ref)
    check_format(repo, target)
    labels = refs.labels(repo)
    line = refs.history(repo, snapshot=target.snapshot)
    out = [commit(info, labels) for info in line if info.parent_id is not None]
    return Log(target, out[:limit] if limit is not None else out, at_root=line[0].parent_id is None)


@dataclass(frozen=True)
class VersionInfo:
    """What a version holds."""

    items: int
    failures: int
    models: dict[str, int]  # embedding model -> dimension

    def to_dict(self) -> JsonObject:
        return {"items": self.items, "failures": self.failures, "models": self.models}


@dataclass(frozen=True)
class ShownCommit:
    """:func:`show`: one commit, the ref it was reached by, and what its version holds."""

    ref: Ref
    commit: Commit
    version: VersionInfo
    reachable: bool = True  # in the history of some branch or tag (else a reset or a deletion left it: gc deletes it)

    def to_dict(self) -> JsonObject:
        return {**self.ref.to_dict(), **self.commit.to_dict(full=True), "holds": self.version.to_dict(),
                "reachable": self.reachable}


def show(repo: ic.Repository, ref: str) -> ShownCommit:
    """One commit's full provenance, plus what the version it made holds."""
    target = refs.resolve_ref(repo, ref)
    ds = Dataset(refs.session(repo, target), ref=ref)
    c = commit(refs.snapshot_info(repo, target.snapshot), refs.labels(repo))
    reachable = target.kind != "snapshot" or bool(c.refs) or target.snapshot in refs.snapshot_ids(repo)[1]
    return ShownCommit(target, c, VersionInfo(len(ds), ds.num_failures, ds.models), reachable)


def merge_base(repo: ic.Repository, a: Ref, b: Ref) -> str | None:
    """The newest snapshot in both histories (None when they share nothing but the first, empty one)."""
    ours = [s.id for s in refs.history(repo, snapshot=a.snapshot)]
    theirs = {s.id for s in refs.history(repo, snapshot=b.snapshot)}
    return next((s for s in ours if s in theirs), None)
