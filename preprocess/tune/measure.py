"""One round of tune's measurement, as the gate measures a round: the probes of every (coding, image)
still searching encoded (one call per format), finished as stored (``Engine.finish``: progressive JPEG
losslessly scan-optimized by mozjpeg), viewed once per engine and embedded in one model call per model
(whole view, crops and tiles together: :meth:`Engine.looks`); every gauge recorded.
Also the batch's arrays and, per size, its decode + resize and the references (the source's
embedding once per source and model, whatever the formats and sizes; the crops' and tiles' once per size).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from preprocess.core.progress import Progress
from preprocess.core.timing import Laps, Timings
from preprocess.pipeline.batches import Embeddings, ModelBatch, similarity
from preprocess.pipeline.codecs import Candidate, Encoded
from preprocess.pipeline.engines import tile_boxes
from preprocess.pipeline.engines.base import BoxRule, Engine, Loaded, Prepared, SourceImage
from preprocess.pipeline.extractor.build import BuiltModel
from preprocess.pipeline.extractor.manifest import Manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import combine_tiles, tile_embeddings
from preprocess.pipeline.images import SourceInfo
from preprocess.pipeline.spec import Encode, Spec
from preprocess.tune.grid import ENCODE_CPU, TILE_STATS, Coding, SampleImage, Skipped, gate_values
from preprocess.tune.search import Crossings, EveryRung, Learned, Plan

IMAGE_AXIS = {"ref": 0, "dims": 1, "tiles": 4}  # where the image axis is per kind of batch array; else 3


def image_axis(key: str) -> int:
    return IMAGE_AXIS.get(key.partition(":")[0], 3)


@contextmanager
def encoding(engine: Engine, encode: Encode) -> Iterator[Engine]:
    """``engine`` encoding and finishing with ``encode``'s options (effort, progressive) for the block:
    the sweep encodes several formats with one engine (whose prepared pixels are its own)."""
    saved = engine.encoding
    engine.encoding = encode
    try:
        yield engine
    finally:
        engine.encoding = saved


@dataclass
class ModelUse:
    ref: str
    manifest: Manifest
    built: BuiltModel
    extractor: Extractor
    engine: Engine  # the engine whose model view this model takes
    tiles: bool
    crops: BoxRule | None = None  # the spec's crop boxes, when this model measures the crops view
    gate: bool = False  # one of the spec's gate models (they lead the search jointly), not a compared one

    def regions(self) -> BoxRule | None:
        """The regions a candidate is looked at by: its tiles (with the tile view), then its crops (with
        the crops view); None for neither."""
        view, crops = self.manifest.input, self.crops
        if not self.tiles:
            return crops

        def rule(w: int, h: int) -> list[tuple[int, int, int, int]]:
            return tile_boxes(w, h, view.width, view.height) + (crops(w, h) if crops is not None else [])

        return rule


@dataclass
class Run:
    """What every batch and size of one sweep shares."""

    spec: Spec
    sizes: list[int]
    qualities: list[int]
    codings: list[Coding]
    models: list[ModelUse]
    progress: Progress
    every_quality: bool  # every rung, or the search (:mod:`.search`)
    gauge: str  # the gauge that leads the search (the gate models' least: every one must pass)
    band: list[float]
    checks: tuple[float, float] | None = None  # the spec's (whole, crops) thresholds: the "gate" gauge's
    skipped: list[Skipped] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    learned: dict[tuple[int, int], Learned] = field(default_factory=dict)  # (coding, size) -> priors
    clock: Laps = field(init=False)

    def __post_init__(self) -> None:
        self.clock = Laps(self.timings)

    def plan(self) -> Plan:
        if self.every_quality:
            return EveryRung(len(self.qualities))
        return Crossings(self.qualities, self.band)


@dataclass
class Batch:
    """One batch's measurements, indexed [coding, size, quality, image-in-batch] (NaN until measured)."""

    read: list[tuple[bytes, SourceInfo, SampleImage]]
    run: Run
    alive: list[int] = field(default_factory=list)  # images every size so far could decode
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stored: dict[str, dict[tuple[int, int, int, int], np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, c, s, q = len(self.read), len(self.run.codings), len(self.run.sizes), len(self.run.qualities)
        self.alive = list(range(n))
        self.arrays = {"bytes": np.zeros((c, s, q, n), dtype=np.int64),
                       "encoded": np.zeros((c, s, q, n), dtype=np.int64),
                       "dims": np.zeros((s, n, 2), dtype=np.int64)}
        for m in self.run.models:
            name = m.manifest.name
            self.arrays[f"whole:{name}"] = np.full((c, s, q, n), np.nan, dtype=np.float32)
            self.arrays[f"ref:{name}"] = np.zeros((n, m.manifest.output.dim), dtype=np.float32)
            self.stored[name] = {}
            if m.tiles:
                self.arrays[f"tiles:{name}"] = np.full((len(TILE_STATS), c, s, q, n), np.nan, dtype=np.float32)
                self.arrays[f"worst:{name}"] = np.full((c, s, q, n), -1, dtype=np.int32)
            if m.crops is not None:
                self.arrays[f"crops:{name}"] = np.full((c, s, q, n), np.nan, dtype=np.float32)
                self.arrays[f"worstcrop:{name}"] = np.full((c, s, q, n), -1, dtype=np.int32)

    def kept(self) -> dict[str, np.ndarray]:
        """Every array restricted to the images that survived every size."""
        return {key: np.take(a, self.alive, axis=image_axis(key)) for key, a in self.arrays.items()}

    def kept_stored(self, offset: int) -> dict[str, dict[tuple[int, int, int, int], np.ndarray]]:
        """The stored embeddings of the surviving images, keyed by their index in the whole sweep."""
        where = {j: offset + k for k, j in enumerate(self.alive)}
        return {name: {(c, s, q, where[j]): e for (c, s, q, j), e in points.items() if j in where}
                for name, points in self.stored.items()}


@dataclass
class SizeBatch:
    """One size of one batch: where to write (``si``, the batch's image ids) and what was prepared."""

    si: int
    ids: list[int]  # batch image indices of ``prepared``
    prepared: list[Prepared]  # by the first model's engine (the one that encodes)
    tile_refs: dict[str, list[np.ndarray]]  # model -> per image, its uncompressed tiles' embeddings
    crop_refs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # ... and its crops'


def load_size(b: Batch, si: int) -> tuple[SizeBatch, dict[Engine, Loaded]]:
    """Decode + resize the batch's live images once per engine; record failures as skipped."""
    resize = b.run.spec.resize.model_copy(update={"size": b.run.sizes[si]})
    srcs = [SourceImage(img.path, data, "", info, resize.target(info.width, info.height))
            for data, info, img in (b.read[i] for i in b.alive)]
    loads: dict[Engine, Loaded] = {}
    for m in b.run.models:
        if m.engine not in loads:
            loads[m.engine] = m.engine.load(srcs)
    bad: set[int] = set()
    for ld in loads.values():
        for idx, exc in ld.failures:
            bad.add(idx)
            if all(s.path != srcs[idx].path for s in b.run.skipped):
                b.run.skipped.append(Skipped(srcs[idx].path, exc.code, exc.message))
    keep = [k for k in range(len(srcs)) if k not in bad]
    by_index = {p.index: p for p in loads[b.run.models[0].engine].prepared}
    return SizeBatch(si, [b.alive[k] for k in keep], [by_index[k] for k in keep], {}), loads


def references(b: Batch, size: SizeBatch, loads: dict[Engine, Loaded]) -> None:
    """The sources' whole-image embeddings (once, at the first size) and their crops' and tiles' (every
    size)."""
    keep = {p.index for p in size.prepared}
    for m in b.run.models:
        name, ld = m.manifest.name, loads[m.engine]
        if size.si == 0:  # the source's model view does not depend on the size: embedded once
            rows = [j for j, p in enumerate(ld.prepared) if p.index in keep]
            b.arrays[f"ref:{name}"][size.ids] = m.extractor.embed(ld.source_view)[rows]
        if m.tiles:
            own = [p for p in ld.prepared if p.index in keep]
            view = m.manifest.input
            counts = [len(tile_boxes(p.width, p.height, view.width, view.height)) for p in own]
            size.tile_refs[name] = [e for g in tile_chunks(counts)
                                    for e in tile_embeddings(m.engine, m.extractor, [own[j] for j in g])]
        if m.crops is not None:
            own = [p for p in ld.prepared if p.index in keep]
            cut = m.engine.regions(own, m.crops)
            size.crop_refs[name] = cut.split(m.extractor.embed(cut.batch))


TILES_PER_CALL = 512  # bound the tiles held in one model-view batch (a 2560 px image has 96)
Probe = tuple[int, int, int]  # (coding, position in SizeBatch.prepared, rung)


def tile_chunks(counts: Sequence[int]) -> list[list[int]]:
    """Positions grouped so that one group's tiles fit one bounded model batch."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(counts):
        if groups[-1] and total + n > TILES_PER_CALL:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def encode_probes(b: Batch, size: SizeBatch, probes: Sequence[Probe]) -> list[Encoded]:
    """Every probe encoded (one call per format) and finished as stored; records both byte counts.
    The candidates keep the encoder's bytes (the same pixels)."""
    run, engine = b.run, b.run.models[0].engine
    out: dict[int, Encoded] = {}
    for fmt in dict.fromkeys(run.codings[ci].format for ci, _, _ in probes):
        mine = [p for p, (ci, _, _) in enumerate(probes) if run.codings[ci].format == fmt]
        images = [size.prepared[probes[p][1]] for p in mine]
        cands = [Candidate(run.codings[probes[p][0]].variant, run.qualities[probes[p][2]]) for p in mine]
        cpu = time.process_time()  # every thread's: the engine encodes a batch's images in a pool
        with encoding(engine, run.codings[probes[mine[0]][0]].encode):
            blobs = engine.encode(images, cands)
            run.clock(f"encode:{fmt}")
            stored = engine.finish(images, blobs)
            run.clock(f"finish:{fmt}")
        run.timings.add(f"{ENCODE_CPU}{fmt}", time.process_time() - cpu)
        for p, blob, data in zip(mine, blobs, stored, strict=True):
            ci, k, rung = probes[p]
            at = (ci, size.si, rung, size.ids[k])
            b.arrays["encoded"][at], b.arrays["bytes"][at] = len(blob.data), len(data)
            out[p] = blob
    return [out[p] for p in range(len(probes))]


def embed_probes(m: ModelUse, blobs: Sequence[Encoded], images: Sequence[Prepared],
                 views: dict[int, ModelBatch]) -> tuple[Embeddings, list[Embeddings], list[Embeddings]]:
    """The candidates' whole-view embeddings and, with the tile view and the crops view, each one's tile
    and crop embeddings (of ``images``' sizes): one look and one model call for all
    (:meth:`Engine.looks`)."""
    rule = m.regions()
    if rule is None:
        if id(m.engine) not in views:
            views[id(m.engine)] = m.engine.view(blobs)
        return m.extractor.embed(views[id(m.engine)]), [], []
    whole, tiles, crops = [], [], []
    view_size = m.manifest.input
    n_tiles = [len(tile_boxes(p.width, p.height, view_size.width, view_size.height)) if m.tiles else 0
               for p in images]
    for group in tile_chunks([len(rule(p.width, p.height)) for p in images]):
        looks = m.engine.looks([blobs[i] for i in group], rule)
        wholes, regions = looks.split(m.extractor.embed(looks.batch))
        assert wholes is not None
        whole.append(wholes)
        for i, r in zip(group, regions, strict=True):
            tiles.append(r[:n_tiles[i]])
            crops.append(r[n_tiles[i]:])
    return np.concatenate(whole), tiles, crops


def judge(b: Batch, size: SizeBatch, probes: Sequence[Probe], blobs: Sequence[Encoded]) -> list[float]:
    """Every model's verdict on the probes (recorded); the leading gauge's value of each: the least of the
    gate models' (a candidate passes the gate only where every one of them passes)."""
    run, views = b.run, dict[int, ModelBatch]()
    images = [size.prepared[k] for _, k, _ in probes]
    lead = [np.inf] * len(probes)
    for m in run.models:
        name = m.manifest.name
        whole, tiles, crops = embed_probes(m, blobs, images, views)
        run.clock("view_infer")
        refs = b.arrays[f"ref:{name}"][[size.ids[k] for _, k, _ in probes]]
        sims = similarity(whole, refs)
        for p, (ci, k, rung) in enumerate(probes):
            at = (ci, size.si, rung, size.ids[k])
            b.arrays[f"whole:{name}"][at] = sims[p]
            b.stored[name][at] = whole[p]
            if m.tiles:
                per_tile = similarity(tiles[p], size.tile_refs[name][k])
                for c, stat in enumerate(TILE_STATS):
                    b.arrays[f"tiles:{name}"][(c, *at)] = combine_tiles(per_tile, stat)
                b.arrays[f"worst:{name}"][at] = int(np.argmin(per_tile))
            if m.crops is not None:
                per_crop = similarity(crops[p], size.crop_refs[name][k])
                b.arrays[f"crops:{name}"][at] = float(per_crop.min())
                b.arrays[f"worstcrop:{name}"][at] = int(np.argmin(per_crop))
        if m.gate:
            lead = [float(np.minimum(v, _gauge(b, name, (ci, size.si, rung, size.ids[k]))))  # NaN stays NaN
                    for v, (ci, k, rung) in zip(lead, probes, strict=True)]
    return lead


def _gauge(b: Batch, model: str, at: tuple[int, int, int, int]) -> float:
    """The leading gauge's value at a measured point."""
    gauge, arrays = b.run.gauge, b.arrays
    if gauge == "whole":
        return float(arrays[f"whole:{model}"][at])
    if gauge in ("crops", "gate"):
        crops = arrays[f"crops:{model}"][at]
        if gauge == "crops":
            return float(crops)
        assert b.run.checks is not None
        whole = arrays[f"whole:{model}"][at]
        return float(gate_values(np.asarray([whole]), np.asarray([crops]), b.run.checks)[0])
    return float(arrays[f"tiles:{model}"][(TILE_STATS.index(gauge.removeprefix("tiles-")), *at)])

