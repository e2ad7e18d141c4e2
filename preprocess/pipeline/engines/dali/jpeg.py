"""JPEG through nvImageCodec: nvJPEG on the GPU (from device pixels), its CPU backend on the CPU.

NOT RUN YET on a GPU (``Encoder(device_id=N)``, the hand-off of the lane's CUDA stream through
``cuda_stream=``): ``scripts/gpu-check`` runs it; the CPU backend is tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, SupportsBytes

import nvidia.nvimgcodec as nvimgcodec  # noqa: PLR0402 (mypy resolves only this form)

from preprocess.pipeline.devices import Placement
from preprocess.pipeline.engines.dali.graph import chunks, raise_device_fault
from preprocess.pipeline.engines.dali.host import Image_

_CSS = {"444": nvimgcodec.ChromaSubsampling.CSS_444, "422": nvimgcodec.ChromaSubsampling.CSS_422,
        "420": nvimgcodec.ChromaSubsampling.CSS_420}


class Encoder(Protocol):
    """What is used of ``nvimgcodec.Encoder`` (nvImageCodec has no type stubs)."""

    def encode(self, images: list[object], codec: str, *, params: object,
               cuda_stream: int) -> list[SupportsBytes | None]: ...


def params(quality: int, chroma: str, *, optimized: bool = False) -> object:
    """Baseline JPEG at an IJG quality; ``optimized``: optimal Huffman tables (same coefficients)."""
    made: object = nvimgcodec.EncodeParams(
        quality_type=nvimgcodec.QualityType.QUALITY, quality_value=float(quality),
        chroma_subsampling=_CSS[chroma or "420"],
        jpeg_encode_params=nvimgcodec.JpegEncodeParams(progressive=False, optimized_huffman=optimized))
    return made


class NvJpeg:
    """nvImageCodec's JPEG encoder on ``where`` (the GPU's, or only the CPU backend: all there is on a
    machine without CUDA), called with at most ``batch`` images at a time."""

    def __init__(self, where: Placement, *, threads: int, batch: int) -> None:
        self.batch = batch
        if where.gpu:
            self.encoder: Encoder = nvimgcodec.Encoder(device_id=where.index, max_num_cpu_threads=threads)
        else:
            self.encoder = nvimgcodec.Encoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                              backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])

    def encode(self, pixels: Sequence[Image_], quality: int, chroma: str, *, optimized: bool,
               stream: int) -> list[bytes | None]:
        """JPEG-encode pixels (device tensors on the GPU, host arrays on the CPU) at one quality: one call
        per ``batch`` images (nvImageCodec takes one set of parameters per call), on CUDA stream
        ``stream``. None for an image it failed on; a device failure raises DeviceError."""
        out: list[bytes | None] = []
        settings = params(quality, chroma, optimized=optimized)
        for chunk in chunks(pixels, self.batch):
            streams: list[SupportsBytes | None]
            try:
                imgs = nvimgcodec.as_images(list(chunk), cuda_stream=stream)
                streams = list(self.encoder.encode(imgs, "jpeg", params=settings, cuda_stream=stream))
            except Exception as exc:
                raise_device_fault(exc)
                streams = [None] * len(chunk)  # the call failed as a whole: each image falls back
            if len(streams) != len(chunk):  # some versions leave failed images out of the list
                streams = [None] * len(chunk)
            out.extend(None if cs is None else bytes(cs) for cs in streams)
        return out
