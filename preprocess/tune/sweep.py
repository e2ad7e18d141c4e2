"""The measurement: every sample image at every (coding, size, quality), judged by every model.

A *coding* is one way of storing: a format's ``[encode]`` section and one of its variants (encoder,
chroma subsampling). ``--formats`` picks the formats; each takes its defaults from
:data:`preprocess.rows.formats.FORMATS`, except the spec's own format, which keeps the spec's ``[encode]``.

For each batch of sources: read and probe once; per size, decode + resize once (``Engine.load``);
per quality, encode every image in every coding, finish the bytes as they would be stored
(``Engine.finish``: progressive JPEG losslessly scan-optimized by mozjpeg), then view and embed all
candidates of the batch, every coding together, in one model call per model (and cut them into
tiles for the tile view). The source's reference embedding (the whole image as the model sees it)
does not depend on the size or the coding: it is computed once per source and model. Tile
references (the uncompressed resized image's tiles) once per size.

Recorded per (coding, size, quality, image): stored bytes (and the encoder's bytes before
``Engine.finish``), and per model the similarity to the source (whole view) and, for the tile
view, the worst / 10th-percentile / mean tile similarity and which tile was worst. Per (size,
image): the stored width/height. Per (coding, size, quality) and model: neighbour agreement (do an
image's nearest neighbours among the sample's source embeddings stay the same when every image is
replaced by its stored copy?).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InputError
from preprocess.core.progress import Progress, SilentProgress
from preprocess.core.timing import Laps, Timings
from preprocess.pipeline.batches import ModelBatch, similarity
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.devices import DeviceChoice, DeviceName, EngineChoice, EngineName
from preprocess.pipeline.engines import make_engine, resolve, tile_boxes
from preprocess.pipeline.engines.base import Engine, Loaded, Prepared, SourceImage
from preprocess.pipeline.extractor.build import BuiltModel, build
from preprocess.pipeline.extractor.manifest import InputView, Manifest, find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import combine_tiles, tile_embeddings, tile_similarities
from preprocess.pipeline.images import SourceInfo, probe
from preprocess.pipeline.spec import Encode, Resize, Spec, default_spec_path, load_spec
from preprocess.rows.formats import FORMATS
from preprocess.sources.files import batched, list_sources, read_source

TILE_STATS = ("min", "p10", "mean")
_TILES_PER_CALL = 512  # bound the tiles held in one model-view batch (a 2560 px image has 96)
# Where the image axis is in each kind of per-batch array (see _Batch); 3 for the others.
_IMAGE_AXIS = {"ref": 0, "stored": 3, "tiles": 4, "dims": 1}


def _image_axis(key: str) -> int:
    return _IMAGE_AXIS.get(key.partition(":")[0], 3)


@dataclass(frozen=True)
class SweepOptions:
    sources: Sequence[str]
    spec_path: str | None = None
    gate_model: str | None = None  # judge by this model instead of the spec's gate.model
    compare: Sequence[str] = ()  # other models (names or manifest paths), judged on the same candidates
    sizes: Sequence[int] = (2560, 1920, 1280, 960, 640)
    qualities: Sequence[int] = tuple(range(10, 96, 5))
    formats: Sequence[str] = ()  # stored formats to compare (default: the spec's [encode] format only)
    tiles: bool = True  # measure the tile view with the spec's gate model
    compare_tiles: bool = False  # ... and with the compared models (slower: one embedding per tile)
    engine: EngineChoice = "auto"
    device: DeviceChoice = "auto"
    neighbours: int = 5


@dataclass(frozen=True)
class Coding:
    """One way of storing that the sweep measures: a format's ``[encode]`` section (the spec's own when
    it is that format, else the format's defaults) and one of its variants (encoder, chroma)."""

    encode: Encode
    variant: Variant

    @property
    def format(self) -> str:
        return self.variant.format

    @property
    def label(self) -> str:
        """e.g. ``jpeg jpegli 4:2:0``, ``jxl libjxl``."""
        return f"{self.format} {self.variant.label}"


def codings(spec: Spec, formats: Sequence[str]) -> list[Coding]:
    """The codings of ``formats`` (in that order; default: the spec's format), raising ConfigError for
    a name that is not a stored format."""
    names = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip())) or [spec.encode.format]
    unknown = [f for f in names if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--formats: not a stored format: {', '.join(map(repr, unknown))}",
                          code=ErrorCode.TUNE_FORMAT,
                          hint=f"choose among {','.join(FORMATS)}, e.g. --formats jpeg,avif")
    out: list[Coding] = []
    for name in names:
        enc = spec.encode if spec.encode.format == name else Encode.model_validate({"format": name})
        out += [Coding(enc, v) for v in enc.variants()]
    return out


@contextmanager
def encoding(engine: Engine, encode: Encode) -> Iterator[Engine]:
    """``engine`` encoding and finishing with ``encode``'s options (effort, progressive) for the block:
    :meth:`Engine.encode` and :meth:`Engine.finish` take them from ``engine.encoding``, and the sweep
    encodes several formats with one engine (whose prepared pixels are its own)."""
    saved = engine.encoding
    engine.encoding = encode
    try:
        yield engine
    finally:
        engine.encoding = saved


@dataclass
class SampleImage:
    path: str
    source_bytes: int
    width: int  # oriented source size
    height: int
    location: Path | None = field(default=None, repr=False, compare=False)  # to read it again (an s3:// ObjectPath too)


@dataclass
class Skipped:
    path: str
    code: str
    message: str


@dataclass
class ModelSweep:
    """One model's verdicts; arrays are indexed [coding, size, quality, image]."""

    name: str
    ref: str  # how a spec names it: the bundled name, or the manifest's absolute path
    dim: int
    weights_sha256: str
    whole: np.ndarray  # similarity of the stored image's whole view to the source's
    tiles: dict[str, np.ndarray] | None  # TILE_STATS -> combined tile similarity
    worst_tile: np.ndarray | None  # index of the worst tile (into tile_boxes of the stored size)
    top1: np.ndarray  # [coding, size, quality] neighbour agreement: same nearest neighbour
    topk: np.ndarray  # [coding, size, quality] mean overlap of the k nearest neighbours
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
    codings: list[Coding]
    images: list[SampleImage]
    skipped: list[Skipped]
    bytes: np.ndarray  # [coding, size, quality, image] bytes as stored (after Engine.finish)
    encoded_bytes: np.ndarray  # [coding, size, quality, image] the encoder's bytes (before Engine.finish)
    dims: np.ndarray  # [size, image, 2] stored (width, height)
    models: list[ModelSweep]  # the spec's gate model first
    engine: EngineName
    device: DeviceName
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def resize(self, size: int) -> Resize:
        return self.spec.resize.model_copy(update={"size": size})

    @property
    def source_bytes(self) -> int:
        return sum(im.source_bytes for im in self.images)

    @property
    def formats(self) -> list[str]:
        """The swept formats, in the order asked (the first is the one ``recommended.toml`` stores)."""
        return list(dict.fromkeys(c.format for c in self.codings))

    def of_format(self, fmt: str) -> list[int]:
        """Indices of ``fmt``'s codings (its [encode] section's variants, the primary first)."""
        return [i for i, c in enumerate(self.codings) if c.format == fmt]

    def pixels(self) -> np.ndarray:
        """[size, image] stored pixel count."""
        px: np.ndarray = self.dims[..., 0].astype(np.int64) * self.dims[..., 1]
        return px


def check_grid(sizes: Sequence[int], qualities: Sequence[int]) -> tuple[list[int], list[int]]:
    if not sizes or not qualities:
        raise ConfigError("the sweep needs at least one size and one quality", code=ErrorCode.TUNE_GRID,
                          hint="e.g. --sizes 1280,640 --qualities 30..90/10")
    if any(not 16 <= s <= 65535 for s in sizes):
        raise ConfigError(f"sizes must be 16..65535 px, got {list(sizes)}", code=ErrorCode.TUNE_GRID)
    if any(not 1 <= q <= 100 for q in qualities):
        raise ConfigError(f"qualities must be 1..100, got {list(qualities)}", code=ErrorCode.TUNE_GRID)
    return sorted(set(sizes), reverse=True), sorted(set(qualities))


@dataclass
class _Model:
    ref: str
    manifest: Manifest
    built: BuiltModel
    extractor: Extractor
    engine: Engine  # the engine whose model view this model takes
    tiles: bool


def _models(spec: Spec, opts: SweepOptions, engine: EngineName, device: DeviceName) -> list[_Model]:
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
        good.append((f.data, info, SampleImage(f.path, len(f.data), info.width, info.height, p)))
    return good


def _neighbours(ref: np.ndarray, stored: np.ndarray, k: int) -> tuple[float, float]:
    """(top-1 agreement, mean top-k overlap) of each image's nearest neighbours: sources vs stored."""
    def nearest(e: np.ndarray) -> np.ndarray:
        sims = np.stack([similarity(e, row) for row in e])
        np.fill_diagonal(sims, -np.inf)
        order: np.ndarray = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return order

    a, b = nearest(ref), nearest(stored)
    top1 = float(np.mean(a[:, 0] == b[:, 0]))
    overlap = [len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return top1, float(np.mean(overlap))


@dataclass
class _Batch:
    """One batch's measurements, indexed [coding, size, quality, image-in-batch] (NaN until measured)."""

    read: list[tuple[bytes, SourceInfo, SampleImage]]
    models: list[_Model]
    codings: list[Coding]
    n_sizes: int
    n_qualities: int
    alive: list[int] = field(default_factory=list)  # images every size so far could decode
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, c, s, q = len(self.read), len(self.codings), self.n_sizes, self.n_qualities
        self.alive = list(range(n))
        self.arrays = {"bytes": np.zeros((c, s, q, n), dtype=np.int64),
                       "encoded": np.zeros((c, s, q, n), dtype=np.int64),
                       "dims": np.zeros((s, n, 2), dtype=np.int64)}
        for m in self.models:
            name, dim = m.manifest.name, m.manifest.output.dim
            self.arrays[f"whole:{name}"] = np.full((c, s, q, n), np.nan, dtype=np.float32)
            self.arrays[f"ref:{name}"] = np.zeros((n, dim), dtype=np.float32)
            self.arrays[f"stored:{name}"] = np.zeros((c, s, q, n, dim), dtype=np.float32)
            if m.tiles:
                self.arrays[f"tiles:{name}"] = np.full((len(TILE_STATS), c, s, q, n), np.nan, dtype=np.float32)
                self.arrays[f"worst:{name}"] = np.zeros((c, s, q, n), dtype=np.int32)

    def kept(self) -> dict[str, np.ndarray]:
        """Every array restricted to the images that survived every size."""
        return {key: np.take(a, self.alive, axis=_image_axis(key)) for key, a in self.arrays.items()}


@dataclass
class _Size:
    """One size of one batch: where to write (``si``, the batch's image ids) and what was prepared."""

    si: int
    ids: list[int]  # batch image indices of ``prepared``
    prepared: list[Prepared]  # by the first model's engine (the one that encodes)
    tile_refs: dict[str, list[np.ndarray]]  # model -> per image, its uncompressed tiles' embeddings


def _load_size(b: _Batch, si: int, resize: Resize, skipped: list[Skipped]) -> tuple[_Size, dict[Engine, Loaded]]:
    """Decode + resize the batch's live images once per engine; record failures as skipped."""
    srcs = [SourceImage(img.path, data, "", info, resize.target(info.width, info.height))
            for data, info, img in (b.read[i] for i in b.alive)]
    loads: dict[Engine, Loaded] = {}
    for m in b.models:
        if m.engine not in loads:
            loads[m.engine] = m.engine.load(srcs)
    bad: set[int] = set()
    for ld in loads.values():
        for idx, exc in ld.failures:
            bad.add(idx)
            if all(s.path != srcs[idx].path for s in skipped):
                skipped.append(Skipped(srcs[idx].path, exc.code, exc.message))
    keep = [k for k in range(len(srcs)) if k not in bad]
    by_index = {p.index: p for p in loads[b.models[0].engine].prepared}
    size = _Size(si, [b.alive[k] for k in keep], [by_index[k] for k in keep], {})
    return size, loads


def _references(b: _Batch, size: _Size, loads: dict[Engine, Loaded]) -> None:
    """The sources' whole-image embeddings (once, at the first size) and their tiles' (every size)."""
    keep = {p.index for p in size.prepared}
    for m in b.models:
        name, ld = m.manifest.name, loads[m.engine]
        if size.si == 0:  # the source's model view does not depend on the size: embedded once
            rows = [j for j, p in enumerate(ld.prepared) if p.index in keep]
            b.arrays[f"ref:{name}"][size.ids] = m.extractor.embed(ld.source_view)[rows]
        if m.tiles:
            own = [p for p in ld.prepared if p.index in keep]
            size.tile_refs[name] = [e for g in _tile_chunks(own, m.manifest.input)
                                    for e in tile_embeddings(m.engine, m.extractor, [own[j] for j in g])]


def _encode(b: _Batch, size: _Size, qi: int, quality: int, clock: Laps) -> list[Encoded]:
    """Every image in every coding at ``quality``, coding after coding; records the stored bytes (after
    :meth:`Engine.finish`) and the encoder's. The candidates keep the encoder's bytes (the same pixels)."""
    engine, n = b.models[0].engine, len(size.prepared)
    out: list[Encoded] = []
    for fmt in dict.fromkeys(c.format for c in b.codings):
        mine = [ci for ci, c in enumerate(b.codings) if c.format == fmt]
        images = size.prepared * len(mine)
        with encoding(engine, b.codings[mine[0]].encode):
            blobs = engine.encode(images, [Candidate(b.codings[ci].variant, quality) for ci in mine for _ in range(n)])
            clock(f"encode:{fmt}")
            stored = engine.finish(images, blobs)
            clock("finish")
        for k, ci in enumerate(mine):
            part = slice(k * n, (k + 1) * n)
            b.arrays["encoded"][ci, size.si, qi, size.ids] = [len(x.data) for x in blobs[part]]
            b.arrays["bytes"][ci, size.si, qi, size.ids] = [len(x) for x in stored[part]]
        out += blobs
    return out


def _judge(b: _Batch, size: _Size, qi: int, blobs: list[Encoded], clock: Laps) -> None:
    """Every model's verdict on ``blobs`` (coding-major: coding ``ci``'s image ``j`` at ``ci * n + j``)."""
    n, si, ids = len(size.prepared), size.si, size.ids
    views: dict[int, ModelBatch] = {}
    for m in b.models:
        name = m.manifest.name
        if id(m.engine) not in views:
            views[id(m.engine)] = m.engine.view(blobs)
            clock("view")
        emb = m.extractor.embed(views[id(m.engine)]).reshape(len(b.codings), n, -1)
        ref = b.arrays[f"ref:{name}"][ids]
        for ci in range(len(b.codings)):
            b.arrays[f"stored:{name}"][ci, si, qi, ids] = emb[ci]
            b.arrays[f"whole:{name}"][ci, si, qi, ids] = similarity(emb[ci], ref)
        clock("infer")
        if not m.tiles:
            continue
        for ci in range(len(b.codings)):
            for g in _tile_chunks(size.prepared, m.manifest.input):
                sims = tile_similarities(m.engine, m.extractor, [blobs[ci * n + j] for j in g],
                                         [size.tile_refs[name][j] for j in g])
                for j, ts in zip(g, sims, strict=True):
                    for c, stat in enumerate(TILE_STATS):
                        b.arrays[f"tiles:{name}"][c, ci, si, qi, ids[j]] = combine_tiles(ts, stat)
                    b.arrays[f"worst:{name}"][ci, si, qi, ids[j]] = int(np.argmin(ts))
        clock("tiles")


@dataclass
class _Run:
    """What every batch and size of one sweep shares."""

    spec: Spec
    sizes: list[int]
    qualities: list[int]
    codings: list[Coding]
    models: list[_Model]
    progress: Progress
    skipped: list[Skipped] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    clock: Laps = field(init=False)

    def __post_init__(self) -> None:
        self.clock = Laps(self.timings)


def _measure_size(run: _Run, b: _Batch, si: int, resize: Resize) -> None:
    size, loads = _load_size(b, si, resize, run.skipped)
    run.clock("decode_resize")
    b.arrays["dims"][si, size.ids] = [(p.width, p.height) for p in size.prepared]
    _references(b, size, loads)
    run.clock("reference")
    for qi, q in enumerate(run.qualities):
        if size.prepared:
            _judge(b, size, qi, _encode(b, size, qi, q, run.clock), run.clock)
        run.progress.advance(1)
    b.alive = size.ids


def _model_sweeps(models: Sequence[_Model], full: dict[str, np.ndarray], shape: tuple[int, int, int],
                  neighbours: int) -> list[ModelSweep]:
    """Per model, its arrays and its neighbour agreement per (coding, size, quality)."""
    n_img = full["dims"].shape[1]
    # k below n-1, else every other image is a neighbour and top-k agreement is trivially 1
    k = max(1, min(neighbours, n_img - 2))
    out = []
    for m in models:
        name = m.manifest.name
        top1, topk = np.full(shape, np.nan), np.full(shape, np.nan)
        if n_img >= 2:
            for idx in np.ndindex(*shape):
                top1[idx], topk[idx] = _neighbours(full[f"ref:{name}"], full[f"stored:{name}"][idx], k)
        tiles = full.get(f"tiles:{name}")
        out.append(ModelSweep(
            name=name, ref=m.ref, dim=m.manifest.output.dim, weights_sha256=m.manifest.weights_sha256(),
            whole=full[f"whole:{name}"],
            tiles={s: tiles[c] for c, s in enumerate(TILE_STATS)} if tiles is not None else None,
            worst_tile=full.get(f"worst:{name}"), top1=top1, topk=topk, k=k))
    return out


def _spec(opts: SweepOptions) -> tuple[Spec, str]:
    spec_path = opts.spec_path or str(default_spec_path())
    spec = load_spec(spec_path)
    if opts.gate_model:
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"model": opts.gate_model})})
    if spec.resize.mode not in ("long-side", "short-side"):
        raise ConfigError(f"tune sweeps resize.size, but the spec's resize.mode is {spec.resize.mode!r}",
                          code=ErrorCode.TUNE_RESIZE, path=spec_path,
                          hint='use resize.mode = "long-side" or "short-side"')
    return spec, spec_path


def _measure(run: _Run, paths: Sequence[Path]) -> tuple[list[SampleImage], dict[str, list[np.ndarray]]]:
    """Every batch at every size; the images that survived and their arrays (one part per batch)."""
    images: list[SampleImage] = []
    parts: dict[str, list[np.ndarray]] = {}
    run.progress.start(-(-len(paths) // run.spec.batch.size) * len(run.sizes) * len(run.qualities))
    try:
        for paths_batch in batched(paths, run.spec.batch.size):
            b = _Batch(_read(paths_batch, run.spec, run.skipped), run.models, run.codings, len(run.sizes),
                       len(run.qualities))
            run.clock("read")
            for si, size in enumerate(run.sizes):
                _measure_size(run, b, si, run.spec.resize.model_copy(update={"size": size}))
            images.extend(b.read[i][2] for i in b.alive)
            for key, a in b.kept().items():
                parts.setdefault(key, []).append(a)
    finally:
        run.progress.finish()
        for eng in {id(m.engine): m.engine for m in run.models}.values():
            eng.close()
    return images, parts


def run_sweep(opts: SweepOptions, progress: Progress | None = None) -> Sweep:
    """Measure the whole grid; raise ConfigError before any decode for a bad spec, grid or empty sample."""
    t_start = time.perf_counter()
    spec, spec_path = _spec(opts)
    sizes, qualities = check_grid(opts.sizes, opts.qualities)
    coding_list = codings(spec, opts.formats)
    engine_name, device = resolve(opts.engine, opts.device)
    paths = list_sources(opts.sources)
    if not paths:
        raise ConfigError("the sample is empty: no image files found", code=ErrorCode.SAMPLE_EMPTY,
                          path=", ".join(opts.sources), hint="pass folders holding .jpg/.png/... images")
    run = _Run(spec, sizes, qualities, coding_list, _models(spec, opts, engine_name, device),
               progress or SilentProgress())
    images, parts = _measure(run, paths)
    if not images:
        first = run.skipped[0] if run.skipped else None
        raise ConfigError(f"none of the {len(paths)} sample files could be read"
                          + (f" (e.g. {first.path}: [{first.code}] {first.message})" if first else ""),
                          code=ErrorCode.SAMPLE_EMPTY, hint="pass a folder of readable images")
    full = {key: np.concatenate(a, axis=_image_axis(key)) for key, a in parts.items()}
    out_models = _model_sweeps(run.models, full, (len(coding_list), len(sizes), len(qualities)), opts.neighbours)
    return Sweep(spec=spec, spec_path=spec_path, sizes=sizes, qualities=qualities, codings=coding_list,
                 images=images, skipped=run.skipped, bytes=full["bytes"], encoded_bytes=full["encoded"],
                 dims=full["dims"], models=out_models, engine=engine_name, device=device,
                 seconds=time.perf_counter() - t_start, timings=run.timings.rounded(3))
