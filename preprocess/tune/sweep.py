"""The measurement: every sample image at every (size, quality), judged by every model.

For each batch of sources: read and probe once; per size, decode + resize once (``Engine.load``);
per quality, encode every image, then view and embed all candidates of the batch in one model
call per model (and cut them into tiles for the tile view). The source's reference embedding
(the whole image as the model sees it) does not depend on the size: it is computed once per
source and model. Tile references (the uncompressed resized image's tiles) once per size.

Recorded per (size, quality, image): stored bytes, stored width/height, and per model the
similarity to the source (whole view) and, for the tile view, the worst / 10th-percentile / mean
tile similarity and which tile was worst. Per (size, quality) and model: neighbour agreement
(do an image's nearest neighbours among the sample's source embeddings stay the same when every
image is replaced by its stored copy?).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocess.codecs import Candidate
from preprocess.engines import make_engine, resolve, tile_boxes
from preprocess.engines.base import Engine, Prepared, SourceImage
from preprocess.errors import ConfigError, InputError
from preprocess.extractor.build import BuiltModel, build
from preprocess.extractor.manifest import InputView, Manifest, find_manifest
from preprocess.extractor.session import Extractor, cosine
from preprocess.gate import combine_tiles, tile_embeddings, tile_similarities
from preprocess.images import SourceInfo, probe
from preprocess.progress import Progress, SilentProgress
from preprocess.sources import batched, list_sources, read_source
from preprocess.spec import Resize, Spec, default_spec_path, load_spec

TILE_STATS = ("min", "p10", "mean")
_TILES_PER_CALL = 512  # bound the tiles held in one model-view batch (a 2560 px image has 96)
# Where the image axis is in each kind of per-batch array (see _Batch); 2 for the others.
_IMAGE_AXIS = {"ref": 0, "stored": 2, "tiles": 3, "dims": 1}


def _image_axis(key: str) -> int:
    return _IMAGE_AXIS.get(key.partition(":")[0], 2)


@dataclass(frozen=True)
class SweepOptions:
    sources: Sequence[str]
    spec_path: str | None = None
    gate_model: str | None = None  # judge by this model instead of the spec's gate.model
    compare: Sequence[str] = ()  # other models (names or manifest paths), judged on the same candidates
    sizes: Sequence[int] = (2560, 1920, 1280, 960, 640)
    qualities: Sequence[int] = tuple(range(10, 96, 5))
    tiles: bool = True  # measure the tile view with the spec's gate model
    compare_tiles: bool = False  # ... and with the compared models (slower: one embedding per tile)
    engine: str = "auto"
    device: str = "auto"
    neighbours: int = 5


@dataclass
class SampleImage:
    path: str
    source_bytes: int
    width: int  # oriented source size
    height: int


@dataclass
class Skipped:
    path: str
    code: str
    message: str


@dataclass
class ModelSweep:
    """One model's verdicts; arrays are indexed [size, quality, image]."""

    name: str
    ref: str  # how a spec names it: the bundled name, or the manifest's absolute path
    dim: int
    weights_sha256: str
    whole: np.ndarray  # similarity of the stored image's whole view to the source's
    tiles: dict[str, np.ndarray] | None  # TILE_STATS -> combined tile similarity
    worst_tile: np.ndarray | None  # index of the worst tile (into tile_boxes of the stored size)
    top1: np.ndarray  # [size, quality] neighbour agreement: same nearest neighbour
    topk: np.ndarray  # [size, quality] mean overlap of the k nearest neighbours
    k: int

    def gauges(self) -> list[str]:
        return ["whole"] + ([f"tiles-{s}" for s in TILE_STATS] if self.tiles is not None else [])

    def values(self, gauge: str) -> np.ndarray:
        if gauge == "whole":
            return self.whole
        if self.tiles is None or not gauge.startswith("tiles-"):
            raise KeyError(f"{self.name} has no {gauge!r} measurement")
        return self.tiles[gauge.removeprefix("tiles-")]


@dataclass
class Sweep:
    spec: Spec
    spec_path: str
    sizes: list[int]
    qualities: list[int]
    images: list[SampleImage]
    skipped: list[Skipped]
    bytes: np.ndarray  # [size, quality, image] stored bytes
    dims: np.ndarray  # [size, image, 2] stored (width, height)
    models: list[ModelSweep]  # the spec's gate model first
    engine: str
    device: str
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def resize(self, size: int) -> Resize:
        return self.spec.resize.model_copy(update={"size": size})

    @property
    def source_bytes(self) -> int:
        return sum(im.source_bytes for im in self.images)

    def pixels(self) -> np.ndarray:
        """[size, image] stored pixel count."""
        px: np.ndarray = self.dims[..., 0].astype(np.int64) * self.dims[..., 1]
        return px


def check_grid(sizes: Sequence[int], qualities: Sequence[int]) -> tuple[list[int], list[int]]:
    if not sizes or not qualities:
        raise ConfigError("the sweep needs at least one size and one quality", code="TUNE_GRID",
                          hint="e.g. --sizes 1280,640 --qualities 30..90/10")
    if any(not 16 <= s <= 65535 for s in sizes):
        raise ConfigError(f"sizes must be 16..65535 px, got {list(sizes)}", code="TUNE_GRID")
    if any(not 1 <= q <= 100 for q in qualities):
        raise ConfigError(f"qualities must be 1..100, got {list(qualities)}", code="TUNE_GRID")
    return sorted(set(sizes), reverse=True), sorted(set(qualities))


@dataclass
class _Model:
    ref: str
    manifest: Manifest
    built: BuiltModel
    extractor: Extractor
    engine: Engine  # the engine whose model view this model takes
    tiles: bool


def _models(spec: Spec, opts: SweepOptions, engine: str, device: str) -> list[_Model]:
    manifests: list[tuple[str, Manifest]] = []
    for n in [spec.gate.model, *opts.compare]:
        m = find_manifest(n)
        if m.name not in [x.name for _, x in manifests]:
            bundled = not (n.endswith(".toml") or "/" in n)
            manifests.append((n if bundled else str(Path(n).resolve()), m))
    engines: dict[InputView, Engine] = {}
    out = []
    for i, (ref, m) in enumerate(manifests):
        built = build(m)
        if m.input not in engines:
            engines[m.input] = make_engine(engine, device, encode=spec.encode, view=m.input,
                                           max_batch=spec.batch.size)
        out.append(_Model(ref, m, built, Extractor(built, device=device), engines[m.input],
                          tiles=opts.tiles if i == 0 else opts.compare_tiles))
    return out


def _tile_chunks(images: Sequence[Prepared], view: InputView) -> list[list[int]]:
    """Indices of ``images`` grouped so that one group's tiles fit one bounded model batch."""
    groups: list[list[int]] = [[]]
    count = 0
    for i, p in enumerate(images):
        n = len(tile_boxes(p.width, p.height, view.width, view.height))
        if groups[-1] and count + n > _TILES_PER_CALL:
            groups.append([])
            count = 0
        groups[-1].append(i)
        count += n
    return groups


def _read(paths: Sequence[Path], spec: Spec, skipped: list[Skipped]) -> list[tuple[bytes, SourceInfo, SampleImage]]:
    good = []
    for p in paths:
        try:
            f = read_source(p, max_bytes=spec.limits.max_file_bytes)
            info = probe(f.data, max_pixels=spec.limits.max_pixels, path=f.path)
        except InputError as exc:
            skipped.append(Skipped(str(p), exc.code, exc.message))
            continue
        good.append((f.data, info, SampleImage(f.path, len(f.data), info.width, info.height)))
    return good


def _neighbours(ref: np.ndarray, stored: np.ndarray, k: int) -> tuple[float, float]:
    """(top-1 agreement, mean top-k overlap) of each image's nearest neighbours: sources vs stored."""
    def nearest(e: np.ndarray) -> np.ndarray:
        sims = e @ e.T
        np.fill_diagonal(sims, -np.inf)
        order: np.ndarray = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return order

    a, b = nearest(ref), nearest(stored)
    top1 = float(np.mean(a[:, 0] == b[:, 0]))
    overlap = [len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return top1, float(np.mean(overlap))


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
        self.t = now


@dataclass
class _Batch:
    """One batch's measurements, indexed [size, quality, image-in-batch] (NaN until measured)."""

    read: list[tuple[bytes, SourceInfo, SampleImage]]
    models: list[_Model]
    n_sizes: int
    n_qualities: int
    alive: list[int] = field(default_factory=list)  # images every size so far could decode
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, s, q = len(self.read), self.n_sizes, self.n_qualities
        self.alive = list(range(n))
        self.arrays = {"bytes": np.zeros((s, q, n), dtype=np.int64), "dims": np.zeros((s, n, 2), dtype=np.int64)}
        for m in self.models:
            name, dim = m.manifest.name, m.manifest.output.dim
            self.arrays[f"whole:{name}"] = np.full((s, q, n), np.nan, dtype=np.float32)
            self.arrays[f"ref:{name}"] = np.zeros((n, dim), dtype=np.float32)
            self.arrays[f"stored:{name}"] = np.zeros((s, q, n, dim), dtype=np.float32)
            if m.tiles:
                self.arrays[f"tiles:{name}"] = np.full((len(TILE_STATS), s, q, n), np.nan, dtype=np.float32)
                self.arrays[f"worst:{name}"] = np.zeros((s, q, n), dtype=np.int32)

    def kept(self) -> dict[str, np.ndarray]:
        """Every array restricted to the images that survived every size."""
        return {key: np.take(a, self.alive, axis=_image_axis(key)) for key, a in self.arrays.items()}


def _measure_size(b: _Batch, si: int, resize: Resize, qualities: Sequence[int], skipped: list[Skipped],
                  clock: _Clock, progress: Progress) -> None:
    srcs = [SourceImage(img.path, data, "", info, resize.target(info.width, info.height))
            for data, info, img in (b.read[i] for i in b.alive)]
    loads = {}
    for m in b.models:
        if m.engine not in loads:
            loads[m.engine] = m.engine.load(srcs)
    clock("decode_resize")
    bad: set[int] = set()
    for ld in loads.values():
        for idx, exc in ld.failures:
            bad.add(idx)
            if all(s.path != srcs[idx].path for s in skipped):
                skipped.append(Skipped(srcs[idx].path, exc.code, exc.message))
    keep = [k for k in range(len(srcs)) if k not in bad]
    ids = [b.alive[k] for k in keep]

    def mine(m: _Model) -> list[Prepared]:
        by_index = {p.index: p for p in loads[m.engine].prepared}
        return [by_index[k] for k in keep]

    prepared = mine(b.models[0])
    b.arrays["dims"][si, ids] = [(p.width, p.height) for p in prepared]
    tile_refs: dict[str, list[np.ndarray]] = {}
    for m in b.models:
        name = m.manifest.name
        if si == 0:  # the source's model view does not depend on the size: embedded once
            rows = [j for j, p in enumerate(loads[m.engine].prepared) if p.index not in bad]
            b.arrays[f"ref:{name}"][ids] = m.extractor.embed(loads[m.engine].source_view)[rows]
        if m.tiles:
            own = mine(m)
            tile_refs[name] = [e for g in _tile_chunks(own, m.manifest.input)
                               for e in tile_embeddings(m.engine, m.extractor, [own[j] for j in g])]
    clock("reference")
    for qi, q in enumerate(qualities):
        primary = b.models[0].engine.encoding.variants()[0]
        blobs = b.models[0].engine.encode(prepared, [Candidate(primary, q)] * len(prepared))
        b.arrays["bytes"][si, qi, ids] = [len(x.data) for x in blobs]
        clock("encode")
        views: dict[int, object] = {}
        for m in b.models:
            name = m.manifest.name
            if id(m.engine) not in views:
                views[id(m.engine)] = m.engine.view(blobs)
                clock("view")
            emb = m.extractor.embed(views[id(m.engine)])
            b.arrays[f"stored:{name}"][si, qi, ids] = emb
            b.arrays[f"whole:{name}"][si, qi, ids] = cosine(emb, b.arrays[f"ref:{name}"][ids])
            clock("infer")
            if m.tiles:
                for g in _tile_chunks(prepared, m.manifest.input):
                    sims = tile_similarities(m.engine, m.extractor, [blobs[j] for j in g],
                                             [tile_refs[name][j] for j in g])
                    for j, ts in zip(g, sims, strict=True):
                        for c, stat in enumerate(TILE_STATS):
                            b.arrays[f"tiles:{name}"][c, si, qi, ids[j]] = combine_tiles(ts, stat)
                        b.arrays[f"worst:{name}"][si, qi, ids[j]] = int(np.argmin(ts))
                clock("tiles")
        progress.advance(1)
    b.alive = ids


def run_sweep(opts: SweepOptions, progress: Progress | None = None) -> Sweep:
    """Measure the whole grid; raise ConfigError before any decode for a bad spec, grid or empty sample."""
    progress = progress or SilentProgress()
    t_start = time.perf_counter()
    spec_path = opts.spec_path or str(default_spec_path())
    spec = load_spec(spec_path)
    if opts.gate_model:
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"model": opts.gate_model})})
    if spec.resize.mode not in ("long-side", "short-side"):
        raise ConfigError(f"tune sweeps resize.size, but the spec's resize.mode is {spec.resize.mode!r}",
                          code="TUNE_RESIZE", path=spec_path, hint='use resize.mode = "long-side" or "short-side"')
    sizes, qualities = check_grid(opts.sizes, opts.qualities)
    engine_name, device = resolve(opts.engine, opts.device)
    paths = list_sources(opts.sources)
    if not paths:
        raise ConfigError("the sample is empty: no image files found", code="SAMPLE_EMPTY",
                          path=", ".join(opts.sources), hint="pass folders holding .jpg/.png/... images")
    models = _models(spec, opts, engine_name, device)
    batches = list(batched(paths, spec.batch.size))
    progress.start(len(batches) * len(sizes) * len(qualities))
    skipped: list[Skipped] = []
    images: list[SampleImage] = []
    parts: dict[str, list[np.ndarray]] = {}
    clock = _Clock()
    try:
        for paths_batch in batches:
            b = _Batch(_read(paths_batch, spec, skipped), models, len(sizes), len(qualities))
            clock("read")
            for si, size in enumerate(sizes):
                _measure_size(b, si, spec.resize.model_copy(update={"size": size}), qualities, skipped, clock,
                              progress)
            images.extend(b.read[i][2] for i in b.alive)
            for key, a in b.kept().items():
                parts.setdefault(key, []).append(a)
    finally:
        progress.finish()
        for eng in {id(m.engine): m.engine for m in models}.values():
            eng.close()
    if not images:
        first = skipped[0] if skipped else None
        raise ConfigError(f"none of the {len(paths)} sample files could be read"
                          + (f" (e.g. {first.path}: [{first.code}] {first.message})" if first else ""),
                          code="SAMPLE_EMPTY", hint="pass a folder of readable images")
    full = {key: np.concatenate(a, axis=_image_axis(key)) for key, a in parts.items()}
    n_s, n_q, n_img = len(sizes), len(qualities), len(images)
    # k below n-1, else every other image is a neighbour and top-k agreement is trivially 1
    k = max(1, min(opts.neighbours, n_img - 2))
    out_models = []
    for m in models:
        name = m.manifest.name
        top1 = np.full((n_s, n_q), np.nan)
        topk = np.full((n_s, n_q), np.nan)
        if n_img >= 2:
            for si in range(n_s):
                for qi in range(n_q):
                    top1[si, qi], topk[si, qi] = _neighbours(full[f"ref:{name}"], full[f"stored:{name}"][si, qi], k)
        tiles = full.get(f"tiles:{name}")
        out_models.append(ModelSweep(
            name=name, ref=m.ref, dim=m.manifest.output.dim, weights_sha256=m.manifest.weights_sha256(),
            whole=full[f"whole:{name}"],
            tiles={s: tiles[c] for c, s in enumerate(TILE_STATS)} if tiles is not None else None,
            worst_tile=full.get(f"worst:{name}"), top1=top1, topk=topk, k=k))
    return Sweep(spec=spec, spec_path=spec_path, sizes=sizes, qualities=qualities, images=images, skipped=skipped,
                 bytes=full["bytes"], dims=full["dims"], models=out_models, engine=engine_name, device=device,
                 seconds=time.perf_counter() - t_start, timings={k: round(v, 3) for k, v in clock.timings.items()})
