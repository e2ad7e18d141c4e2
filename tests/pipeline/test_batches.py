"""What flows between engines, extractor and gate (preprocess/pipeline/batches.py): the one similarity(),
pixels and model batches that say their device and layout, and rows split back per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from preprocess.core.errors import InternalError
from preprocess.pipeline.batches import ModelBatch, Pixels, similarity, split_rows


def _unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=-1, keepdims=True), dtype=np.float32)


def test_similarity_is_the_cosine_row_by_row_or_against_one() -> None:
    rng = np.random.default_rng(0)
    a, b = _unit(rng.normal(size=(5, 64))), _unit(rng.normal(size=(5, 64)))
    got = similarity(a, b)
    assert got.dtype == np.float32 and got.shape == (5,)
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    cosine = (wide_a * wide_b).sum(1) / np.linalg.norm(wide_a, axis=1) / np.linalg.norm(wide_b, axis=1)
    assert np.allclose(got, cosine, atol=1e-6)
    assert similarity(a, a) == pytest.approx(np.ones(5), abs=1e-6)
    against = similarity(a, b[2])  # every row against one embedding
    assert against.shape == (5,) and against[2] == pytest.approx(float(a[2] @ b[2]), abs=1e-6)
    assert np.array_equal(similarity(a, b), np.einsum("nd,nd->n", a, b))  # the gate's numbers, bit for bit


def test_pixels_say_where_they_are() -> None:
    img = Image.new("RGB", (6, 4), (10, 20, 30))
    px = Pixels(img)
    assert (px.device, px.width, px.height, Pixels.layout) == ("cpu", 6, 4, "HWC")
    assert px.image() is img and px.array().shape == (4, 6, 3)
    with pytest.raises(InternalError):
        px.tensor()
    arr = Pixels(np.zeros((4, 6, 3), np.uint8))
    assert (arr.device, arr.width, arr.height) == ("cpu", 6, 4)
    with pytest.raises(InternalError):
        arr.image()
    cpu_tensor = Pixels(torch.zeros((4, 6, 3), dtype=torch.uint8))
    assert cpu_tensor.device == "cpu" and cpu_tensor.width == 6
    with pytest.raises(InternalError):  # a tensor's host copy is its engine's to make, in its stream
        cpu_tensor.array()


def test_model_batches_slice_as_views_and_concatenate() -> None:
    rows = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)
    batch = ModelBatch(rows, "NCHW")
    assert len(batch) == 4 and batch.device == "cpu"
    part = batch[1:3]
    assert len(part) == 2 and part.layout == "NCHW" and np.shares_memory(part.host(), rows)
    both = ModelBatch.concat([batch[:1], batch[2:]])
    assert np.array_equal(both.host(), rows[[0, 2, 3]])
    halves = [ModelBatch(torch.from_numpy(rows[:2]), "NCHW"), ModelBatch(torch.from_numpy(rows[2:]), "NCHW")]
    on_torch = ModelBatch.concat(halves)
    assert isinstance(on_torch.rows, torch.Tensor) and np.array_equal(on_torch.host(), rows)
    with pytest.raises(InternalError):
        ModelBatch.concat([batch, ModelBatch(rows.transpose(0, 2, 3, 1), "NHWC")])


def test_rows_split_back_per_image() -> None:
    emb = np.arange(12, dtype=np.float32).reshape(6, 2)
    parts = split_rows(emb, [1, 3, 2])
    assert [p.shape[0] for p in parts] == [1, 3, 2] and np.array_equal(parts[2], emb[4:])
