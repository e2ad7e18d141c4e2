"""PyTorch access to one version of the dataset (imported only when used: it needs torch).

::

    from preprocess.torchdata import VersionDataset, loader

    ds = VersionDataset("cams.icechunk", ref="v1")       # pinned to the snapshot v1 names
    for batch in loader(ds, batch_size=32, num_workers=4):
        batch["image"]    # list of uint8 [3, H, W] tensors (CPU), or CUDA tensors (decode="gpu")
        batch["quality"]  # tensor; strings (source_path, ...) are lists

``decode``:
- ``"cpu"``: workers decode with pillow-simd into uint8 CHW tensors (or ``transform(PIL image)``);
- ``"gpu"``: workers read the stored bytes only; :func:`loader` decodes each batch in the main
  process on the GPU with DALI (:class:`preprocess.engines.dali.ImageDecoder`, HWC CUDA tensors);
- ``"none"``: bytes only (``item["jpeg"]``); ``"auto"``: ``gpu`` where DALI sees a CUDA device.

Workers reopen the repository lazily (the dataset pickles as location + snapshot id), so it works
with several DataLoader workers. They must be started with ``spawn`` or ``forkserver``: forking a
process after icechunk was opened can deadlock, so a forked worker raises ConfigError TORCH_FORK
(:func:`loader` uses spawn).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from preprocess.errors import ConfigError
from preprocess.store import ITEM_COLUMNS, Dataset, open_dataset
from preprocess.store.reader import decode as decode_image

Decode = Literal["auto", "cpu", "gpu", "none"]
FIELDS = tuple(c.name for c in ITEM_COLUMNS if c.name != "jpeg")


class VersionDataset(TorchDataset[dict[str, Any]]):
    """Items of one snapshot of the dataset at ``location``: ``{"index", "image" | "jpeg", fields...}``."""

    def __init__(self, location: str, ref: str = "main", *, decode: Decode = "auto",
                 fields: Sequence[str] | None = None,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if decode not in ("auto", "cpu", "gpu", "none"):
            raise ConfigError(f"decode must be auto, cpu, gpu or none, not {decode!r}", code="TORCH_DECODE")
        if decode == "auto":
            from preprocess.engines import gpu_count

            decode = "gpu" if gpu_count() > 0 else "cpu"
        self.decode: Decode = decode
        self.location = location
        self.fields = tuple(FIELDS if fields is None else fields)
        unknown = set(self.fields) - set(FIELDS)
        if unknown:
            raise ConfigError(f"unknown fields {sorted(unknown)}", code="STORE_FIELD",
                              hint=f"fields: {', '.join(FIELDS)}")
        self.transform = transform
        self._pid = os.getpid()
        self._ds: Dataset | None = open_dataset(location, ref=ref)
        self.ref = ref
        self.snapshot_id = self._ds.snapshot_id  # every worker reads exactly this snapshot
        self._n = len(self._ds)

    def __len__(self) -> int:
        return self._n

    def _dataset(self) -> Dataset:
        if self._ds is not None and os.getpid() != self._pid:
            raise ConfigError("this dataset was opened before the process forked (a DataLoader worker "
                              "started with the fork method); forking after icechunk is opened can deadlock",
                              code="TORCH_FORK",
                              hint="use preprocess.torchdata.loader(), or DataLoader(..., "
                                   "multiprocessing_context='spawn')")
        if self._ds is None:
            self._ds = open_dataset(self.location, ref=self.snapshot_id)
            self._pid = os.getpid()
        return self._ds

    def __getitem__(self, i: int) -> dict[str, Any]:
        ds = self._dataset()
        record = ds.record(int(i))
        item: dict[str, Any] = {"index": record["index"], **{k: record[k] for k in self.fields}}
        data = ds.jpeg(int(i))
        if self.decode == "cpu":
            img = decode_image(data)
            item["image"] = (self.transform(img) if self.transform is not None
                             else torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()))
        else:
            item["jpeg"] = data
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ds"] = None  # reopened lazily in the worker (a repository does not cross processes)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: numbers -> tensors, tensors of one shape -> stacked, anything else -> lists
    (images of different sizes stay a list)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            same = all(v.shape == first.shape for v in values)
            out[key] = torch.stack(values) if same else values
        elif isinstance(first, bool | int | float) and not isinstance(first, str):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


class Loader:
    """A DataLoader over a :class:`VersionDataset` whose batches have decoded images (on the GPU
    when ``dataset.decode == "gpu"``)."""

    def __init__(self, dataset: VersionDataset, loader: DataLoader[dict[str, Any]], device_id: int = 0) -> None:
        self.dataset = dataset
        self.loader = loader
        self._decoder: Any = None
        if dataset.decode == "gpu":
            from preprocess.engines.dali import ImageDecoder

            self._decoder = ImageDecoder(device="gpu", device_id=device_id,
                                         max_batch=max(1, loader.batch_size or 1))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            if self._decoder is not None:
                batch["image"] = self._decoder(batch.pop("jpeg"))
            yield batch


def loader(dataset: VersionDataset, *, batch_size: int = 32, num_workers: int = 2, shuffle: bool = False,  # noqa: PLR0913 (DataLoader's own keywords)
           multiprocessing_context: str = "spawn", device_id: int = 0, **kwargs: Any) -> Loader:
    """A :class:`Loader` with the right defaults: spawned workers, :func:`collate`."""
    if multiprocessing_context == "fork":
        raise ConfigError("DataLoader workers cannot be forked after icechunk was opened", code="TORCH_FORK",
                          hint="use multiprocessing_context='spawn' (the default) or 'forkserver'")
    dl: DataLoader[dict[str, Any]] = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=collate,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
        persistent_workers=False, **kwargs)
    return Loader(dataset, dl, device_id=device_id)
