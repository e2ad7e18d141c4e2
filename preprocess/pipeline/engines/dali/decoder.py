"""The readers' batch decoder (:mod:`preprocess.torchdata`): encoded images -> oriented RGB uint8 HWC
pixels, through the same decoder pipeline as the engine's (:func:`.graph.decoder_pipeline`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.cpus import cpu_lanes
from preprocess.core.errors import InternalError
from preprocess.pipeline.devices import DeviceName, Placement
from preprocess.pipeline.engines.dali.graph import (
    HW_DECODER_LOAD,
    Graph,
    Outputs,
    Pipe,
    Sample,
    decoder_pipeline,
    run_samples,
)
from preprocess.pipeline.engines.dali.host import Image_
from preprocess.pipeline.engines.dali.memory import memory


class ImageDecoder:
    """Numpy arrays on ``device="cpu"``, torch CUDA tensors on ``"gpu"`` or a GPU
    :class:`~preprocess.pipeline.devices.Placement` (DALI's mixed decoder: nvJPEG / the hardware JPEG
    decoder, libjpeg-turbo's fancy upsampling; zero-copy DLPack views of DALI's outputs, like the
    engine's). A batch DALI cannot decode is retried image by image. The GPU variant is NOT RUN yet (no
    GPU where it was written); the CPU variant is the same graph and is tested.
    """

    def __init__(self, *, device: DeviceName | Placement = "gpu", max_batch: int = 64, threads: int | None = None,
                 hw_decoder_load: float = HW_DECODER_LOAD) -> None:
        self._where = Placement.of(device)
        self.device = self._where.torch  # where the decoded tensors are (torch's name)
        self.max_batch = max_batch
        self._threads = threads or min(4, cpu_lanes())
        self.hw_decoder_load = hw_decoder_load
        self._pipe = Pipe(self._build)
        self._memory = memory(self._where)

    def _build(self) -> Graph:
        return decoder_pipeline(self.max_batch, self._threads, self._where, self.hw_decoder_load)

    def _take(self, outputs: Outputs, j: int) -> Image_:
        return self._memory.image(outputs[0][j])

    def decode(self, blobs: Sequence[bytes]) -> list[Image_ | None]:
        """Each blob decoded, or None where DALI could not decode it (the caller decodes those on the CPU)."""
        samples = [Sample(i, np.frombuffer(b, dtype=np.uint8)) for i, b in enumerate(blobs)]
        done, _ = run_samples(self._pipe, samples, self._take, self.max_batch)
        return [done.get(i) for i in range(len(blobs))]

    def __call__(self, blobs: Sequence[bytes]) -> list[Image_]:
        """Like :meth:`decode`; an image DALI cannot decode raises InternalError DALI_DECODE."""
        out = self.decode(blobs)
        got = [px for px in out if px is not None]
        if len(got) != len(out):
            raise InternalError(f"DALI could not decode stored image {out.index(None)} of the batch",
                                code=ErrorCode.DALI_DECODE)
        return got

    def close(self) -> None:
        self._pipe.close()
