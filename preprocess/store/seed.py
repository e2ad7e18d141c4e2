"""The gate's seed: what a branch's latest stored items chose for one spec (:class:`~preprocess.rows.recent.Recent`),
where a new job's quality searches start (:meth:`preprocess.pipeline.gate.GateStats.seed_from`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from zarr.types import ArrayV3

from preprocess.rows import schema
from preprocess.rows.recent import Recent
from preprocess.rows.schema import ItemRow
from preprocess.store.append import Table

WINDOW = 512  # stored items looked at, the latest


def recent_choices(items: Table[ItemRow], embeddings: Mapping[str, ArrayV3], fingerprint: str,
                   model: str | None = None, rows: int = WINDOW) -> Recent:
    """What the gate chose (status "ok") for ``fingerprint`` among the last ``rows`` stored items,
    oldest first: qualities, the variant that made each, and (with ``model``) the stored images'
    embeddings under it."""
    stored = items.stored
    if not stored:
        return Recent()
    window = slice(max(0, stored - rows), stored)
    a = items.arrays
    fps, statuses, qualities, encoders, chroma = (
        schema.read(a[name], window) for name in ("fingerprint", "status", "quality", "encoder", "chroma"))
    keep = [i for i, (f, st) in enumerate(zip(fps, statuses, strict=True))
            if str(f) == fingerprint and str(st) == "ok"]
    emb = embeddings.get(model) if model is not None else None
    vectors = schema.read(emb, window)[keep].astype(np.float32) if emb is not None and keep else None
    return Recent(tuple(int(qualities[i]) for i in keep), tuple((str(encoders[i]), str(chroma[i])) for i in keep),
                  vectors)
