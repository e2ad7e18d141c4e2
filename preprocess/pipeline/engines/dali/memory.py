"""Where the DALI engine's and decoder's data live: the host (:mod:`.host`: numpy) or a GPU (:mod:`.cuda`:
torch tensors on the device, DLPack views of DALI's outputs). Everything else in the package is the same
on both devices: this seam is the only device-specific code.
"""

from __future__ import annotations

from preprocess.pipeline.devices import Placement
from preprocess.pipeline.engines.dali.host import Memory


def memory(where: Placement, *, stream: bool = False) -> Memory:
    """The memory of ``where``; ``stream``: the GPU's holds its own CUDA stream (an engine's lane)."""
    if not where.gpu:
        return Memory(where)
    from preprocess.pipeline.engines.dali.cuda import CudaMemory  # imports torch: GPU only

    return CudaMemory(where, stream=stream)
