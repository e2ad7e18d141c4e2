"""What the gate seeds its first guesses from: a branch's latest choices for one spec, read by the store
(:func:`preprocess.store.seed.recent_choices`, through `DatasetWriter.recent_choices`) and given to the gate
(:meth:`preprocess.pipeline.gate.GateStats.seed_from`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class Recent:
    """The branch's latest choices for one spec, oldest first (:meth:`DatasetWriter.recent_choices`)."""

    qualities: tuple[int, ...] = ()
    made_by: tuple[tuple[str, str], ...] = ()  # per quality: the row's encoder (library) and chroma
    embeddings: NDArray[np.float32] | None = None  # [N, D]: the stored images' embeddings under the job's model
