"""What flows between the engines, the extractor and the gate, typed: an image's :class:`Pixels`, the
model's input (:class:`ModelBatch`), :data:`Embeddings`, and the one :func:`similarity` of two of them.

Each batch says its layout and its device (zarr-python's CPU and GPU buffers are the model): on the host
a numpy array (or, for the pillow engine's pixels, a PIL image), on a GPU a torch CUDA tensor (a DLPack
view of DALI's output, which onnxruntime reads through DLPack). torch is imported only where such a
tensor is made (the DALI engine on a GPU); here it is named for the type checker only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from preprocess.core.errors import InternalError
from preprocess.pipeline.devices import DeviceName

if TYPE_CHECKING:
    from torch import Tensor

HostPixels = NDArray[np.uint8]  # [H, W, 3] RGB on the host
Embeddings = NDArray[np.float32]  # [N, D], each row L2-normalised (what the extractor gives)
Layout = Literal["NCHW", "NHWC"]  # a model's input layout (the manifest's ``input.layout``)


def similarity(a: Embeddings, b: Embeddings) -> NDArray[np.float32]:
    """Cosine similarity of L2-normalised embeddings, float32 [N]: row by row when both are [N, D]
    (a candidate against its own source), or every row of ``a`` against one embedding ``b`` [D]."""
    sims = a @ b if b.ndim == 1 else np.einsum("nd,nd->n", a, b)
    return np.asarray(sims, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Pixels:
    """One image's RGB pixels, HWC uint8, where its engine keeps them: on the host (a numpy array, or
    the PIL image the pillow engine encodes from) or on a GPU (a torch CUDA tensor)."""

    data: Image.Image | HostPixels | Tensor
    layout: ClassVar[Literal["HWC"]] = "HWC"

    @property
    def device(self) -> DeviceName:
        data = self.data
        return "cpu" if isinstance(data, Image.Image | np.ndarray) or not data.is_cuda else "gpu"

    @property
    def width(self) -> int:
        return self.data.width if isinstance(self.data, Image.Image) else int(self.data.shape[1])

    @property
    def height(self) -> int:
        return self.data.height if isinstance(self.data, Image.Image) else int(self.data.shape[0])

    def image(self) -> Image.Image:
        """The PIL image (the pillow engine's pixels)."""
        if not isinstance(self.data, Image.Image):
            raise InternalError(f"expected a PIL image, got {type(self.data).__name__}")
        return self.data

    def array(self) -> HostPixels:
        """The pixels as a host array (a PIL image is converted; device pixels must be copied by their
        engine, in its stream)."""
        if isinstance(self.data, Image.Image):
            return np.asarray(self.data)
        if not isinstance(self.data, np.ndarray):
            raise InternalError("device pixels have no host array: copy them in their engine's stream")
        return self.data

    def tensor(self) -> Tensor:
        """The device tensor (the DALI engine's pixels on a GPU)."""
        if isinstance(self.data, Image.Image | np.ndarray):
            raise InternalError(f"expected a device tensor, got {type(self.data).__name__}")
        return self.data


@dataclass(frozen=True, eq=False)
class ModelBatch:
    """The model's input: one float32 row per view (normalised, at the model's input size) in the
    model's ``layout``, on the host (numpy) or a GPU (a torch CUDA tensor exposing ``__dlpack__``)."""

    rows: NDArray[np.float32] | Tensor
    layout: Layout

    @property
    def device(self) -> DeviceName:
        rows = self.rows
        return "cpu" if isinstance(rows, np.ndarray) or not rows.is_cuda else "gpu"

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, rows: slice) -> ModelBatch:
        """Some rows, as a view (no copy)."""
        return ModelBatch(self.rows[rows], self.layout)

    def host(self) -> NDArray[np.float32]:
        """The rows on the host (a copy from a device)."""
        if isinstance(self.rows, np.ndarray):
            return self.rows
        return np.asarray(self.rows.detach().cpu().numpy(), dtype=np.float32)

    @classmethod
    def concat(cls, batches: Sequence[ModelBatch]) -> ModelBatch:
        """Several batches for one model as one (one model call for several views of the images)."""
        layouts = {b.layout for b in batches}
        if len(layouts) != 1:
            raise InternalError(f"batches in {sorted(layouts) or 'no'} layouts cannot be one model call")
        layout = layouts.pop()
        host = [b.rows for b in batches if isinstance(b.rows, np.ndarray)]
        if len(host) == len(batches):
            return cls(np.concatenate(host), layout)
        import torch  # device batches are torch tensors

        return cls(torch.cat([torch.as_tensor(b.rows) for b in batches]), layout)


def split_rows(embeddings: Embeddings, counts: list[int]) -> list[Embeddings]:
    """Embeddings of a batch that holds several rows per image, image by image (``counts``: rows per
    image, in order; they sum to the batch's length)."""
    return np.split(embeddings, np.cumsum(counts)[:-1])
