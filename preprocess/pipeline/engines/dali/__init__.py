"""DALI and nvImageCodec, CPU or GPU: the only package that imports ``nvidia.dali`` and ``nvidia.nvimgcodec``.

- :mod:`.engine`: :class:`DaliEngine` (decode, resize, model view, JPEG encode: the engine contract);
- :mod:`.decoder`: :class:`ImageDecoder`, the readers' batch decoder (:mod:`preprocess.torchdata`);
- :mod:`.probes`: :func:`decode_throughput` and :func:`codec_backends` (``scripts/bench.py``,
  ``scripts/gpu_check.py``);
- underneath: :mod:`.graph` (the one decoder, pipelines rebuilt after a failure, per-sample retries),
  :mod:`.memory` / :mod:`.cuda` (where data lives: the only device-specific code), :mod:`.jpeg`
  (nvImageCodec's JPEG encoder).
"""

from preprocess.pipeline.engines.dali.decoder import ImageDecoder
from preprocess.pipeline.engines.dali.engine import DaliEngine
from preprocess.pipeline.engines.dali.graph import HW_DECODER_LOAD, gpu_count
from preprocess.pipeline.engines.dali.probes import codec_backends, decode_throughput

__all__ = ["HW_DECODER_LOAD", "DaliEngine", "ImageDecoder", "codec_backends", "decode_throughput", "gpu_count"]
