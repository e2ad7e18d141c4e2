"""A GPU's memory for the DALI engine and decoder: torch tensors on the device (zero-copy DLPack views of
DALI's outputs; the default dynamic executor never reuses outputs that are still referenced), and on
an engine's lane its own CUDA stream. Imported only on a GPU (it imports torch).

NOT RUN YET (written from the docs, no GPU on the machine it was written on): ``scripts/gpu-check`` runs
it; the host :class:`~preprocess.pipeline.engines.dali.host.Memory` it stands in for is tested.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor
from torch.utils.dlpack import from_dlpack

from preprocess.core.errors import InternalError
from preprocess.pipeline.batches import HostPixels, ModelBatch, Pixels
from preprocess.pipeline.devices import Placement
from preprocess.pipeline.engines.dali.host import DaliTensor, Image_, Memory, Row
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.extractor.view import view_arrays


def _device(x: Image_ | Row) -> Tensor:
    if isinstance(x, np.ndarray):
        raise InternalError("a host array in device memory")
    return x


class CudaMemory(Memory):
    """GPU ``where.index``; with ``stream``, its own CUDA stream (one per engine: a Processor lane)."""

    def __init__(self, where: Placement, *, stream: bool = False) -> None:
        super().__init__(where)
        self._device_id = where.index
        self.cuda_stream = torch.cuda.Stream(device=where.torch) if stream else None  # type: ignore[no-untyped-call]
        self._norm: tuple[Tensor, Tensor] | None = None  # (mean, std) per channel on the device

    def lane(self) -> contextlib.AbstractContextManager[object]:
        return torch.cuda.stream(self.cuda_stream) if self.cuda_stream is not None else contextlib.nullcontext()

    def bind(self) -> None:
        # torch's current stream is per thread: the lane's ops, and the extractor's, go on it
        if self.cuda_stream is not None:
            torch.cuda.set_stream(self.cuda_stream)

    def stream(self) -> int:
        return int(torch.cuda.current_stream(self._device_id).cuda_stream)

    def image(self, tensor: DaliTensor) -> Image_:
        return from_dlpack(tensor)  # DALI makes torch's current (the lane's) stream wait

    def row(self, tensor: DaliTensor) -> Row:
        return from_dlpack(tensor)

    def of(self, pixels: Pixels) -> Image_:
        return pixels.tensor()

    def upload(self, pixels: HostPixels) -> Image_:
        return torch.from_numpy(pixels).to(self.where.torch)

    def host(self, pixels: Image_) -> HostPixels:
        return np.ascontiguousarray(_device(pixels).cpu().numpy())

    def stack(self, rows: list[Row], view: InputView) -> ModelBatch:
        """Per-sample view rows -> one model batch (a CUDA tensor exposing __dlpack__)."""
        empty = (0, 3, view.height, view.width) if view.layout == "NCHW" else (0, view.height, view.width, 3)
        batch = torch.stack([_device(r) for r in rows]) if rows else torch.empty(empty, dtype=torch.float32,
                                                                                  device=self.where.torch)
        torch.cuda.current_stream(self._device_id).synchronize()  # onnxruntime reads it on its own stream
        return ModelBatch(batch, view.layout)

    def tile_row(self, tile: Image_, view: InputView) -> Row:
        if self._norm is None:
            mean, std = view_arrays(view)
            self._norm = (torch.tensor(mean, device=self.where.torch), torch.tensor(std, device=self.where.torch))
        mean_t, std_t = self._norm
        t = _device(tile).permute(2, 0, 1).float()
        if tuple(t.shape[1:]) != (view.height, view.width):
            t = torch.nn.functional.interpolate(t[None], size=(view.height, view.width), mode="bilinear",
                                                antialias=True, align_corners=False)[0]
        t = (t - mean_t[:, None, None]) / std_t[:, None, None]
        t = t.flip(0) if view.colour == "BGR" else t
        return t if view.layout == "NCHW" else t.permute(1, 2, 0).contiguous()
