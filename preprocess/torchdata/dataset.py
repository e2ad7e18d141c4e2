"""``VersionDataset``: one snapshot's rows as a ``torch.utils.data.Dataset`` of decoded images.

Cheap to start in a worker: this module imports torch, numpy, Pillow, zarr (through the row schema)
and the decoders, never icechunk; the store is opened at a worker's first item, and the rows' small
fields travel with the dataset when it is forked (or are read by the worker once, when it is
pickled). A batch's stored bytes are read in one call (``__getitems__``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, DamagedError, InputError, PreprocessError, carry
from preprocess.pipeline.formats import jpeg
from preprocess.pipeline.stored_pixels import check_recorded, decode_rgb_into
from preprocess.rows.records import row_number
from preprocess.rows.schema import ITEM_COLUMNS
from preprocess.torchdata import forking
from preprocess.torchdata.where import WHERE_FIELDS, Where

if TYPE_CHECKING:
    from preprocess.store import Dataset

Decode = Literal["auto", "cpu", "gpu", "none"]
Fit = Literal["crop", "stretch"]
FIELDS = tuple(c.name for c in ITEM_COLUMNS if c.name != "jpeg")
Item = dict[str, object]  # "index", the chosen fields, "image" (and/or "jpeg")
Columns = dict[str, npt.NDArray[np.generic]]
Transform = Callable[[Image.Image], object]
Box = tuple[int, int, int, int]


def fit_box(width: int, height: int, size: tuple[int, int], fit: Fit) -> tuple[tuple[int, int], Box]:
    """Where an image of ``width`` x ``height`` is resized to and the box cut from it for an output of
    ``size`` (width, height): the one geometry of the CPU and the GPU readers."""
    w_out, h_out = size
    if fit == "stretch":
        return (w_out, h_out), (0, 0, w_out, h_out)
    scale = max(w_out / width, h_out / height)
    rw, rh = max(w_out, round(width * scale)), max(h_out, round(height * scale))
    x0, y0 = (rw - w_out) // 2, (rh - h_out) // 2
    return (rw, rh), (x0, y0, x0 + w_out, y0 + h_out)


def fit_pil(img: Image.Image, size: tuple[int, int] | None, fit: Fit) -> Image.Image:
    """``size``/``fit`` on the CPU (Pillow, bilinear antialiased)."""
    return img if size is None else fit_to(img, *fit_box(img.width, img.height, size, fit))


def fit_to(img: Image.Image, resized: tuple[int, int], box: Box, full: tuple[int, int] | None = None) -> Image.Image:
    """``img`` resized to ``resized`` (Pillow, bilinear antialiased), then ``box`` cut from it: :func:`fit_box`'s
    geometry of the image ``img`` is, or of the ``full`` image it is a draft of (a JPEG decoded at k/8 of each
    side, rounded up: the resize reads the k/8 that hold the image, not the rounding's partial pixel)."""
    if full is not None and img.size != full:
        k = next((k for k in jpeg.DRAFT_SCALES if jpeg.scaled(full, k) == img.size), 8)  # the smallest: as decoded
        img = img.resize(resized, Image.Resampling.BILINEAR, box=(0, 0, full[0] * k / 8, full[1] * k / 8))
    elif resized != img.size:
        img = img.resize(resized, Image.Resampling.BILINEAR)
    return img if box == (0, 0, *resized) else img.crop(box)


def _device_decodes(data: bytes, status: str) -> bool:
    """Rows the GPU decoder takes: our own JPEGs (a kept source may need the CPU's conversion)."""
    from preprocess.pipeline.codecs import sniff

    return status != "source" and sniff(data) == "jpeg"


@dataclass(frozen=True)
class Version:
    """What a reader needs of a version before any item: its snapshot, the selected rows and their fields."""

    snapshot_id: str
    rows: npt.NDArray[np.int64]
    columns: Columns  # field -> values of the selected rows


def read_version(location: str, ref: str, where: Where | None, fields: Sequence[str]) -> Version:
    """Resolve ``ref`` and read the rows ``where`` selects, with their ``fields``, in one pass over the columns."""
    from preprocess.store import open_dataset

    ds = open_dataset(location, ref=ref)
    table = ds.items_table(sorted({*fields, *(WHERE_FIELDS if where is not None else ())}))
    rows = where.select(table) if where is not None else np.arange(len(ds), dtype=np.int64)
    return Version(ds.snapshot_id, rows, {f: table[f][rows] for f in fields})


def _version(location: str, ref: str, where: Where | None, fields: Sequence[str]) -> Version:
    """:func:`read_version`, in a forked child when this process has not loaded icechunk yet: it then
    stays free to fork fast workers."""
    if forking.can_fork():
        return forking.in_child(lambda: read_version(location, ref, where, fields), Version)
    return read_version(location, ref, where, fields)


def _decode_mode(decode: str, transform: Transform | None) -> Decode:
    if decode not in ("auto", "cpu", "gpu", "none"):
        raise ConfigError(f"decode must be auto, cpu, gpu or none, not {decode!r}", code=ErrorCode.TORCH_DECODE)
    if decode == "gpu" and transform is not None:
        raise ConfigError("transform takes a PIL image, decoded on the CPU; decode='gpu' gives CUDA tensors",
                          code=ErrorCode.TORCH_TRANSFORM,
                          hint="use size=/fit= (done on the GPU) and apply tensor transforms to each batch, or "
                               "decode='cpu'")
    if decode == "auto":  # torch counts devices without DALI's import or a CUDA context
        dali = importlib.util.find_spec("nvidia.dali") is not None
        return "gpu" if transform is None and dali and torch.cuda.device_count() > 0 else "cpu"
    return "gpu" if decode == "gpu" else "cpu" if decode == "cpu" else "none"


def _python(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


# A draft is decoded at least this many times the resize's size (Pillow's thumbnail keeps a gap of 2; 1.5 lets
# 1280x800 images read at 224x224 take the 1/2 scale, 640x400 for a 358x224 resize), so that the resize's
# antialiasing filter does the rest and the draft's coarser filter barely shows.
DRAFT_GAP = 1.5


def _where(where: Where | Mapping[str, object] | None) -> Where | None:
    """``where=`` as a :class:`Where` (a mapping of its fields too): TORCH_WHERE names an unknown field (it was
    a TypeError from the dataclass)."""
    if not isinstance(where, Mapping):
        return where
    known = {f.name for f in dataclasses.fields(Where)}
    if unknown := sorted(set(map(str, where)) - known):
        raise ConfigError(f"where= names no field {', '.join(map(repr, unknown))}", code=ErrorCode.STORE_FIELD,
                          hint=f"Where's fields: {', '.join(sorted(known))}")
    return Where(**where)  # type: ignore[arg-type]


MAX_SIDE = 16384  # size=(100000, 100000) took ~30 GB an image and the process was killed (an audit, 2026-12-07)


def _size(size: object, fit: str) -> tuple[int, int] | None:
    """``size=`` as (width, height) of whole numbers 1..MAX_SIDE (an int: a square); TORCH_SIZE else (an int was a
    TypeError, 224.5 was taken as 224)."""
    pair = (size, size) if isinstance(size, numbers.Integral) and not isinstance(size, bool) else size
    ok = pair is None or (isinstance(pair, tuple | list) and len(pair) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= int(v) <= MAX_SIDE for v in pair))
    if fit not in ("crop", "stretch") or not ok:
        raise ConfigError(f"size={size!r}, fit={fit!r}: size is (width, height), whole numbers 1..{MAX_SIDE} (or "
                          "one for a square); fit crop or stretch", code=ErrorCode.TORCH_SIZE,
                          hint="e.g. VersionDataset(STORE, size=(224, 224))")
    return None if pair is None else (int(pair[0]), int(pair[1]))  # type: ignore[index]


class VersionDataset(TorchDataset[Item]):
    """Items of one snapshot of the dataset at ``location``: ``{"index", "image" | "jpeg", fields...}``
    (``index``: the row in the version). See :mod:`preprocess.torchdata` for ``decode``, ``where``,
    ``size`` and ``fit``."""

    def __init__(self, location: str, ref: str = "main", *, decode: Decode = "auto",  # noqa: PLR0913 (options, by keyword)
                 fields: Sequence[str] | None = None, transform: Transform | None = None,
                 where: Where | Mapping[str, object] | None = None, size: tuple[int, int] | int | None = None,
                 fit: Fit = "crop", draft: bool = False) -> None:
        self.decode: Decode = _decode_mode(decode, transform)
        if draft and (size is None or self.decode == "none"):
            raise ConfigError("draft=True decodes at a scale that covers size=: give size=(width, height) and a "
                              "decode that decodes", code=ErrorCode.TORCH_SIZE,
                              hint="e.g. VersionDataset(STORE, size=(224, 224), draft=True)")
        self.draft = draft  # JPEG rows decoded at a smaller DCT scale that covers size (the CPU decode only)
        self.location = location
        self.fields = tuple(FIELDS if fields is None else fields)
        unknown = set(self.fields) - set(FIELDS)
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}", code=ErrorCode.STORE_FIELD,
                              hint=f"fields: {', '.join(FIELDS)}")
        self.size = _size(size, fit)
        self.transform = transform
        self.fit: Fit = fit
        self.ref = ref
        self.where = _where(where)
        # the GPU reader needs every row's status (kept sources are decoded on the CPU); a decoded row's
        # header is checked against its recorded size before any pixel is decoded
        decoded = ["width", "height"] if self.decode != "none" else []
        self._read = tuple(dict.fromkeys([*self.fields, *decoded, *(["status"] if self.decode == "gpu" else [])]))
        version = _version(location, ref, self.where, self._read)
        self.snapshot_id = version.snapshot_id  # every worker reads exactly this snapshot
        self.rows = version.rows
        self._columns: Columns | None = version.columns
        self._ds: Dataset | None = None  # opened at the first item, in the process that reads it
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.rows)

    def _dataset(self) -> Dataset:
        if os.getpid() != self._pid:  # forked (an unpickled copy resets the pid): the parent's store is not ours
            if forking.forked_with_icechunk():
                raise forking.WorkerForked()
            self._ds, self._pid = None, os.getpid()
        if self._ds is None:
            from preprocess.store import open_dataset

            self._ds = open_dataset(self.location, ref=self.snapshot_id)
        return self._ds

    def _position(self, i: int) -> int:
        if not -len(self.rows) <= i < len(self.rows):
            raise IndexError(f"item {i} out of range: {len(self.rows)} rows")
        return i % len(self.rows)

    def __getitem__(self, i: int) -> Item:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """Several items, their stored bytes read in one call (torch's DataLoader fetches a batch so). In a
        DataLoader worker, an error carries its code, hint and path to the main process (:func:`carry`)."""
        try:
            return self._items(indices)
        except PreprocessError as exc:
            found = self._named(indices, exc) if isinstance(exc, InputError | DamagedError) else exc
            if isinstance(found, list):  # every row read alone: the batch's failure did not come back
                return found
            if torch.utils.data.get_worker_info() is not None:
                carry(found)
            if found is exc:  # the store, the options, or the batch's one row: no row to name but its own
                raise
            raise found from exc

    def _named(self, indices: Sequence[int], exc: PreprocessError) -> PreprocessError | list[Item]:
        """The error of the row a batch's failure came from (a batch is read as a whole, so each row is then
        read alone), with that row's number and source in its message; the rows themselves when each reads."""
        found: tuple[int, PreprocessError] | None = (int(indices[0]), exc) if len(indices) == 1 else None
        items: list[Item] = []
        for i in indices if found is None else []:
            try:
                items += self._items([int(i)])
            except (InputError, DamagedError) as one:
                found = (int(i), one)
                break
        if found is None:
            return items
        position, err = self._position(found[0]), found[1]
        source = self._columns["source_path"][position] if self._columns and "source_path" in self._columns else None
        where = f" (from {names.quote(str(source))})" if source is not None else ""
        err.message = f"stored row {int(self.rows[position])}{where} of {self.location} at {self.ref}: {err.message}"
        return err

    def _items(self, indices: Sequence[int]) -> list[Item]:
        positions = [self._position(row_number(i)) for i in indices]
        ds = self._dataset()
        if self._columns is None:  # a pickled copy: the fields of the selected rows, read once
            self._columns = ds.items_at(self.rows, self._read)
        rows = self.rows[positions]
        blobs = ds.items_at(rows, ["jpeg"])["jpeg"]
        return [self._item(p, int(row), bytes(data)) for p, row, data in zip(positions, rows, blobs, strict=True)]

    def _item(self, position: int, row: int, data: bytes) -> Item:
        assert self._columns is not None
        item: Item = {"index": row, **{k: _python(self._columns[k][position]) for k in self.fields}}
        if self.decode == "none":
            item["jpeg"] = data
            return item
        recorded = (int(self._columns["width"][position]), int(self._columns["height"][position]))
        if self.decode == "gpu":  # our JPEGs go to the GPU in the main process; other rows are decoded here
            on_device = _device_decodes(data, str(self._columns["status"][position]))
            if on_device:
                check_recorded(data, recorded)  # what the device decodes has the size its row records
            item["jpeg"] = data if on_device else None
            item["image"] = None if on_device else self.image(data, recorded)
        else:
            item["image"] = self.image(data, recorded)
        return item

    def image(self, data: bytes, recorded: tuple[int, int] | None = None) -> object:
        """Stored bytes decoded on the CPU: CHW uint8 at ``size`` (or ``transform``'s result); ``recorded``:
        the row's width and height, which the bytes' header must give (E_CORRUPT before any decode)."""
        def use(decoded: Image.Image) -> Image.Image:
            return fit_pil(decoded, self.size, self.fit)

        cover = None
        if self.draft and self.size is not None and recorded is not None:  # the geometry of the full image
            resized, box = fit_box(recorded[0], recorded[1], self.size, self.fit)
            cover = (math.ceil(DRAFT_GAP * resized[0]), math.ceil(DRAFT_GAP * resized[1]))

            def use(decoded: Image.Image) -> Image.Image:
                return fit_to(decoded, resized, box, recorded)

        img = decode_rgb_into(data, use, recorded=recorded, cover=cover)
        if self.transform is not None:
            return self.transform(img)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_ds"] = None  # reopened lazily in the worker (a repository does not cross processes) ...
        state["_columns"] = None  # ... which reads the selected rows' fields once
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()
