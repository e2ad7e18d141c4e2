"""The model's view of an image on the CPU: stretch to the input size, scale, normalise, lay out.

The DALI engine builds the same view with DALI operators (resize with linear antialiasing,
then crop_mirror_normalize); this numpy/Pillow version is the CPU reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from preprocess.pipeline.batches import ModelBatch
from preprocess.pipeline.extractor.manifest import InputView


def view_arrays(view: InputView) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(mean, std) in 0..255 pixel units, shaped for broadcasting over HWC."""
    mean = np.asarray(view.mean, dtype=np.float32) * view.scale
    std = np.asarray(view.std, dtype=np.float32) * view.scale
    return mean, std


def model_view(images: Sequence[Image.Image], view: InputView) -> ModelBatch:
    """A batch of RGB images -> one float32 batch in the model's layout, on the host."""
    mean, std = view_arrays(view)
    out = np.empty((len(images), view.height, view.width, 3), dtype=np.float32)
    for i, img in enumerate(images):
        small = img if img.size == (view.width, view.height) else img.resize(
            (view.width, view.height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(small, dtype=np.float32)
    out -= mean
    out /= std
    if view.colour == "BGR":
        out = out[..., ::-1]
    if view.layout == "NCHW":
        return ModelBatch(np.ascontiguousarray(out.transpose(0, 3, 1, 2)), view.layout)
    return ModelBatch(out, view.layout)
