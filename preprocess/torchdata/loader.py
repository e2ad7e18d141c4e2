"""``loader()``: a DataLoader over a :class:`VersionDataset` with the reader's defaults, and the GPU
batch decoding (DALI in the main process) when the dataset decodes on the GPU."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Sampler

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.torchdata import forking
from preprocess.torchdata.dataset import Fit, Item, VersionDataset, fit_box

Batch = dict[str, object]
StartMethod = Literal["fork", "forkserver", "spawn"]
PRELOAD = ["preprocess.torchdata.dataset"]  # what a forkserver imports once for all its workers (no icechunk)


class LoaderOptions(TypedDict, total=False):
    """DataLoader's own keywords that :func:`loader` passes through as given."""

    sampler: Sampler[int] | Sequence[int] | None
    batch_sampler: Sampler[list[int]] | Sequence[list[int]] | None
    collate_fn: Callable[[list[Item]], Batch] | None
    pin_memory: bool
    drop_last: bool
    timeout: float
    worker_init_fn: Callable[[int], None] | None
    generator: torch.Generator | None
    pin_memory_device: str
    in_order: bool


class BatchDecoder(Protocol):
    """Decodes a batch of stored JPEGs on a device (:class:`preprocess.pipeline.engines.dali.ImageDecoder`):
    each image HWC uint8 (numpy, or a tensor on ``device``), None for one it cannot decode."""

    device: str

    def decode(self, blobs: list[bytes]) -> Sequence[npt.NDArray[np.uint8] | torch.Tensor | None]: ...


def fit_tensor(hwc: npt.NDArray[np.uint8] | torch.Tensor, size: tuple[int, int] | None, fit: Fit) -> torch.Tensor:
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


def collate(samples: Sequence[Item]) -> Batch:
    """Batch items: numbers -> tensors, tensors of one shape -> stacked, anything else -> lists
    (images of different sizes stay a list)."""
    out: Batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            same = all(isinstance(v, torch.Tensor) and v.shape == first.shape for v in values)
            out[key] = torch.stack([v for v in values if isinstance(v, torch.Tensor)]) if same else values
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

    def __init__(self, dataset: VersionDataset, loader: DataLoader[Item], device_id: int = 0,
                 decoder: BatchDecoder | None = None) -> None:
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

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            if self.dataset.decode == "gpu":
                blobs, images = batch.pop("jpeg"), batch["image"]  # images: stacked when the CPU decoded them all
                assert isinstance(blobs, list) and isinstance(images, list | torch.Tensor)
                batch["image"] = self._assemble(blobs, list(images))
            yield batch

    def _assemble(self, blobs: list[bytes | None], images: list[object]) -> torch.Tensor | list[torch.Tensor]:
        """The batch's images on the device: JPEG rows decoded by DALI, the rest (decoded by the workers,
        or that DALI could not decode) moved there; stacked when their sizes agree."""
        ds, out = self.dataset, list(images)
        todo = [k for k, data in enumerate(blobs) if data is not None]
        assert self._decoder is not None
        decoded = self._decoder.decode([b for b in blobs if b is not None]) if todo else []
        for k, px in zip(todo, decoded, strict=True):
            data = blobs[k]
            assert data is not None
            out[k] = ds.image(data) if px is None else fit_tensor(px, ds.size, ds.fit)
        tensors = [t for t in out if isinstance(t, torch.Tensor)]
        assert len(tensors) == len(out), "every image of a GPU batch is a tensor"
        return stack([t.to(self.device, non_blocking=True) for t in tensors])


def start_method(asked: StartMethod | None) -> StartMethod:
    """How workers start: ``fork`` while this process has not loaded icechunk (a forked worker inherits
    every import and starts at once), else ``forkserver`` (one server imports the reader for all the
    workers; it imports icechunk only in its children). ``fork`` asked for when it is not safe is a
    ConfigError TORCH_FORK, here, before any worker starts."""
    if asked == "fork" and not forking.can_fork():
        raise ConfigError("DataLoader workers cannot be forked: this process has loaded icechunk, and a forked "
                          "child cannot read a store then", code=ErrorCode.TORCH_FORK,
                          hint="leave multiprocessing_context out (loader picks forkserver then), or pass "
                               "'forkserver' or 'spawn'")
    if asked is not None:
        return asked
    return "fork" if forking.can_fork() else "forkserver"


def loader(dataset: VersionDataset, *, batch_size: int = 32, num_workers: int = 2, shuffle: bool = False,  # noqa: PLR0913 (DataLoader's own keywords)
           multiprocessing_context: StartMethod | None = None, persistent_workers: bool | None = None,
           prefetch_factor: int | None = None, device_id: int = 0, **options: Unpack[LoaderOptions]) -> Loader:
    """A :class:`Loader`: :func:`collate`, workers started by :func:`start_method`, kept across epochs
    (``persistent_workers``, default True with workers: each keeps its open store), ``prefetch_factor``
    batches ahead per worker (DataLoader's default 2). Other DataLoader keywords pass through."""
    workers = num_workers > 0
    context = None
    if workers:
        method = start_method(multiprocessing_context)
        context = mp.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(PRELOAD)
    options.setdefault("collate_fn", collate)
    dl: DataLoader[Item] = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, multiprocessing_context=context,
        persistent_workers=workers if persistent_workers is None else persistent_workers,
        prefetch_factor=prefetch_factor if workers else None, **options)
    return Loader(dataset, dl, device_id=device_id)
