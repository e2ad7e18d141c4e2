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


def stretch(image: Image.Image | NDArray[np.uint8], view: InputView) -> NDArray[np.float32]:
    """An RGB image stretched to the model's input size (bilinear, antialiased), HWC float32, resampled in
    floating point: no rounding to 8 bits after the resize (the same arithmetic as torch's antialiased
    bilinear interpolation, to ~1e-5, which the GPU path uses). A crop's embedding can be very sensitive to
    that rounding: on a textured crop an 8-bit resize moved a JPEG candidate's similarity from 0.915 to 0.971."""
    arr = np.asarray(image)
    size = (view.width, view.height)
    if arr.shape[1::-1] == size:
        return arr.astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c], dtype=np.float32), "F")
                                .resize(size, Image.Resampling.BILINEAR)) for c in range(3)], axis=-1)


def model_view(images: Sequence[Image.Image], view: InputView, *, precise: bool = False) -> ModelBatch:
    """A batch of RGB images -> one float32 batch in the model's layout, on the host. ``precise``: resample
    in floating point (:func:`stretch`; regions of an image at its own resolution), else with 8-bit
    output (the whole-image view, as it always was)."""
    mean, std = view_arrays(view)
    out = np.empty((len(images), view.height, view.width, 3), dtype=np.float32)
    for i, img in enumerate(images):
        if precise:
            out[i] = stretch(img, view)
            continue
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
