"""Reading one version of the dataset (a branch, tag or snapshot id or prefix, or ``REF~N``), read-only.

``len(ds)``, ``ds[i]`` (every field, the stored bytes and, given a ``decode``, the decoded image), iteration, whole
columns (:meth:`Dataset.items_table`), embeddings, a pandas DataFrame (:meth:`Dataset.to_pandas`,
with the optional ``notebook`` extra) and rows by source or stored file (:meth:`Dataset.find`).
For PyTorch see :mod:`preprocess.torchdata`.

The store never decodes an image: a face that wants ``ds[i]["image"]`` passes ``decode`` (the public
:func:`preprocess.open_dataset` passes the pipeline's :func:`~preprocess.pipeline.images.decode_rgb`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, cast

import icechunk as ic
import numpy as np
from numpy.typing import NDArray
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.types import ArrayV3

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError, StorageError, did_you_mean
from preprocess.rows import schema
from preprocess.rows.records import Item, ItemRecord, StoredItem, plain, row_number
from preprocess.rows.schema import EMBEDDING, FAILURE_COLUMNS, FAILURES, ITEM_COLUMNS, ITEMS, Column, Values
from preprocess.sources.location import Location, Where
from preprocess.store import lookup
from preprocess.store.origins import origins
from preprocess.store.refs import resolve_ref, session
from preprocess.store.storage import open_repo, read_errors

if TYPE_CHECKING:
    import pandas as pd

# stored bytes and the (width, height) their row records -> an image (the face's choice of decoder, which
# refuses bytes whose header gives another size)
type Decode = Callable[[bytes, tuple[int, int]], object]
type RowNumbers = Sequence[int] | NDArray[np.integer]  # which rows (any order, repeats allowed)


class Dataset:
    """A read-only view of one snapshot: columns, single items, failures and embeddings."""

    def __init__(self, session: ic.Session, *, ref: str = "", decode: Decode | None = None,
                 repo: ic.Repository | None = None) -> None:
        self._session = session
        self._decode = decode
        self._repo = repo  # for added_by: the history the snapshot belongs to
        self.ref = ref
        self.snapshot_id: str = str(session.snapshot_id)
        with read_errors():
            root = schema.open_layout(session.store, writable=False)
        self._items: dict[str, ArrayV3] = {}
        self._failures: dict[str, ArrayV3] = {}
        self._emb: dict[str, ArrayV3] = {}
        if root is not None:
            for path, target in ((ITEMS, self._items), (EMBEDDING, self._emb), (FAILURES, self._failures)):
                group = schema.subgroup(root, path)
                if group is not None:
                    target.update(schema.arrays(group))
        self._n = _rows(self._items)
        self._n_failures = _rows(self._failures)
        self._cache: dict[str, Values] | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def num_failures(self) -> int:
        return self._n_failures

    @property
    def image_crc(self) -> bool:
        """Whether each stored image carries a CRC32C that every read of it checks (stores made since
        2026-12-07; an older one reads its bytes as they are)."""
        arr = self._items.get("jpeg")
        return arr is not None and any(isinstance(c, Crc32cCodec) for c in arr.compressors)

    @property
    def checksummed(self) -> bool:
        """Whether every other array of the version (the fields, the failures, the embeddings) carries zstd's
        frame checksum, which every read of it checks (stores made since 2026-12-07)."""
        arrays = [a for name, a in self.arrays().items() if name != f"{ITEMS}/jpeg"]
        return bool(arrays) and all(any(isinstance(c, ZstdCodec) and c.checksum for c in a.compressors)
                                    for a in arrays)

    def arrays(self) -> dict[str, ArrayV3]:
        """Every array of the version by its path (``items/quality``, ``items/embedding/MODEL``,
        ``failures/code``), item arrays first."""
        return ({f"{ITEMS}/{k}": a for k, a in self._items.items()}
                | {f"{EMBEDDING}/{k}": a for k, a in self._emb.items()}
                | {f"{FAILURES}/{k}": a for k, a in self._failures.items()})

    def read_rows(self, path: str, start: int, stop: int) -> Values:
        """Rows ``start:stop`` of the array at ``path`` (:meth:`arrays`), read as stored (STORE_IO when damaged)."""
        return _read(self.arrays()[path], slice(start, stop))

    @property
    def models(self) -> dict[str, int]:
        """Embedding model name -> dimension."""
        return {m: int(a.shape[1]) for m, a in self._emb.items()}

    def items_table(self, fields: Sequence[str] | None = None) -> dict[str, Values]:
        """Item columns by field name. By default every field except ``jpeg`` (the image bytes:
        ask for it by name). Strings come back as numpy StringDType arrays, bytes as object arrays."""
        names = [c.name for c in ITEM_COLUMNS if c.name != "jpeg"] if fields is None else list(fields)
        return _table(self._items, ITEM_COLUMNS, names, self._n)

    def failures_table(self, fields: Sequence[str] | None = None) -> dict[str, Values]:
        names = [c.name for c in FAILURE_COLUMNS] if fields is None else list(fields)
        return _table(self._failures, FAILURE_COLUMNS, names, self._n_failures)

    def items_at(self, rows: RowNumbers,
                 fields: Sequence[str] | None = None) -> dict[str, Values]:
        """Like :meth:`items_table`, for the given rows only (any order, repeats allowed): reads
        only the chunks holding them (one image's bytes each for ``jpeg``), not whole columns."""
        names = [c.name for c in ITEM_COLUMNS if c.name != "jpeg"] if fields is None else list(fields)
        return _take(self._items, ITEM_COLUMNS, names, rows, self._n)

    def failures_at(self, rows: RowNumbers,
                    fields: Sequence[str] | None = None) -> dict[str, Values]:
        """Like :meth:`failures_table`, for the given rows only."""
        names = [c.name for c in FAILURE_COLUMNS] if fields is None else list(fields)
        return _take(self._failures, FAILURE_COLUMNS, names, rows, self._n_failures)

    def item(self, i: int) -> StoredItem:
        """Every field of item ``i`` (negative counts from the end) as Python values, with its
        ``jpeg`` bytes and its ``embedding`` (float32 [D]) under its own model."""
        i = self._index(i)
        out: dict[str, object] = {}
        for col in ITEM_COLUMNS:
            arr = self._items.get(col.name)
            out[col.name] = plain(_read(arr, slice(i, i + 1))[0], keep_nan=True) if arr is not None else col.fill
        emb = self._emb.get(str(out["model"]))
        out["embedding"] = _read(emb, i).astype(np.float32) if emb is not None else None
        return cast(StoredItem, out)

    def __getitem__(self, i: int) -> Item:
        """Item ``i``: every field, its stored ``jpeg`` bytes, and ``image`` (the bytes decoded by the
        dataset's ``decode``; absent when it has none)."""
        out = cast(Item, self.record(i))
        out["jpeg"] = self.jpeg(i)
        if self._decode is not None:
            out["image"] = self._decode(out["jpeg"], (int(out["width"]), int(out["height"])))
        return out

    def __iter__(self) -> Iterator[Item]:
        for i in range(self._n):
            yield self[i]

    def record(self, i: int) -> ItemRecord:
        """Item ``i``'s fields (not its bytes or embedding), from columns read once and cached."""
        i = self._index(i)
        if self._cache is None:
            self._cache = self.items_table()
        fields = {name: plain(col[i], keep_nan=True) for name, col in self._cache.items()}
        return cast(ItemRecord, fields | {"index": i})

    def jpeg(self, i: int) -> bytes:
        """The stored bytes of item ``i`` (JPEG, or the source's own bytes for source/passthrough)."""
        i = self._index(i)
        return bytes(_read(self._items["jpeg"], slice(i, i + 1))[0])

    def _index(self, i: int) -> int:
        i = row_number(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"item {i} out of range: the dataset has {self._n} items")
        return i % self._n

    def added_by(self, i: int) -> str:
        """The snapshot id of the commit that added item ``i`` (:mod:`preprocess.store.origins`: the same
        answer as ``show --item``, the lineage API and the web UI). Needs a dataset opened from a
        repository (:func:`open_dataset`, :func:`dataset_at`)."""
        if self._repo is None:
            raise ConfigError("this dataset was opened from a session, without its history",
                              code=ErrorCode.STORE_FIELD,
                              hint="open it with open_dataset(...) or dataset_at(repo, ...)")
        return origins(self._repo, self.snapshot_id).item(self._index(i))

    def find(self, query: str) -> list[int]:
        """The item rows ``query`` names: a source path or file name, a source or stored file on disk
        (by content), an exported file's name, or 8+ hex digits of the source's (else the stored
        bytes') sha256. See :mod:`preprocess.store.lookup`; failures: :func:`preprocess.history.lineage`."""
        return lookup.find(self, query).items

    def to_pandas(self, fields: Sequence[str] | None = None, *, embeddings: bool = False) -> pd.DataFrame:
        """One row per item with its fields (default: all but the stored bytes), indexed by row
        number (``index``, what ``ds[i]`` takes); text columns have pandas' ``str`` dtype.
        ``embeddings=True`` adds an ``embedding`` column: each row's vector under its own model
        (float32 [D]; ``np.stack(df["embedding"])`` is the [N, D] matrix when there is one model).
        Needs pandas: ``pip install 'preprocess[notebook]'`` (ConfigError PANDAS_MISSING otherwise)."""
        pd = _pandas()
        frame = pd.DataFrame({k: _series(v) for k, v in self.items_table(fields).items()},
                             index=pd.RangeIndex(self._n, name="index"))
        if embeddings:
            frame["embedding"] = self._own_embeddings()
        return frame

    def failures_to_pandas(self) -> pd.DataFrame:
        """The recorded failures as a DataFrame (one row each: path, sha256, code, message, ...)."""
        pd = _pandas()
        return pd.DataFrame({k: _series(v) for k, v in self.failures_table().items()},
                            index=pd.RangeIndex(self._n_failures, name="index"))

    def _own_embeddings(self) -> list[NDArray[np.float32] | None]:
        """Each item's embedding under the model that made its row (None when absent)."""
        models = self.items_table(["model"])["model"]
        out: list[NDArray[np.float32] | None] = [None] * self._n
        for name in self._emb:
            rows = np.flatnonzero(models == name)
            if rows.size:
                vectors = self.embedding(name)
                for i in rows:
                    out[int(i)] = vectors[int(i)]
        return out

    def embedding(self, model: str) -> NDArray[np.float32]:
        """All items' embeddings under ``model``: float32 [N, D], NaN rows for other models' items."""
        arr = self._emb.get(model)
        if arr is None:
            raise NotFoundError(f"no embeddings for model {model!r} in this dataset (it has "
                              f"{sorted(self._emb) or 'none'})", code=ErrorCode.STORE_NO_MODEL)
        return _read(arr).astype(np.float32, copy=False)


def open_dataset(location: Where | Location, *, ref: str = "main", decode: Decode | None = None) -> Dataset:
    """Open ``ref`` (a branch, a tag, a snapshot id or unique prefix, or ``REF~N``) of the dataset at
    ``location`` (a local path or ``s3://bucket/prefix``), read-only, pinned to that snapshot."""
    repo = open_repo(location, create=False)
    return dataset_at(repo, ref, decode=decode)


def dataset_at(repo: ic.Repository, ref: str = "main", *, decode: Decode | None = None) -> Dataset:
    """Like :func:`open_dataset`, for an open repository. ``ref`` is resolved once: the dataset
    reads that snapshot even if the branch moves later."""
    target = resolve_ref(repo, ref)
    return Dataset(session(repo, target), ref=ref, decode=decode, repo=repo)


def _pandas() -> ModuleType:
    try:
        pandas = import_module("pandas")
    except ImportError:
        raise ConfigError("to_pandas() needs pandas, which is not installed", code=ErrorCode.PANDAS_MISSING,
                          hint="pip install 'preprocess[notebook]' (or pandas itself)") from None
    return pandas


def _series(column: Values) -> Values:
    """A column as pandas takes it: numpy's variable-width strings become Python str objects (pandas
    then gives them its ``str`` dtype)."""
    return column.astype(object) if column.dtype.kind == "T" else column


def _unknown_field(name: str, known: Sequence[str]) -> ConfigError:
    return ConfigError(f"no field {name!r}{did_you_mean(name, known)}", code=ErrorCode.STORE_FIELD,
                       hint=f"fields: {', '.join(known)}")


def _rows(arrays: dict[str, ArrayV3]) -> int:
    lengths = {a.shape[0] for a in arrays.values()}
    if len(lengths) > 1:
        raise StorageError(f"dataset arrays have different lengths {sorted(lengths)}", code=ErrorCode.STORE_FORMAT,
                           hint="the dataset is damaged; read an earlier snapshot")
    return lengths.pop() if lengths else 0


def _fields(columns: Sequence[Column], names: Sequence[str]) -> list[Column]:
    """The columns ``names`` asks for, in its order (a misspelt one is a config error with a suggestion)."""
    known = {c.name: c for c in columns}
    for name in names:
        if name not in known:
            raise _unknown_field(name, list(known))
    return [known[name] for name in names]


def _missing(col: Column, n: int) -> Values:
    """``n`` rows of a field added after this snapshot was written: its fill value."""
    return np.full(n, col.fill, dtype=col.numpy_dtype)


def _read(arr: ArrayV3, selection: int | slice = slice(None)) -> Values:
    """``schema.read``, a failed or damaged read mapped to STORE_IO (:func:`preprocess.store.storage.read_errors`)."""
    with read_errors():
        return schema.read(arr, selection)


def _table(arrays: dict[str, ArrayV3], columns: Sequence[Column], names: Sequence[str],
           n: int) -> dict[str, Values]:
    return {c.name: _read(arrays[c.name]) if c.name in arrays else _missing(c, n)
            for c in _fields(columns, names)}


def _take(arrays: dict[str, ArrayV3], columns: Sequence[Column], names: Sequence[str], rows: RowNumbers,
          n: int) -> dict[str, Values]:
    wanted = np.asarray(rows, dtype=np.int64).reshape(-1)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= n):
        raise IndexError(f"rows out of range: the table has {n} rows")
    unique, back = np.unique(wanted, return_inverse=True)  # sorted, so zarr reads each chunk once
    out: dict[str, Values] = {}
    for c in _fields(columns, names):
        arr = arrays.get(c.name)
        if arr is None:
            out[c.name] = _missing(c, wanted.size)
        elif not unique.size:
            out[c.name] = np.empty(0, dtype=c.numpy_dtype)
        else:
            with schema.quiet(), read_errors():
                out[c.name] = np.asarray(arr.get_orthogonal_selection(unique))[back]
    return out
