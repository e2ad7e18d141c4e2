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


def planes(image: Image.Image, view: InputView, *, precise: bool) -> list[NDArray[np.float32]]:
    """An RGB image stretched to the model's input size (bilinear, antialiased) as three float32 planes
    (R, G, B). ``precise``: resampled in floating point, no rounding to 8 bits after the resize (the same
    arithmetic as torch's antialiased bilinear interpolation, to ~1e-5, which the GPU path uses). A crop's
    embedding can be very sensitive to that rounding: on a textured crop an 8-bit resize moved a JPEG
    candidate's similarity from 0.915 to 0.971. Else resized in 8 bits (the whole-image view, as it always
    was)."""
    size = (view.width, view.height)
    if image.size == size:
        precise = False  # nothing to resample
    if not precise:
        small = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
        rgb = np.asarray(small)
        return [rgb[..., c].astype(np.float32) for c in range(3)]
    # Pillow converts and resamples each channel in C ("F": 32-bit float pixels), no numpy copy in between
    return [np.asarray(band.convert("F").resize(size, Image.Resampling.BILINEAR)) for band in image.split()]


def stretch(image: Image.Image | NDArray[np.uint8], view: InputView) -> NDArray[np.float32]:
    """An RGB image (or HWC uint8 array) stretched to the model's input size in floating point
    (:func:`planes`, ``precise``), HWC float32."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image), "RGB")
    return np.stack(planes(img, view, precise=True), axis=-1)


def model_view(images: Sequence[Image.Image], view: InputView, *,
               precise: bool | Sequence[bool] = False) -> ModelBatch:
    """A batch of RGB images -> one float32 batch in the model's layout, on the host. ``precise`` (for all
    images, or one flag each): resample in floating point (:func:`planes`; regions of an image at its own
    resolution), else with 8-bit output (the whole-image view, as it always was). Each plane is normalised
    straight into its place in the batch: ``(x - mean) / std``, channel first."""
    flags = [precise] * len(images) if isinstance(precise, bool) else list(precise)
    mean, std = view_arrays(view)
    out = np.empty((len(images), 3, view.height, view.width), dtype=np.float32)
    order = (2, 1, 0) if view.colour == "BGR" else (0, 1, 2)
    for i, img in enumerate(images):
        got = planes(img, view, precise=flags[i])
        for at, c in enumerate(order):
            np.subtract(got[c], mean[c], out=out[i, at])
            out[i, at] /= std[c]
    if view.layout == "NCHW":
        return ModelBatch(out, view.layout)
    return ModelBatch(np.ascontiguousarray(out.transpose(0, 2, 3, 1)), view.layout)
