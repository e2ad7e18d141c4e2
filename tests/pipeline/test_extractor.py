"""Inference (preprocess/pipeline/extractor/session.py): how a batch is cut never changes an embedding, device
batches go through IOBinding in fixed-shape slices, the CUDA provider's options, and a clean stdout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from preprocess.pipeline.batches import ModelBatch
from preprocess.pipeline.extractor import session
from preprocess.pipeline.extractor.build import BuiltModel, build
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.extractor.session import GPU_BATCH, Extractor, cuda_options
from tests.paths import ROOT


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(21, 3, 224, 224)).astype(np.float32)


@pytest.fixture(scope="module")
def built() -> BuiltModel:
    return build(find_manifest("mobilenetv2-imagenet"))


def nchw(rows: np.ndarray | torch.Tensor) -> ModelBatch:
    return ModelBatch(rows, "NCHW")


def test_fixed_shape_calls_make_embeddings_independent_of_the_batch(built: BuiltModel, batch: np.ndarray) -> None:
    ex = Extractor(built, threads=2, fixed_batch=8)
    whole = ex.embed(nchw(batch))  # 8 + 8 + 5 (padded to 8)
    assert whole.shape == (21, 1280)
    for i in (0, 7, 20):
        assert np.array_equal(ex.embed(nchw(batch)[i:i + 1])[0], whole[i])
    assert np.array_equal(ex.embed(nchw(batch[5:14])), whole[5:14])


def test_a_batch_in_another_layout_is_refused(built: BuiltModel, batch: np.ndarray) -> None:
    """A model batch says its layout: one made for another model's view never reaches this one."""
    from preprocess.core.errors import InternalError

    with pytest.raises(InternalError, match="NHWC batch"):
        Extractor(built, threads=1).embed(ModelBatch(batch.transpose(0, 2, 3, 1), "NHWC"))


def test_device_batches_take_the_iobinding_path_in_slices(built: BuiltModel, batch: np.ndarray,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU glue (DLPack tensor -> IOBinding, sliced and padded to the fixed shape) on a torch CPU
    tensor: the same code as for the engine's CUDA batches, the same embeddings as numpy input."""
    ex = Extractor(built, threads=2, fixed_batch=8)
    calls: list[int] = []
    real = ex._run_bound

    def spy(rows: torch.Tensor) -> np.ndarray:  # calls through; records each call's size and view-ness
        calls.append(int(rows.shape[0]))
        assert rows.data_ptr() >= tensor.data_ptr()  # a slice of the batch, not a copy
        return real(rows)

    monkeypatch.setattr(ex, "_run_bound", spy)
    tensor = torch.from_numpy(batch)
    got = ex.embed(nchw(tensor))
    assert calls == [8, 8, 5]
    assert np.array_equal(got, ex.embed(nchw(batch)))


def test_the_cuda_provider_is_reproducible_and_bounded() -> None:
    opts = cuda_options(1)
    assert opts["device_id"] == 1
    assert opts["use_tf32"] == 0  # TF32 moves embeddings near the threshold
    assert opts["cudnn_conv_algo_search"] == "HEURISTIC"  # no per-run benchmarking: one choice per shape
    assert opts["arena_extend_strategy"] == "kSameAsRequested"
    assert GPU_BATCH >= 32


def test_preloading_cuda_libraries_never_writes_to_stdout(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # Test double: onnxruntime's preload_dlls prints its warnings (missing MSVC/cuDNN, CUDA version) with
    # print(); this stands in for such a warning, which would corrupt `--json`.
    monkeypatch.setattr("onnxruntime.preload_dlls", lambda: print("WARNING: cuDNN not found"))
    session._preload_cuda_libraries()
    out = capsys.readouterr()
    assert out.out == "" and "cuDNN" in out.err
    real = subprocess.run([sys.executable, "-c",
                           "from preprocess.pipeline.extractor.session import _preload_cuda_libraries;"
                           "_preload_cuda_libraries()"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert real.stdout == ""


@pytest.mark.gpu
def test_gpu_embeddings_match_the_cpu_and_ignore_the_batch(built: BuiltModel, batch: np.ndarray) -> None:
    gpu = Extractor(built, device="gpu")
    cpu = Extractor(built, threads=4)
    on_gpu = nchw(torch.from_numpy(batch).cuda())
    assert on_gpu.device == "gpu"
    whole = gpu.embed(on_gpu)
    alone = np.stack([gpu.embed(on_gpu[i:i + 1])[0] for i in range(len(batch))])
    assert np.array_equal(whole, alone)  # one shape for every call: identical, not just close
    ref = cpu.embed(nchw(batch))
    assert float(np.abs(whole - ref).max()) < 1e-4  # float32 on both (no TF32)
