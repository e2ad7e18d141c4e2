"""Reading a dataset with plain zarr + icechunk only (no preprocess code), for tests that check what
is really on disk: typed accessors, so the tests type-check."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import zarr

from preprocess.rows.provenance import QualityStats


def open_root(store: Path | str, ref: str = "main", *, snapshot: str | None = None) -> zarr.Group:
    """The root group of branch ``ref`` (or of ``snapshot``) of the local store, read-only."""
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(store)))
    session = repo.readonly_session(snapshot_id=snapshot) if snapshot else repo.readonly_session(ref)
    return zarr.open_group(session.store, mode="r")


def array(group: zarr.Group, path: str) -> zarr.Array[Any]:
    node = group[path]
    assert isinstance(node, zarr.Array), f"{path} is not an array"
    return node


def group(root: zarr.Group, path: str) -> zarr.Group:
    node = root[path]
    assert isinstance(node, zarr.Group), f"{path} is not a group"
    return node


def column(group: zarr.Group, path: str) -> np.ndarray[Any, Any]:
    """A whole 1-D (or 2-D) array as numpy."""
    return np.asarray(array(group, path)[:])


def blob(group: zarr.Group, path: str, i: int) -> bytes:
    """Row ``i`` of a bytes array (zarr returns a 0-d object array for ``a[i]``: read ``a[i:i+1]``)."""
    return bytes(np.asarray(array(group, path)[i : i + 1])[0])


# Sections whose keys vary: the spec's own, versions, stages, what each engine describes of itself.
# a commit that stored rows: its quality has each checked view's figures (``views``)
STORED = QualityStats(views={"whole": {"min": 1.0, "mean": 1.0}})
FREE_FORM = frozenset({"spec", "software", "timings", "engine", "quality.views"})  # keys: data (views, ...)


def shape(metadata: Mapping[str, Any], prefix: str = "") -> set[str]:
    """A commit metadata's key paths (``counts.stored``, ``watch.reason``...), the free-form sections'
    own keys left out: two commits with the same shape record the same provenance fields."""
    out: set[str] = set()
    for key, value in metadata.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, Mapping) and path not in FREE_FORM:
            out |= shape(value, f"{path}.")
    return out
