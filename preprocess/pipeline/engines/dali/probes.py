"""Bench probes of DALI and nvImageCodec (``scripts/bench.py``, ``scripts/gpu_check.py``): the decode-only
ceiling, and which of nvImageCodec's JPEG backends work here."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import nvidia.nvimgcodec as nvimgcodec  # noqa: PLR0402 (mypy resolves only this form)

from preprocess.core.cpus import cpu_lanes
from preprocess.pipeline.batches import HostPixels
from preprocess.pipeline.devices import DeviceName, Placement
from preprocess.pipeline.engines.dali.graph import HW_DECODER_LOAD, chunks, decoder_pipeline


def decode_throughput(blobs: Sequence[bytes], *, device: DeviceName, batch: int = 64,
                      hw_decoder_load: float = HW_DECODER_LOAD) -> float:
    """Images/s of DALI decode alone over ``blobs`` (the ceiling the end-to-end rate is compared with).

    The engine's decoder pipeline; ``hw_decoder_load=0`` measures nvJPEG's CUDA decoder alone.
    The outputs are complete when ``run()`` returns, but not used.
    """
    pipe = decoder_pipeline(batch, cpu_lanes(), Placement.of(device), hw_decoder_load)
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in blobs]
    pipe.feed_input("data", arrays[:batch])
    pipe.run()  # warm-up (allocations, hardware decoder init)
    t0 = time.perf_counter()
    n = 0
    for chunk in chunks(arrays, batch):
        pipe.feed_input("data", list(chunk))
        pipe.run()  # dynamic executor: outputs are complete when run() returns
        n += len(chunk)
    seconds = time.perf_counter() - t0
    del pipe
    return n / seconds if seconds > 0 else 0.0


def codec_backends(jpeg: bytes, pixels: HostPixels, *, device: DeviceName) -> dict[str, dict[str, str]]:
    """Which of nvImageCodec's JPEG backends work here: each decoder backend decodes ``jpeg`` (a baseline
    4:2:0 JPEG) and each encoder backend encodes ``pixels`` (HWC uint8), alone. ``"ok"``, or why not.
    On the CPU only the CPU backend is tried. This is what says whether the hardware JPEG decoder is
    really there (it is missing under some sandboxes and on GPUs without one)."""
    kinds = {"hardware": "HW_GPU_ONLY", "cuda": "GPU_ONLY", "hybrid": "HYBRID_CPU_GPU", "cpu": "CPU_ONLY"}
    if device != "gpu":
        kinds = {"cpu": "CPU_ONLY"}
    device_id = 0 if device == "gpu" else nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY
    out: dict[str, dict[str, str]] = {"decode": {}, "encode": {}}
    for name, kind in kinds.items():
        backend = [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))]
        for role in ("decode", "encode"):
            try:
                if role == "decode":
                    got: object = nvimgcodec.Decoder(device_id=device_id, backends=backend).decode(jpeg)
                else:
                    got = nvimgcodec.Encoder(device_id=device_id, backends=backend).encode(pixels, "jpeg")
                out[role][name] = "ok" if got is not None else "unavailable (no result)"
            except Exception as exc:
                out[role][name] = f"unavailable ({(str(exc).strip() or type(exc).__name__).splitlines()[0][:120]})"
    return out
