"""The dataset layout on zarr, and the row types written into it.

Layout (zarr v3 inside an icechunk repository)::

    /                       attrs {"preprocess_format": 1}
    /items/<field>          one 1-D array per ItemRow field, chunks (CHUNK_ROWS,); items/jpeg (bytes)
                            is sharded: shards (CHUNK_ROWS,) of inner chunks (1,), no compressor
    /items/embedding/<model>  float32 [N, D] per model name, chunks (CHUNK_ROWS, D), fill NaN
    /failures/<field>       one 1-D array per FailureRow field, chunks (CHUNK_ROWS,)

Every array of a group has the same length (the number of rows) and one storage object per
CHUNK_ROWS rows (a chunk, or a shard for jpeg), which the writer fills in order. A row made with
one model has NaN in every other model's embedding array.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args, get_type_hints

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.abc.store import Store
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import GroupNotFoundError, UnstableSpecificationWarning
from zarr.types import ArrayV3

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InternalError, StorageError

FORMAT_ATTR = "preprocess_format"
FORMAT_VERSION = 1
CHUNK_ROWS = 256
ITEMS = "items"
EMBEDDING = "items/embedding"
FAILURES = "failures"
ItemStatus = Literal["ok", "flagged", "source", "passthrough"]  # THE list of a stored item's statuses
ITEM_STATUSES: frozenset[str] = frozenset(get_args(ItemStatus))

Kind = Literal["bytes", "str", "int", "float"]
type Value = builtins.bytes | str | int | float  # one row field's value, as a row holds it
type Values = NDArray[np.generic]  # one column of rows (object for bytes, StringDType for str, ints, floats)
Part = Literal["data", "stored", "source", "origin"]  # what a row field describes (see Col)
_FILLS: dict[Kind, Value] = {"bytes": b"", "str": "", "int": 0, "float": float("nan")}  # a missing row's values
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,199}\Z")
# Columns that hold a file name: stored by preprocess.core.names.storable (a name that is not UTF-8 text
# is kept in its quoted form, byte for byte recoverable with names.real); other text columns hold text.
NAME_COLUMNS = frozenset({"source_path"})


@dataclass(frozen=True)
class Column:
    """One 1-D array of a row group: its zarr dtype and fill value."""

    name: str
    dtype: str  # zarr dtype string: "bytes", "str", "int16", "int32", "int64", "float32"
    part: Part = "stored"

    @property
    def kind(self) -> Kind:
        if self.dtype in ("bytes", "str"):
            return self.dtype  # type: ignore[return-value]
        return "float" if self.dtype.startswith("float") else "int"

    @property
    def fill(self) -> Value:
        return _FILLS[self.kind]

    @property
    def numpy_dtype(self) -> np.dtype[np.generic] | np.dtypes.StringDType:
        """The dtype of an in-memory column (what zarr returns when reading it)."""
        if self.kind == "bytes":
            return np.dtype(object)
        if self.kind == "str":
            return np.dtype(np.dtypes.StringDType())
        return np.dtype(self.dtype)

    def values(self, rows: Sequence[ItemRow | FailureRow]) -> Values:
        """This column of ``rows`` as a 1-D array ready to write."""
        if self.kind == "bytes":
            out = np.empty(len(rows), dtype=object)
            for i, r in enumerate(rows):
                out[i] = getattr(r, self.name)
            return out
        if self.kind == "str":  # zarr's text columns are UTF-8: never a lone surrogate (an undecodable name byte)
            text = names.storable if self.name in NAME_COLUMNS else names.text
            return np.array([text(getattr(r, self.name)) for r in rows], dtype=self.numpy_dtype)
        return np.array([getattr(r, self.name) for r in rows], dtype=self.numpy_dtype)

    def check(self, value: object) -> None:
        """Raise InternalError when ``value`` cannot be stored in this column (a caller bug)."""
        ok: bool
        if self.kind == "bytes":
            ok = isinstance(value, builtins.bytes)
        elif self.kind == "str":
            ok = isinstance(value, str)
        elif self.kind == "float":
            ok = isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            info = np.iinfo(np.dtype(self.dtype))
            ok = info.min <= int(value) <= info.max
        else:
            ok = False
        if not ok:
            raise InternalError(f"row field {self.name}={value!r:.80} does not fit the {self.dtype} column",
                                code=ErrorCode.STORE_ROW)


@dataclass(frozen=True)
class Col:
    """A row field's column: its zarr dtype and which part of the row it describes (the lineage view
    groups fields by part: what was ``stored``, its ``source``, its ``origin`` (spec, model, job))."""

    dtype: str  # zarr dtype string: "bytes", "str", "int16", "int32", "int64", "float32"
    part: Part = "stored"


@dataclass(frozen=True, eq=False)
class ItemRow:
    """One stored image: THE declaration of the item schema (every field annotated with a
    :class:`Col` is a column of ``items/``, in this order; adding a field here adds the column).
    ``jpeg`` holds the stored bytes, in ``format`` (the array keeps its first name for compatibility: it
    holds AVIF/WebP/JPEG XL bytes too), or the source's own bytes when status is "source"/"passthrough"
    (then ``format`` is the source's format, ``encoder`` and ``chroma`` are "" and ``quality`` is 0)."""

    jpeg: Annotated[builtins.bytes, Col("bytes", "data")]
    format: Annotated[str, Col("str")]  # jpeg | webp | avif | jxl, or the source's format when its bytes are kept
    encoder: Annotated[str, Col("str")]  # the library that made the bytes (jpegli, libjpeg-turbo, nvjpeg, ...)
    chroma: Annotated[str, Col("str")]  # chroma subsampling of the stored bytes: 420, 422, 444 ("" if none)
    status: Annotated[str, Col("str")]  # an ItemStatus
    width: Annotated[int, Col("int32")]
    height: Annotated[int, Col("int32")]
    bytes: Annotated[int, Col("int64")]  # stored size
    quality: Annotated[int, Col("int16")]
    similarity: Annotated[float, Col("float32")]
    probes: Annotated[int, Col("int16")]
    model: Annotated[str, Col("str", "origin")]
    source_path: Annotated[str, Col("str", "source")]
    source_sha256: Annotated[str, Col("str", "source")]
    source_bytes: Annotated[int, Col("int64", "source")]
    source_width: Annotated[int, Col("int32", "source")]
    source_height: Annotated[int, Col("int32", "source")]
    source_format: Annotated[str, Col("str", "source")]
    capture_time: Annotated[str, Col("str", "source")]  # ISO 8601 or ""
    camera_model: Annotated[str, Col("str", "source")]
    fingerprint: Annotated[str, Col("str", "origin")]  # the spec fingerprint
    job_id: Annotated[str, Col("str", "origin")]
    embedding: NDArray[np.float32] = field(repr=False)  # float32 [D], stored in items/embedding/<model>
    # The gate's views (issue 21), each the worst of its models (NaN: not checked, or a row from before them)
    similarity_whole: Annotated[float, Col("float32")] = float("nan")
    similarity_crops: Annotated[float, Col("float32")] = float("nan")  # the worst crop's
    similarity_tiles: Annotated[float, Col("float32")] = float("nan")  # the tiles' combined score
    crop_box: Annotated[str, Col("str")] = ""  # the worst crop: "x0,y0,x1,y1" in the stored image ("" if none)
    checks: Annotated[str, Col("str")] = ""  # JSON {model: {view: similarity}} of every check ("" if none)

    @property
    def key(self) -> str:
        return item_key(self.source_sha256, self.fingerprint)


@dataclass(frozen=True)
class FailureRow:
    """One source that could not be stored, with its stable failure code (THE declaration of
    ``failures/``)."""

    source_path: Annotated[str, Col("str", "source")]
    source_sha256: Annotated[str, Col("str", "source")]
    source_bytes: Annotated[int, Col("int64", "source")]
    fingerprint: Annotated[str, Col("str", "origin")]
    code: Annotated[str, Col("str")]
    message: Annotated[str, Col("str")]
    job_id: Annotated[str, Col("str", "origin")]

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two failures the same failure: (content, spec fingerprint, code); a source that
        was never read (no content hash: unreadable, a refused link, a FIFO) is known by its path."""
        return failure_key(self.source_sha256, self.source_path, self.fingerprint, self.code)


def columns_of(row_type: type[ItemRow | FailureRow]) -> tuple[Column, ...]:
    """The columns a row dataclass declares: its fields annotated with a :class:`Col`, in order."""
    hints = get_type_hints(row_type, include_extras=True)
    out = []
    for f in dataclasses.fields(row_type):
        col = next((m for m in get_args(hints[f.name])[1:] if isinstance(m, Col)), None)
        if col is not None:
            out.append(Column(f.name, col.dtype, col.part))
    return tuple(out)


ITEM_COLUMNS: tuple[Column, ...] = columns_of(ItemRow)
FAILURE_COLUMNS: tuple[Column, ...] = columns_of(FailureRow)


def item_key(source_sha256: str, fingerprint: str) -> str:
    return f"{source_sha256}:{fingerprint}"


def failure_key(source_sha256: str, source_path: str, fingerprint: str, code: str) -> tuple[str, str, str]:
    """What makes a failure the same one again: its content, spec and code; a source that was never
    read (no content hash: unreadable, a refused link, a FIFO) is known by its path instead."""
    return (source_sha256 or f"path:{source_path}", fingerprint, code)


def check_model_name(model: str) -> None:
    if not _MODEL_NAME.match(model):
        raise ConfigError(f"model name {model!r} cannot name an embedding array",
                          code=ErrorCode.STORE_MODEL_NAME,
                          hint="use letters, digits and . _ + @ - (starting with a letter or digit)")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence zarr's UnstableSpecificationWarning for the bytes/str dtypes we chose on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        yield


def create_column(group: zarr.Group, col: Column, rows: int) -> ArrayV3:
    with quiet():
        if col.kind == "bytes":
            # One storage object (shard) per CHUNK_ROWS rows like every other array, but one inner
            # chunk per image, so reading one image reads only its bytes (via the shard index), not
            # the whole ~25 MB shard. JPEG does not compress further: no compressor; a CRC32C of each
            # image's bytes instead, so that bytes damaged on disk are an error (STORE_IO), never an
            # image that decodes to other pixels (arrays made before it have none and read as before).
            return group.create_array(col.name, shape=(rows,), chunks=(1,), shards=(CHUNK_ROWS,),
                                      dtype=col.dtype, fill_value=col.fill, compressors=[Crc32cCodec()])
        return group.create_array(col.name, shape=(rows,), chunks=(CHUNK_ROWS,), dtype=col.dtype,
                                  fill_value=col.fill, compressors=[checked_zstd()])


def checked_zstd() -> ZstdCodec:
    """zarr's default compressor (zstd, level 0) with zstd's frame checksum, which every read checks: a field or
    an embedding damaged on disk is an error (STORE_IO), never another value (arrays made before 2026-12-07
    have none: a flipped bit there read as a float of 1e34)."""
    return ZstdCodec(level=0, checksum=True)


def create_embedding(group: zarr.Group, model: str, rows: int, dim: int) -> ArrayV3:
    check_model_name(model)
    with quiet():
        return group.create_array(model, shape=(rows, dim), chunks=(CHUNK_ROWS, dim), dtype="float32",
                                  fill_value=float("nan"), compressors=[checked_zstd()])


def create_layout(store: Store) -> zarr.Group:
    """Write the root attrs and the (empty) groups and arrays; returns the root group."""
    with quiet():
        root = zarr.group(store=store)  # may be an existing, empty root group
        root.attrs[FORMAT_ATTR] = FORMAT_VERSION
        items = root.require_group(ITEMS)
        items.require_group("embedding")
        failures = root.require_group(FAILURES)
    for col in ITEM_COLUMNS:
        create_column(items, col, 0)
    for col in FAILURE_COLUMNS:
        create_column(failures, col, 0)
    return root


def open_layout(store: Store, *, writable: bool) -> zarr.Group | None:
    """The root group of a preprocess dataset, or None when the branch is still empty.

    Raises ConfigError STORE_FORMAT (a usage error, exit 2: the wrong path was given) when the
    branch holds something that is not a preprocess dataset, or a format this version does not know.
    """
    with quiet():
        try:
            root = zarr.open_group(store=store, mode="r+" if writable else "r")
        except GroupNotFoundError:
            return None
        attrs = dict(root.attrs)
        version = attrs.get(FORMAT_ATTR)
        if version is None:
            if not attrs and not list(root.keys()):
                return None  # an empty root group: nothing to protect
            raise ConfigError("this icechunk repository holds data that preprocess did not write "
                              f"(no {FORMAT_ATTR!r} attribute on its root group)", code=ErrorCode.STORE_FORMAT,
                              hint="use another path or branch for the dataset (nothing there was changed)")
        if version != FORMAT_VERSION:
            raise ConfigError(f"dataset format {version!r} is not known to this version "
                              f"(it reads format {FORMAT_VERSION})", code=ErrorCode.STORE_FORMAT,
                              hint="upgrade preprocess to read this dataset")
        return root


def group_rows(group: zarr.Group, columns: Sequence[Column]) -> int:
    """The common length of a row group's arrays (StorageError if they disagree)."""
    lengths = {name: arr.shape[0] for name, arr in _arrays(group) if name in {c.name for c in columns}}
    if len(set(lengths.values())) > 1:
        raise StorageError(f"arrays of {group.path!r} have different lengths: {lengths}", code=ErrorCode.STORE_FORMAT,
                           hint="the dataset is damaged; reset the branch to an earlier snapshot")
    return next(iter(lengths.values()), 0)


def _arrays(group: zarr.Group) -> list[tuple[str, ArrayV3]]:
    with quiet():
        return list(group.arrays())


def arrays(group: zarr.Group) -> dict[str, ArrayV3]:
    return dict(_arrays(group))


def subgroup(root: zarr.Group, path: str) -> zarr.Group | None:
    """The group at ``path`` under ``root``, or None when missing (or not a group)."""
    with quiet():
        try:
            node = root[path]
        except KeyError:
            return None
    return node if isinstance(node, zarr.Group) else None


def read(arr: ArrayV3, selection: int | slice = slice(None)) -> Values:
    """``arr[selection]`` as a numpy array (object for bytes, StringDType for str)."""
    with quiet():
        return np.asarray(arr[selection])
