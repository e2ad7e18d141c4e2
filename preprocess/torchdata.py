"""PyTorch access to one version of the dataset (imported only when used: it needs torch).

::

    from preprocess.torchdata import VersionDataset, Where, loader

    if __name__ == "__main__":  # DataLoader workers are spawned: they import this file again
        ds = VersionDataset("cams.icechunk", ref="v1", where=Where(status="ok"), size=(224, 224))
        for batch in loader(ds, batch_size=32, num_workers=4):
            batch["image"]    # uint8 [N, 3, 224, 224] (CPU, or CUDA with decode="gpu")
            batch["quality"]  # tensor; strings (source_path, ...) are lists

``decode`` (the layout is the same for all: uint8 ``[3, H, W]`` images, stacked into ``[N, 3, H, W]``
when their sizes agree, which ``size=`` makes sure of; otherwise a list):

- ``"cpu"``: workers decode with pillow-simd (every stored format: JPEG, and AVIF/WebP/JPEG XL rows
  through imagecodecs; kept sources through the pipeline's own conversion: EXIF orientation, alpha
  composited on white, CMYK/16-bit converted), then ``size``/``fit``, then ``transform(PIL image)``;
- ``"gpu"``: workers read the stored bytes of JPEG rows; :func:`loader` decodes each batch in the
  main process on the GPU with DALI (:class:`preprocess.pipeline.engines.dali.ImageDecoder`: nvJPEG, libjpeg's
  fancy upsampling, so the same pixels as the CPU within decoder rounding) and resizes there (torch,
  bilinear antialiased, as Pillow). Rows that are not our own JPEGs (kept sources: PNG with alpha,
  GIF, CMYK ...; AVIF/WebP/JPEG XL) are decoded on the CPU by the workers, and an image DALI cannot
  decode is decoded on the CPU in the main process: one bad row never fails a batch. ``transform``
  takes a PIL image, so it is refused here (ConfigError TORCH_TRANSFORM);
- ``"none"``: bytes only (``item["jpeg"]``); ``"auto"``: ``gpu`` where DALI sees a CUDA device and no
  ``transform`` is given, else ``cpu``.

``where`` (:class:`Where`) keeps some rows of the version: by spec fingerprint, status, quality or
similarity range, source path prefix, and, on a branch that holds rows of several specs, one row per
source (the newest). ``size=(width, height)`` resizes every image on decode, like FFCV's and DALI's
readers: ``fit="crop"`` scales to cover the box and crops the centre, ``"stretch"`` ignores the
aspect ratio.

Workers reopen the repository lazily (the dataset pickles as location + snapshot id + selected rows),
so it works with several DataLoader workers. They must be started with ``spawn`` or ``forkserver``:
forking a process after icechunk was opened can deadlock, so a forked worker raises ConfigError
TORCH_FORK (:func:`loader` uses spawn). A script that iterates a loader with workers needs the
``if __name__ == "__main__":`` guard (spawned workers import the script again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.codecs import sniff
from preprocess.pipeline.images import decode_rgb as decode_image
from preprocess.rows.schema import ITEM_COLUMNS
from preprocess.store import Dataset, open_dataset

Decode = Literal["auto", "cpu", "gpu", "none"]
Fit = Literal["crop", "stretch"]
FIELDS = tuple(c.name for c in ITEM_COLUMNS if c.name != "jpeg")


@dataclass(frozen=True)
class Where:
    """Which rows of a version to read; every condition given must hold.

    ``fingerprint``/``status``: one value or several; ``quality``/``similarity``: inclusive ``(low,
    high)``; ``source_prefix``: the start of ``source_path``; ``one_per_source``: of the rows left,
    only the newest (last written) per source content (``source_sha256``), e.g. on a branch that
    holds the rows of several specs.
    """

    fingerprint: str | Sequence[str] | None = None
    status: str | Sequence[str] | None = None
    quality: tuple[int, int] | None = None
    similarity: tuple[float, float] | None = None
    source_prefix: str | None = None
    one_per_source: bool = False

    def rows(self, ds: Dataset) -> np.ndarray:
        """The dataset rows (ascending indices) that match."""
        cols = ds.items_table(["fingerprint", "status", "quality", "similarity", "source_path", "source_sha256"])
        keep = np.ones(len(ds), dtype=bool)
        for name, wanted in (("fingerprint", self.fingerprint), ("status", self.status)):
            if wanted is not None:
                values = [wanted] if isinstance(wanted, str) else list(wanted)
                keep &= np.isin(cols[name], values)
        for name, bounds in (("quality", self.quality), ("similarity", self.similarity)):
            if bounds is not None:
                numbers = cols[name].astype(np.float64)  # quality (int16) or similarity (float32)
                keep &= (numbers >= bounds[0]) & (numbers <= bounds[1])
        if self.source_prefix is not None:
            keep &= np.strings.startswith(cols["source_path"].astype(np.dtypes.StringDType()), self.source_prefix)
        rows = np.flatnonzero(keep)
        if self.one_per_source and rows.size:
            newest_first = rows[::-1]
            _, first = np.unique(cols["source_sha256"][newest_first], return_index=True)
            rows = np.sort(newest_first[first])
        return rows.astype(np.int64)


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
    if size is None:
        return img
    resized, box = fit_box(img.width, img.height, size, fit)
    if resized != img.size:
        img = img.resize(resized, Image.Resampling.BILINEAR)
    return img if box == (0, 0, *resized) else img.crop(box)


def fit_tensor(hwc: Any, size: tuple[int, int] | None, fit: Fit) -> torch.Tensor:
    """A decoded HWC uint8 image (numpy, or a torch tensor on any device) -> CHW uint8 at ``size``
    (torch, bilinear antialiased: Pillow's filter), on the same device."""
    t = torch.from_numpy(np.ascontiguousarray(hwc)) if isinstance(hwc, np.ndarray) else hwc
    t = t.permute(2, 0, 1)
    if size is not None:
        (rw, rh), (x0, y0, x1, y1) = fit_box(int(t.shape[2]), int(t.shape[1]), size, fit)
        if (rw, rh) != (int(t.shape[2]), int(t.shape[1])):
            t = torch.nn.functional.interpolate(t[None].float(), size=(rh, rw), mode="bilinear", antialias=True,
                                                align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        t = t[:, y0:y1, x0:x1]
    return t.contiguous()


def _device_decodes(data: bytes, status: str) -> bool:
    """Rows the GPU decoder takes: our own JPEGs (a kept source may need the CPU's conversion)."""
    return status != "source" and sniff(data) == "jpeg"


class VersionDataset(TorchDataset[dict[str, Any]]):
    """Items of one snapshot of the dataset at ``location``: ``{"index", "image" | "jpeg", fields...}``
    (``index``: the row in the version). See the module docstring for ``decode``, ``where``,
    ``size`` and ``fit``."""

    def __init__(self, location: str, ref: str = "main", *, decode: Decode = "auto",  # noqa: PLR0913 (options, by keyword)
                 fields: Sequence[str] | None = None, transform: Callable[[Image.Image], Any] | None = None,
                 where: Where | Mapping[str, Any] | None = None, size: tuple[int, int] | None = None,
                 fit: Fit = "crop") -> None:
        self.decode: Decode = _decode_mode(decode, transform)
        self.location = location
        self.fields = tuple(FIELDS if fields is None else fields)
        unknown = set(self.fields) - set(FIELDS)
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}", code=ErrorCode.STORE_FIELD,
                              hint=f"fields: {', '.join(FIELDS)}")
        if fit not in ("crop", "stretch") or (size is not None and (len(size) != 2 or min(size) < 1)):
            raise ConfigError(f"size={size!r}, fit={fit!r}: size is (width, height) >= 1, fit crop or stretch",
                              code=ErrorCode.TORCH_SIZE)
        self.transform = transform
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.fit: Fit = fit
        self._pid = os.getpid()
        self._ds: Dataset | None = open_dataset(location, ref=ref)
        self.ref = ref
        self.snapshot_id = self._ds.snapshot_id  # every worker reads exactly this snapshot
        self.where = Where(**where) if isinstance(where, Mapping) else where
        self.rows = self.where.rows(self._ds) if self.where is not None else np.arange(len(self._ds), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def _dataset(self) -> Dataset:
        if self._ds is not None and os.getpid() != self._pid:
            raise ConfigError("this dataset was opened before the process forked (a DataLoader worker "
                              "started with the fork method); forking after icechunk is opened can deadlock",
                              code=ErrorCode.TORCH_FORK,
                              hint="use preprocess.torchdata.loader(), or DataLoader(..., "
                                   "multiprocessing_context='spawn')")
        if self._ds is None:
            self._ds = open_dataset(self.location, ref=self.snapshot_id)
            self._pid = os.getpid()
        return self._ds

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self.rows) <= i < len(self.rows):
            raise IndexError(f"item {i} out of range: {len(self.rows)} rows")
        ds = self._dataset()
        row = int(self.rows[i])
        record: Mapping[str, object] = ds.record(row)
        item: dict[str, Any] = {"index": row, **{k: record[k] for k in self.fields}}
        data = ds.jpeg(row)
        if self.decode == "none":
            item["jpeg"] = data
        elif self.decode == "gpu":  # our JPEGs go to the GPU in the main process; other rows are decoded here
            on_device = _device_decodes(data, str(record["status"]))
            item["jpeg"] = data if on_device else None
            item["image"] = None if on_device else self.image(data)
        else:
            item["image"] = self.image(data)
        return item

    def image(self, data: bytes) -> Any:
        """Stored bytes decoded on the CPU: CHW uint8 at ``size`` (or ``transform``'s result)."""
        img = fit_pil(decode_image(data), self.size, self.fit)
        if self.transform is not None:
            return self.transform(img)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = None  # reopened lazily in the worker (a repository does not cross processes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


def _decode_mode(decode: str, transform: Callable[..., Any] | None) -> Decode:
    if decode not in ("auto", "cpu", "gpu", "none"):
        raise ConfigError(f"decode must be auto, cpu, gpu or none, not {decode!r}", code=ErrorCode.TORCH_DECODE)
    if decode == "gpu" and transform is not None:
        raise ConfigError("transform takes a PIL image, decoded on the CPU; decode='gpu' gives CUDA tensors",
                          code=ErrorCode.TORCH_TRANSFORM,
                          hint="use size=/fit= (done on the GPU) and apply tensor transforms to each batch, or "
                               "decode='cpu'")
    if decode == "auto":
        from preprocess.pipeline.engines import gpu_count

        return "gpu" if transform is None and gpu_count() > 0 else "cpu"
    return decode  # type: ignore[return-value]


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: numbers -> tensors, tensors of one shape -> stacked, anything else -> lists
    (images of different sizes stay a list)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            same = all(isinstance(v, torch.Tensor) and v.shape == first.shape for v in values)
            out[key] = torch.stack(values) if same else values
        elif isinstance(first, bool | int | float) and not isinstance(first, str):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


def stack(images: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One ``[N, 3, H, W]`` tensor when every image has the same size, else the list."""
    if images and all(t.shape == images[0].shape for t in images):
        return torch.stack(list(images))
    return list(images)


class Loader:
    """A DataLoader over a :class:`VersionDataset` whose batches have decoded images (on the GPU
    when ``dataset.decode == "gpu"``). ``decoder``: the batch decoder to use (default: DALI on GPU
    ``device_id``; tests pass DALI's CPU variant, which runs the same code)."""

    def __init__(self, dataset: VersionDataset, loader: DataLoader[dict[str, Any]], device_id: int = 0,
                 decoder: Any = None) -> None:
        self.dataset = dataset
        self.loader = loader
        self._decoder = decoder
        if dataset.decode == "gpu" and decoder is None:
            from preprocess.pipeline.devices import Placement
            from preprocess.pipeline.engines.dali import ImageDecoder, gpu_count

            if gpu_count() == 0:
                raise ConfigError("decode='gpu' was asked for, but no CUDA device is visible", code=ErrorCode.NO_GPU,
                                  hint="decode='auto' (the GPU where there is one) or decode='cpu'")
            self._decoder = ImageDecoder(device=Placement("gpu", device_id), max_batch=max(1, loader.batch_size or 1))
        self.device = torch.device(self._decoder.device if self._decoder is not None else "cpu")

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            if self.dataset.decode == "gpu":
                batch["image"] = self._assemble(batch.pop("jpeg"), batch["image"])
            yield batch

    def _assemble(self, blobs: list[bytes | None], images: Any) -> torch.Tensor | list[torch.Tensor]:
        """The batch's images on the device: JPEG rows decoded by DALI, the rest (decoded by the workers,
        or that DALI could not decode) moved there; stacked when their sizes agree."""
        ds = self.dataset
        out: list[Any] = list(images)
        todo = [k for k, data in enumerate(blobs) if data is not None]
        decoded = self._decoder.decode([blobs[k] for k in todo]) if todo else []
        for k, px in zip(todo, decoded, strict=True):
            data = blobs[k]
            assert data is not None
            out[k] = ds.image(data) if px is None else fit_tensor(px, ds.size, ds.fit)
        return stack([t.to(self.device, non_blocking=True) for t in out])


def loader(dataset: VersionDataset, *, batch_size: int = 32, num_workers: int = 2, shuffle: bool = False,  # noqa: PLR0913 (DataLoader's own keywords)
           multiprocessing_context: str = "spawn", device_id: int = 0, **kwargs: Any) -> Loader:
    """A :class:`Loader` with the right defaults: spawned workers, :func:`collate`."""
    if multiprocessing_context == "fork":
        raise ConfigError("DataLoader workers cannot be forked after icechunk was opened", code=ErrorCode.TORCH_FORK,
                          hint="use multiprocessing_context='spawn' (the default) or 'forkserver'")
    dl: DataLoader[dict[str, Any]] = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=collate,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        persistent_workers=False, **kwargs)
    return Loader(dataset, dl, device_id=device_id)
