"""The feature gate: per image, the smallest candidate whose stored bytes still look like the source.

Reference = the source as each model sees it; candidate = encoded bytes decoded the same way; each check
(a model of ``gate.models`` under a view of ``gate.views``) is a cosine similarity of embeddings
(:func:`preprocess.pipeline.batches.similarity`), and a candidate passes only if every check passes its
view's threshold. The views: ``whole`` (the whole image as the model sees it), ``crops`` (the quadrants
and the centre half at the stored resolution, each against the same crop of the uncompressed resized
image, judged by the worst) and ``tiles`` (model-sized tiles at the stored resolution, combined by
``gate.tiles_combine``).

Adaptive mode searches, per image, every track the spec allows: a variant
(:meth:`preprocess.pipeline.spec.Encode.variants`: an encoder and a chroma subsampling) at a stored size
(one, or each side of ``resize.sizes``), over the quality ladder. Every round, all images still
searching encode at their own next candidate, the candidates' views are made in one batch and each
model embeds it in ONE call (on a ``staged`` engine, the CPU's: check by check, each candidate up to its
first failing check, :mod:`.stages`), and each image narrows its interval. Similarity is not monotone in quality,
so what is stored is always a candidate measured to pass, with the similarities that were measured: of
every measured pass, the one with the fewest bytes in its stored form (:meth:`Engine.finish`), and a
pass sitting on a failure near the threshold is confirmed against the rungs below it.

By concern: :mod:`.decide` (the per-image search and the decision), :mod:`.search` (one track's search
over the ladder, pure), :mod:`.measure` (encode, look, embed, score: the checks and the gate score),
:mod:`.priors` (what earlier images and the branch's rows teach the next searches), :mod:`.stages` (which
check a staged engine looks at next).
"""

from preprocess.pipeline.gate.decide import Decision, ImageSearch, Status, decide
from preprocess.pipeline.gate.measure import (
    Checks,
    Embedder,
    Measure,
    Measured,
    RegionView,
    ViewColumns,
    combine_tiles,
    gate_score,
    judge,
    tile_embeddings,
    tile_similarities,
    view_columns,
)
from preprocess.pipeline.gate.priors import NEIGHBOUR, NEIGHBOURS, GateStats, Outcome, Prior, Priors, Track
from preprocess.pipeline.gate.search import DEFICIT_SLOPE, DIP, SETTLE, Search

__all__ = ["DEFICIT_SLOPE", "DIP", "NEIGHBOUR", "NEIGHBOURS", "SETTLE", "Checks", "Decision", "Embedder",
           "GateStats", "ImageSearch", "Measure", "Measured", "Outcome", "Prior", "Priors", "RegionView",
           "Search", "Status", "Track", "ViewColumns", "combine_tiles", "decide", "gate_score", "judge",
           "tile_embeddings", "tile_similarities", "view_columns"]
