"""Inference with onnxruntime: the only module that imports it.

A :class:`~preprocess.pipeline.batches.ModelBatch` in, :data:`~preprocess.pipeline.batches.Embeddings`
out. CPU: the CPU provider on numpy batches. GPU: the CUDA provider with IOBinding, taking the
engine's device batch through DLPack, so pixels never leave the GPU.

Batch independence ("how a batch is cut never changes a row"): on the GPU every model call has the
same shape. A batch is cut into slices of ``fixed_batch`` rows (views, no copy) and the last, short
slice is padded to that size (one small copy), so cuDNN's HEURISTIC algorithm choice, which depends
on the input shape, never changes with how many images are still searching; TF32 is off (the CUDA
provider turns it on by default, which moves embeddings by ~1e-3, enough to flip a decision at the
threshold). The same rule can be asked for on the CPU (``fixed_batch=``), which is how it is tested.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from preprocess.core.codes import ErrorCode
from preprocess.core.cpus import cpu_lanes
from preprocess.core.errors import ConfigError, InternalError, device_fault
from preprocess.pipeline.batches import Embeddings, ModelBatch
from preprocess.pipeline.devices import DeviceName
from preprocess.pipeline.extractor.built import BuiltModel

if TYPE_CHECKING:
    from torch import Tensor

ort.set_default_logger_severity(3)

# Calls of 1-2 rows cost 4.0-4.4 ms a row on one core, calls of 6-8 rows 4.7-5.0 (Zen 5, both cores busy:
# bench/NOTES.md, 2026-12-07 session 6; there too, a row on Zen 2 and Zen 4 costs no more in small calls);
# batches of 32 cost 2-3x more per row than batches of 8 (session 1).
CPU_CHUNK = 2
GPU_BATCH = 64  # every GPU model call has this many rows (the last slice padded)


def cuda_options(device_id: int) -> dict[str, str | int]:
    """The CUDA provider's options: what makes embeddings reproducible and memory bounded."""
    return {
        "device_id": device_id,
        # HEURISTIC: no benchmarking (EXHAUSTIVE re-times every convolution per new shape, and may pick
        # another algorithm on another run); with one fixed shape per session, one choice for the job.
        "cudnn_conv_algo_search": "HEURISTIC",
        "use_tf32": 0,  # full float32: TF32 rounds the convolutions' inputs to 10-bit mantissas
        "arena_extend_strategy": "kSameAsRequested",  # grow the arena by what is asked, not powers of two
    }


def _preload_cuda_libraries() -> None:
    """Load cuBLAS, cuDNN, cuRAND ... from the nvidia-* wheels before the CUDA provider links them.
    ``ort.preload_dlls`` prints its warnings to stdout, which would corrupt ``--json``: to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        ort.preload_dlls()


class Extractor:
    """Embeds batches of model-view images into L2-normalised feature vectors.

    ``fixed_batch``: every model call gets exactly this many rows (default: :data:`GPU_BATCH` on the GPU,
    none on the CPU, where calls of up to :data:`CPU_CHUNK` rows run as they are).
    """

    def __init__(self, built: BuiltModel, *, device: DeviceName = "cpu", device_id: int = 0,
                 threads: int | None = None, fixed_batch: int | None = None) -> None:
        self.built = built
        self.manifest = built.manifest
        self.device = device
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or cpu_lanes()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Spinning intra-op threads would steal the cores the engine's decode/encode threads need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[str | tuple[str, dict[str, str | int]]]
        if device == "gpu":
            _preload_cuda_libraries()
            providers = [("CUDAExecutionProvider", cuda_options(device_id)), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(built.path), sess_options=opts, providers=providers)
        except Exception as exc:  # out of device memory at start is the device's failure, not a bug
            fault = device_fault(exc)
            if fault is not None:
                raise fault from exc
            raise
        if device == "gpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime falls back to the CPU silently; device batches would then fail to bind.
            raise ConfigError("onnxruntime could not start its CUDA provider", code=ErrorCode.ORT_NO_CUDA,
                              hint="check `python -c 'import onnxruntime as o; o.preload_dlls()'` for a missing "
                                   "CUDA/cuDNN library (onnxruntime-gpu[cuda,cudnn] installs them), or use "
                                   "--device cpu")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.device_id = device_id
        self.fixed = fixed_batch if fixed_batch is not None else (GPU_BATCH if device == "gpu" else None)
        self.chunk = self.fixed or CPU_CHUNK

    def raw(self, batch: ModelBatch) -> NDArray[np.float32]:
        """Model outputs as (N, D) float32 (token selection applied, not normalised).

        ``batch`` on the host runs as a numpy array; a device batch (the GPU engine's torch CUDA tensor;
        a torch CPU tensor takes the same IOBinding path on the CPU) is bound through ``__dlpack__``."""
        if batch.layout != self.manifest.input.layout:
            raise InternalError(f"a {batch.layout} batch for model {self.manifest.name!r}, which takes "
                                f"{self.manifest.input.layout}")
        n = len(batch)
        rows = batch.rows
        if isinstance(rows, np.ndarray):
            parts = [self._run_host(rows[i:i + self.chunk]) for i in range(0, max(n, 1), self.chunk)]
        else:
            parts = [self._run_bound(rows[i:i + self.chunk]) for i in range(0, max(n, 1), self.chunk)]
        out = np.concatenate(parts) if len(parts) != 1 else parts[0]
        feats = np.asarray(out, dtype=np.float32)
        if self.manifest.output.token is not None and feats.ndim == 3:
            feats = feats[:, self.manifest.output.token, :]
        return feats.reshape(feats.shape[0], -1)

    def _run_host(self, rows: NDArray[np.float32]) -> NDArray[np.float32]:
        k = rows.shape[0]
        if self.fixed and 0 < k < self.fixed:
            rows = np.concatenate([rows, np.zeros((self.fixed - k, *rows.shape[1:]), dtype=rows.dtype)])
        out: NDArray[np.float32] = self.session.run([self.output_name], {self.input_name: rows})[0]
        return out[:k]

    def _run_bound(self, rows: Tensor) -> NDArray[np.float32]:
        """One call on a DLPack tensor (a slice of the batch: a view), padded to the fixed shape."""
        k = int(rows.shape[0])
        if self.fixed and 0 < k < self.fixed:
            import torch  # the device batches are torch tensors (the DALI GPU engine's)

            padded = torch.zeros((self.fixed, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
            padded[:k].copy_(rows)
            if padded.is_cuda:  # onnxruntime reads it on its own stream
                torch.cuda.current_stream(padded.device).synchronize()
            rows = padded
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.from_dlpack(rows))
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        out: NDArray[np.float32] = binding.copy_outputs_to_cpu()[0]
        return out[:k]

    def embed(self, batch: ModelBatch) -> Embeddings:
        """L2-normalised features, one row per row of ``batch``."""
        feats = self.raw(batch)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return np.asarray(feats / np.maximum(norms, 1e-12), dtype=np.float32)
