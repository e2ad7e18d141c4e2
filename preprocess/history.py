"""A dataset's history from Python (a notebook, a script): the public API behind ``preprocess log``,
``show``, ``show --item``, ``diff``, ``branch`` and ``tag``.

Each function takes the dataset (a local path, ``s3://bucket/prefix``, or an open icechunk
``Repository``) and REFs as the command line does (a branch, a tag, a snapshot id or a unique
prefix of 4+ characters, ``REF~N``), and returns typed results; each result's ``to_dict()`` is
what ``--json`` prints::

    from preprocess import history
    history.log("cams.icechunk")[0].message         # newest commit first
    history.diff("cams.icechunk", "v1", "main").added
    history.lineage("cams.icechunk", "IMG_0042.jpg").items[0].made_by.provenance
    history.diff("cams.icechunk", "jpeg", "avif").pairs[0].words()   # the same source under two specs

Errors are :class:`preprocess.core.errors.PreprocessError` subclasses with a stable ``code`` and a
``hint`` (``REF_MISSING``, ``ITEM_MISSING``, ``STORE_MISSING``, ...). For a version's rows see
:func:`preprocess.store.open_dataset` (``Dataset.to_pandas()``, ``Dataset.find()``).
"""

from __future__ import annotations

import icechunk as ic

from preprocess.store import diff as _diff
from preprocess.store import history as _history
from preprocess.store import lineage as _lineage
from preprocess.store import origins as _origins
from preprocess.store import refs as _refs
from preprocess.store.diff import Diff, ItemBrief, ItemChange, Pair, SpecBrief
from preprocess.store.history import Commit, ShownCommit, VersionInfo
from preprocess.store.lineage import Lineage, LineageFailure, LineageItem, MadeBy
from preprocess.store.origins import Added
from preprocess.store.refs import Ref, RefInfo
from preprocess.store.storage import open_repo

__all__ = [
    "Added",
    "Commit",
    "Diff",
    "ItemBrief",
    "ItemChange",
    "Lineage",
    "LineageFailure",
    "LineageItem",
    "MadeBy",
    "Pair",
    "Ref",
    "RefInfo",
    "ShownCommit",
    "SpecBrief",
    "VersionInfo",
    "added_by",
    "branches",
    "diff",
    "lineage",
    "log",
    "resolve",
    "show",
    "tags",
]

type Store = str | ic.Repository


def _repo(store: Store) -> ic.Repository:
    return store if isinstance(store, ic.Repository) else open_repo(store, create=False)


def log(store: Store, ref: str = "main", *, limit: int | None = None) -> list[Commit]:
    """The commits of ``ref``'s history, newest first, each with its provenance (``.provenance``)."""
    return _history.log(_repo(store), ref, limit=limit)


def show(store: Store, ref: str = "main") -> ShownCommit:
    """One commit (the one ``ref`` names): its full provenance and what its version holds."""
    return _history.show(_repo(store), ref)


def diff(store: Store, a: str, b: str) -> Diff:
    """The item-level difference from version ``a`` to ``b`` (any two, diverged branches too):
    added, removed and changed rows, bytes, failures, specs and models."""
    return _diff.diff(_repo(store), a, b)


def lineage(store: Store, query: str, ref: str = "main") -> Lineage:
    """The rows (and failures) of ``ref`` that ``query`` names, each with the commit, spec and model
    that made it. ``query``: a source path or file name, a source or stored (exported) file on disk,
    or 8+ hex digits of the source's or the stored bytes' sha256."""
    return _lineage.lineage(_repo(store), query, ref)


def added_by(store: Store, ref: str = "main") -> list[Added]:
    """Every commit of ``ref``'s history, oldest first, with the rows it added (``.items``, a range
    of row numbers of that version; ``.failures`` likewise): the commit that added row ``i`` of
    ``open_dataset(store, ref=ref)`` is the one whose ``items`` holds ``i`` (also
    ``Dataset.added_by(i)``). The repository's first, empty snapshot is the first entry."""
    repo = _repo(store)
    return _origins.origins(repo, _refs.resolve_ref(repo, ref).snapshot).commits()


def branches(store: Store) -> list[RefInfo]:
    """Every branch with its tip commit (id, time, message), by name."""
    return _refs.list_refs(_repo(store), "branch")


def tags(store: Store) -> list[RefInfo]:
    """Every tag with the commit it names, by name."""
    return _refs.list_refs(_repo(store), "tag")


def resolve(store: Store, ref: str) -> Ref:
    """What ``ref`` names: its kind (branch, tag, snapshot) and snapshot id."""
    return _refs.resolve_ref(_repo(store), ref)
