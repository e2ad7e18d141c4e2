"""The feature gate: per image, the smallest candidate whose stored bytes still look like the source.

Reference = the source as the model sees it; candidate = encoded bytes decoded the same way;
score = cosine similarity of their embeddings (:func:`preprocess.pipeline.batches.similarity`).
Adaptive mode searches, per image, every variant the spec allows
(:meth:`preprocess.pipeline.spec.Encode.variants`: an encoder and a chroma subsampling) over the quality
ladder. Every round, all images still searching encode at their own next candidate, the candidates are
viewed and embedded in ONE model call, and each image narrows its interval. Similarity is not monotone
in quality, so what is stored is always a candidate measured to pass, with the similarity that was
measured; among the variants, the one with the fewest final bytes (:meth:`Engine.finish`: the bytes that
are stored, same pixels) wins.

With ``gate.view = "tiles"`` the score is not the whole image's: the candidate is cut into model-sized
tiles at its own resolution (:meth:`Engine.tiles`), each tile is compared with the same tile of the
uncompressed resized image, and the tiles' similarities combine into one score (``gate.tiles_combine``:
the worst tile, the 10th percentile, or the mean). The embedding stored with the row is still the whole
image's.

By concern: :mod:`.decide` (the per-image search and the decision), :mod:`.search` (one variant's
search over the ladder, pure), :mod:`.measure` (encode, view, embed, score: the whole and tile views),
:mod:`.priors` (what earlier images and the branch's rows teach the next searches).
"""

from preprocess.pipeline.gate.decide import Decision, ImageSearch, Status, decide
from preprocess.pipeline.gate.measure import (
    Embedder,
    Measure,
    Measured,
    TileView,
    View,
    WholeView,
    combine_tiles,
    tile_embeddings,
    tile_similarities,
)
from preprocess.pipeline.gate.priors import NEIGHBOUR, NEIGHBOURS, GateStats, Outcome, Prior, Priors
from preprocess.pipeline.gate.search import DEFICIT_SLOPE, SETTLE, Search

__all__ = ["DEFICIT_SLOPE", "NEIGHBOUR", "NEIGHBOURS", "SETTLE", "Decision", "Embedder", "GateStats", "ImageSearch",
           "Measure", "Measured", "Outcome", "Prior", "Priors", "Search", "Status", "TileView", "View", "WholeView",
           "combine_tiles", "decide", "tile_embeddings", "tile_similarities"]
