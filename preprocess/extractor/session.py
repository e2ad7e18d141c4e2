"""Inference with onnxruntime: the only module that imports it.

CPU: the CPU provider on numpy batches. GPU: the CUDA provider with IOBinding, taking the
engine's device batch through DLPack, so pixels never leave the GPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from preprocess.errors import ConfigError
from preprocess.extractor.built import BuiltModel

ort.set_default_logger_severity(3)


class Extractor:
    """Embeds batches of model-view images into L2-normalised feature vectors."""

    def __init__(self, built: BuiltModel, *, device: str = "cpu", device_id: int = 0,
                 threads: int | None = None) -> None:
        self.built = built
        self.manifest = built.manifest
        self.device = device
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Spinning intra-op threads would steal the cores the engine's decode/encode threads need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any]
        if device == "gpu":
            # The CUDA provider links cuBLAS, cuDNN and cuRAND from the nvidia-* wheels: load them from
            # site-packages first (without this they are found only if torch happened to load them).
            ort.preload_dlls()
            # HEURISTIC: the gate's batches change size every round, and the default EXHAUSTIVE search
            # re-benchmarks every convolution for each new batch size.
            providers = [("CUDAExecutionProvider", {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}),
                         "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(built.path), sess_options=opts, providers=providers)
        if device == "gpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            # onnxruntime falls back to the CPU silently; device batches would then fail to bind.
            raise ConfigError("onnxruntime could not start its CUDA provider", code="ORT_NO_CUDA",
                              hint="check `python -c 'import onnxruntime as o; o.preload_dlls()'` for a missing "
                                   "CUDA/cuDNN library (onnxruntime-gpu[cuda,cudnn] installs them), or use "
                                   "--device cpu")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.device_id = device_id
        self.chunk = 8 if device == "cpu" else 256

    def raw(self, batch: Any) -> np.ndarray:
        """Model outputs as (N, D) float32 (token selection applied, not normalised)."""
        if isinstance(batch, np.ndarray):
            # Fixed small chunks: measured on 2 cores, batches of 32 cost 2-3x more per image than
            # batches of 8 (arena growth and cache misses), and batching beyond 8 gains nothing.
            parts = [self.session.run([self.output_name], {self.input_name: batch[i:i + self.chunk]})[0]
                     for i in range(0, max(len(batch), 1), self.chunk)]
            out = np.concatenate(parts) if len(parts) != 1 else parts[0]
        else:  # a device batch exposing __dlpack__ (DALI GPU TensorList as one tensor)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, ort.OrtValue.from_dlpack(batch))
            binding.bind_output(self.output_name, "cpu")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        feats: np.ndarray = np.asarray(out, dtype=np.float32)
        if self.manifest.output.token is not None and feats.ndim == 3:
            feats = feats[:, self.manifest.output.token, :]
        return feats.reshape(feats.shape[0], -1)

    def embed(self, batch: Any) -> np.ndarray:
        feats = self.raw(batch)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        unit: np.ndarray = feats / np.maximum(norms, 1e-12)
        return unit


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two batches of L2-normalised embeddings."""
    sims: np.ndarray = np.einsum("nd,nd->n", a, b).astype(np.float32)
    return sims
