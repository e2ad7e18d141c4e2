"""The host's memory for the DALI engine and decoder: DALI's CPU outputs copied into numpy arrays (the
CPU pipelines, the path CI runs). :class:`Memory` is also the interface the GPU's memory
(:mod:`.cuda`) implements; :func:`.memory.memory` picks one.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from nvidia.dali.tensors import TensorCPU, TensorGPU
from PIL import Image

from preprocess.core.errors import InternalError
from preprocess.pipeline.batches import HostPixels, ModelBatch, Pixels
from preprocess.pipeline.devices import Placement
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.extractor.view import view_arrays

if TYPE_CHECKING:
    from torch import Tensor

DaliTensor = TensorCPU | TensorGPU  # one sample of a DALI output
type Image_ = HostPixels | Tensor  # HWC uint8 pixels, on the host or a device
type Row = NDArray[np.float32] | Tensor  # one model-view row, on the host or a device


def _host[A: np.generic](x: NDArray[A] | Tensor) -> NDArray[A]:
    if not isinstance(x, np.ndarray):
        raise InternalError("a device tensor in host memory")
    return x


class Memory:
    """The host: DALI's CPU outputs copied into numpy arrays."""

    def __init__(self, where: Placement) -> None:
        self.where = where

    def lane(self) -> contextlib.AbstractContextManager[object]:
        """Makes the lane's stream current for a block (on the GPU)."""
        return contextlib.nullcontext()

    def bind(self) -> None:
        """Makes the lane's stream current in the calling thread for good (on the GPU)."""

    def stream(self) -> int:
        """The current CUDA stream's handle, for nvImageCodec (0: none)."""
        return 0

    def image(self, tensor: DaliTensor) -> Image_:
        """One sample of a DALI output of pixels, adopted (a copy on the host)."""
        return np.array(tensor, dtype=np.uint8)

    def row(self, tensor: DaliTensor) -> Row:
        """One sample of a DALI output of model-view rows, adopted (a copy on the host)."""
        return np.array(tensor, dtype=np.float32)

    def of(self, pixels: Pixels) -> Image_:
        """A prepared image's pixels, as this memory holds them."""
        return pixels.array()

    def upload(self, pixels: HostPixels) -> Image_:
        """Host HWC pixels (decoded on the CPU) -> this memory."""
        return pixels

    def host(self, pixels: Image_) -> HostPixels:
        """Pixels as a C-contiguous host array."""
        return np.ascontiguousarray(_host(pixels))

    def stack(self, rows: list[Row], view: InputView) -> ModelBatch:
        """Per-sample view rows -> one model batch."""
        empty = (0, 3, view.height, view.width) if view.layout == "NCHW" else (0, view.height, view.width, 3)
        host = [_host(r) for r in rows]
        return ModelBatch(np.stack(host) if host else np.empty(empty, dtype=np.float32), view.layout)

    def tile_row(self, tile: Image_, view: InputView) -> Row:
        """One HWC uint8 tile -> one model-view row, on the same device.

        Tiles are model-sized except where the image is smaller than the model's input: those are
        stretched (bilinear, antialiased), as the model view stretches a whole image.
        """
        mean, std = view_arrays(view)
        arr = np.ascontiguousarray(_host(tile))
        if arr.shape[:2] != (view.height, view.width):
            arr = np.asarray(Image.fromarray(arr).resize((view.width, view.height), Image.Resampling.BILINEAR))
        x = (arr.astype(np.float32) - mean) / std
        x = x[..., ::-1] if view.colour == "BGR" else x
        return np.ascontiguousarray(x.transpose(2, 0, 1) if view.layout == "NCHW" else x)
