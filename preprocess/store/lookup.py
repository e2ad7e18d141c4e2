"""Finding a version's rows by where they came from (``show --item``, ``Dataset.find``, the lineage).

A query matches an item row when it is:

- the row's ``source_path`` (as recorded: see the path rule in :mod:`preprocess.sources.files`), the same
  path typed relative, with ``./`` or through a symlinked folder, or just its file name; a name that is
  not UTF-8 may be typed as it is or as it is printed (quoted: :mod:`preprocess.core.names`);
- 8+ hex digits (any case) starting the source's sha256; when no source sha256 starts with them, the
  sha256 of the **stored** bytes (this reads every stored image of the version: slow on large ones);
- a file on disk, matched by content: its sha256 is the source's, or the stored bytes' (only rows
  whose stored size equals the file's are read);
- an exported file's name, ``<source sha256[:16]>-<fingerprint>.<ext>`` (``preprocess export``),
  wherever the file is now.

Failure rows match the same way, by path, name, source sha256 or a source file's content (they have
no stored bytes). Only a regular file is read as a query (never a FIFO or a device).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from preprocess.core import names
from preprocess.rows.schema import Values
from preprocess.sources.files import sha256_file

_HEX = re.compile(r"^[0-9a-f]{8,64}\Z")
_EXPORTED = re.compile(r"^(?P<sha>[0-9a-f]{16})-(?P<fp>[0-9A-Za-z]{1,64})(?:-\d+)?\.[0-9a-z]{1,8}\Z")

type Mask = NDArray[np.bool_]  # one flag per row


class Rows(Protocol):
    """What is searched: a version's columns and stored bytes (a :class:`preprocess.store.Dataset`)."""

    def __len__(self) -> int: ...
    def items_table(self, fields: Sequence[str] | None = None) -> dict[str, Values]: ...
    def failures_table(self, fields: Sequence[str] | None = None) -> dict[str, Values]: ...
    def jpeg(self, i: int) -> bytes: ...


@dataclass(frozen=True)
class Matches:
    """Row numbers of the items and of the failures that matched, in row order."""

    items: list[int]
    failures: list[int]
    changed: list[int] = field(default_factory=list)  # items recorded under the query's path, whose content differs
    file_sha256: str | None = None  # the content of the file the query names, now

    def __bool__(self) -> bool:
        return bool(self.items or self.failures)


@dataclass(frozen=True)
class _Query:
    text: str
    hex: str | None  # lower-case hex digits, when the query is 8-64 of them
    paths: frozenset[str]  # the spellings of a local path that a row may have recorded
    file_sha256: str | None  # the content of a regular file the query names
    file_size: int


def _query(text: str) -> _Query:
    q = names.real(text.strip())  # the name itself, also when pasted as printed ("caf\351.jpg")
    lower = q.lower()
    local = Path(q).expanduser()
    paths = {q, os.path.abspath(local), os.path.realpath(local),
             os.path.join(os.path.realpath(local.parent), local.name)}
    sha, size = None, 0
    try:
        st = os.stat(local)
        if stat.S_ISREG(st.st_mode):
            sha, size = sha256_file(local), st.st_size
    except (OSError, ValueError):
        pass
    return _Query(q, lower if _HEX.match(lower) else None, frozenset(paths), sha, size)


def find(ds: Rows, query: str) -> Matches:
    """The rows of ``ds`` whose source (or stored image) ``query`` names; see the module's docstring."""
    q = _query(query)
    if not q.text:
        return Matches([], [])
    items = ds.items_table(["source_path", "source_sha256", "fingerprint", "bytes"])
    failures = ds.failures_table(["source_path", "source_sha256"])
    item_paths = _real(items["source_path"])
    hit = _by_source(q, item_paths, items["source_sha256"])
    failed = _by_source(q, _real(failures["source_path"]), failures["source_sha256"])
    exported = _EXPORTED.match(Path(q.text).name)
    if exported:
        hit |= (_prefix(items["source_sha256"], exported["sha"])
                & (np.asarray(items["fingerprint"], dtype=object) == exported["fp"]))
    if q.file_sha256 is not None:
        hit |= _stored_is(ds, q.file_sha256, np.flatnonzero(items["bytes"] == q.file_size), len(ds))
    if q.hex is not None and not hit.any() and not failed.any():
        hit |= _stored_is(ds, q.hex, np.arange(len(ds)), len(ds))
    changed: list[int] = []
    if q.file_sha256 is not None:  # the file is there: rows of its path that hold other content than it has now
        at_path = np.isin(item_paths, list(q.paths))
        other = np.asarray(items["source_sha256"], dtype=object) != q.file_sha256
        changed = np.flatnonzero(at_path & other).tolist()
    return Matches(np.flatnonzero(hit).tolist(), np.flatnonzero(failed).tolist(), changed, q.file_sha256)


def _real(paths: Values) -> NDArray[np.object_]:
    """The names the stored values stand for (:func:`names.real`)."""
    return np.array([names.real(str(p)) for p in paths], dtype=object)


def _by_source(q: _Query, objects: NDArray[np.object_], shas: Values) -> Mask:
    files = np.array([Path(p).name for p in objects], dtype=object)
    hit = np.isin(objects, list(q.paths)) | (files == q.text)
    if q.hex is not None:
        hit |= _prefix(shas, q.hex)
    if q.file_sha256 is not None:
        hit |= np.asarray(shas, dtype=object) == q.file_sha256
    return np.asarray(hit, dtype=bool)


def _prefix(shas: Values, prefix: str) -> Mask:
    return np.array([str(s).startswith(prefix) for s in shas], dtype=bool)


def _stored_is(ds: Rows, sha_prefix: str, rows: NDArray[np.intp], n: int) -> Mask:
    """Which of ``rows`` hold stored bytes whose sha256 starts with ``sha_prefix``."""
    hit = np.zeros(n, dtype=bool)
    for i in rows:
        if hashlib.sha256(ds.jpeg(int(i))).hexdigest().startswith(sha_prefix):
            hit[int(i)] = True
    return hit
