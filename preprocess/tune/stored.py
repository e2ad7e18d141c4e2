"""What a recommendation stores, made again and looked at: every sample image at its adaptive choice
(its coding and quality, at the recommended size), as the bytes it stores (``Engine.finish``);
how fast those bytes decode on this machine (a training reader decodes them every epoch); a thumbnail
of each image, and for the worst ones source / stored / difference crops where they differ most.

Made by the engine that swept (so the bytes are the ones measured); pixels come from it too
(:meth:`Engine.pixels` for the whole image, :meth:`Engine.crop` for the crops). Each stored image is also
judged by every check of the sweep spec's gate (each model under each view: whole, crops, tiles), with its
worst crop (:func:`preprocess.pipeline.gate.judge`).
"""

from __future__ import annotations

import io
import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.core.errors import InputError
from preprocess.pipeline.codecs import Candidate, Encoded
from preprocess.pipeline.engines import make_engine
from preprocess.pipeline.engines.base import Box, Engine, Prepared, SourceImage
from preprocess.pipeline.extractor.build import build
from preprocess.pipeline.extractor.manifest import InputView, find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import Checks, Measure, judge
from preprocess.pipeline.images import probe
from preprocess.pipeline.regions import Region, abs_difference, changed_region, heat
from preprocess.sources.files import read_source
from preprocess.tune.grid import Skipped, Sweep
from preprocess.tune.recommend import Choice, Recommendation

THUMB_SIDE = 240  # px, a thumbnail's long side
THUMB_QUALITY = 90  # the thumbnails' own JPEG quality (downscaled: they show the picture, the crops the damage)
CROPS = 4  # the worst images get crops
DECODE_REPEATS = 5
DIFF_GAIN = 4.0  # the difference crop shows |source - stored| x this


@dataclass(frozen=True)
class Crop:
    """Where the stored image differs most from the uncompressed resized source, each as a PNG (1:1)."""

    region: Region
    source: bytes = field(repr=False)
    stored: bytes = field(repr=False)
    difference: bytes = field(repr=False)  # white: unchanged, dark: changed (x DIFF_GAIN)


@dataclass(frozen=True)
class StoredImage:
    choice: Choice
    width: int
    height: int
    data: bytes = field(repr=False)  # the bytes as stored
    thumbnail: bytes = field(repr=False)  # JPEG, THUMB_SIDE px
    crop: Crop | None = None
    checks: Checks = field(default_factory=dict)  # the sweep spec's gate, every model under every view
    worst_crop: Box | None = None  # the crops view's worst crop (in the stored image)


@dataclass(frozen=True)
class DecodeSpeed:
    """Decoding a format's stored bytes as the reader does (:func:`preprocess.pipeline.images.decode_rgb`),
    one image after the other in one thread; CPU time (steady on a shared machine) and wall time."""

    format: str
    decoder: str  # the library that decodes it
    images: int
    megapixels: float
    repeats: int
    cpu_seconds: float  # median over the repeats, one pass over every image
    wall_seconds: float

    @property
    def cpu_ms_per_mp(self) -> float:
        return 1000 * self.cpu_seconds / self.megapixels if self.megapixels else 0.0

    @property
    def wall_ms_per_mp(self) -> float:
        return 1000 * self.wall_seconds / self.megapixels if self.megapixels else 0.0

    @property
    def images_per_s(self) -> float:
        """On one core (CPU time)."""
        return self.images / self.cpu_seconds if self.cpu_seconds else 0.0


@dataclass(frozen=True)
class StoredSample:
    format: str
    images: list[StoredImage]  # worst first (by the recommendation's gauge)
    missing: list[Skipped]  # sample images that could not be read again
    speed: DecodeSpeed | None

    @property
    def total_bytes(self) -> int:
        return sum(len(s.data) for s in self.images)


def decoder_name(fmt: str) -> str:
    """The library :func:`preprocess.pipeline.images.decode_rgb` decodes ``fmt`` with, and its version."""
    if fmt == "jpeg":
        import simplejpeg

        return f"libjpeg-turbo via simplejpeg {simplejpeg.__version__}"
    import imagecodecs

    libs = dict(item.split("-", 1) for item in imagecodecs.version().split(", ") if "-" in item)
    # libavif picks its first available AV1 decoder: dav1d (libgav1 and aom come after it)
    name = {"avif": f"libavif {libs.get('libavif', '?')} + dav1d", "webp": f"libwebp {libs.get('libwebp', '?')}",
            "jxl": f"libjxl {libs.get('libjxl', '?')}"}.get(fmt, fmt)
    return f"{name} via imagecodecs {imagecodecs.__version__}"


def decode_speed(fmt: str, blobs: Sequence[bytes], megapixels: float, repeats: int = DECODE_REPEATS) -> DecodeSpeed:
    """Decode every blob ``repeats`` times (after one untimed pass); the median pass."""
    from preprocess.pipeline.images import decode_rgb as decode

    for b in blobs:
        decode(b)
    cpu, wall = [], []
    for _ in range(max(repeats, 1)):
        c0, w0 = time.process_time(), time.perf_counter()
        for b in blobs:
            decode(b)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return DecodeSpeed(fmt, decoder_name(fmt), len(blobs), megapixels, max(repeats, 1), statistics.median(cpu),
                       statistics.median(wall))


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _thumbnail(pixels: np.ndarray) -> bytes:
    img = Image.fromarray(pixels)
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=THUMB_QUALITY)
    return buf.getvalue()


def _crop(engine: Engine, source: Prepared, stored: Encoded, stored_px: np.ndarray) -> Crop:
    """The region with the largest mean absolute difference, cut out of both by the engine."""
    diff = abs_difference(np.asarray(engine.pixels(source)), stored_px)
    region = changed_region(diff)
    x0, y0, x1, y1 = region.box
    return Crop(region, _png(engine.crop(source, region.box)), _png(engine.crop(stored, region.box)),
                _png(heat(diff[y0:y1, x0:x1], DIFF_GAIN)))


@dataclass
class _Maker:
    """Makes a recommendation's choices again with ``engine``, batch by batch."""

    engine: Engine
    sweep: Sweep
    size: int  # the recommended size
    with_crops: set[int]  # images (indices into Sweep.images) that get crops
    measure: Measure | None = None  # the sweep spec's gate models (None: their input is not the engine's)
    missing: list[Skipped] = field(default_factory=list)

    def _sources(self, choices: Sequence[Choice]) -> tuple[list[SourceImage], list[Choice]]:
        resize, limits = self.sweep.resize(self.size), self.sweep.spec.limits
        srcs, kept = [], []
        for c in choices:
            im = self.sweep.images[c.index]
            try:
                f = read_source(im.location or Path(im.path), max_bytes=limits.max_file_bytes)
                info = probe(f.data, max_pixels=limits.max_pixels, path=f.path)
            except InputError as exc:
                self.missing.append(Skipped(im.path, exc.code, exc.message))
                continue
            srcs.append(SourceImage(f.path, f.data, f.sha256, info, resize.target(info.width, info.height)))
            kept.append(c)
        return srcs, kept

    def __call__(self, choices: Sequence[Choice]) -> list[StoredImage]:
        """``choices`` (one batch) encoded again as stored, with their thumbnails and (some) crops."""
        srcs, kept = self._sources(choices)
        loaded = self.engine.load(srcs)
        self.missing += [Skipped(srcs[i].path, exc.code, exc.message) for i, exc in loaded.failures]
        picks = [kept[p.index] for p in loaded.prepared]
        cands = [Candidate(self.sweep.codings[c.coding].variant, c.quality) for c in picks]
        stored = self.engine.finish(loaded.prepared, self.engine.encode(loaded.prepared, cands))
        made = [Encoded(data, cand) for data, cand in zip(stored, cands, strict=True)]  # what is stored, not the probe
        judged = judge(self.measure, loaded, self.sweep.spec, made) if self.measure is not None and made else []
        out = []
        for k, (p, c, kept_bytes) in enumerate(zip(loaded.prepared, picks, made, strict=True)):
            px = np.asarray(self.engine.pixels(kept_bytes))
            crop = _crop(self.engine, p, kept_bytes, px) if c.index in self.with_crops else None
            m = judged[k] if judged else None
            out.append(StoredImage(c, p.width, p.height, kept_bytes.data, _thumbnail(px), crop,
                                   m.checks if m else {}, m.worst_crop if m else None))
        return out


def _gate_models(sweep: Sweep, rec: Recommendation, view: InputView, engine: Engine) -> Measure | None:
    """The models ``rec`` was judged by (those its spec checks), to judge what is stored by every view the
    sweep's spec checks (None when their model input is not the one ``engine`` makes views for)."""
    manifests = [find_manifest(m) for m in sweep.model(rec.model).refs]
    if any(m.input != view for m in manifests):
        return None
    extractors = [Extractor(build(m), device=sweep.device) for m in manifests]
    return Measure(engine, extractors[0], tuple(extractors[1:]))


def store_sample(sweep: Sweep, rec: Recommendation, *, crops: int = CROPS,
                 repeats: int = DECODE_REPEATS) -> StoredSample | None:
    """Every sample image as ``rec``'s adaptive setting stores it (None without a recommendation); its
    decode speed unless ``repeats`` is 0."""
    if rec.adaptive is None:
        return None
    order = rec.adaptive.worst_first()
    with_crops = {c.index for c in order[:crops]}
    by_format = {sweep.codings[ci].format: sweep.codings[ci].encode for ci in rec.codings}
    view = find_manifest(sweep.model(rec.model).refs[0]).input  # the judge's (the first, of several gate models)
    engine = make_engine(sweep.engine, sweep.device, encode=by_format[rec.format], view=view,
                         max_batch=sweep.spec.batch.size)
    maker = _Maker(engine, sweep, rec.adaptive.size, with_crops, _gate_models(sweep, rec, view, engine))
    try:
        made = [s for batch in itertools.batched(order, sweep.spec.batch.size) for s in maker(batch)]
    finally:
        engine.close()
    rank = {c.index: k for k, c in enumerate(order)}
    made.sort(key=lambda s: rank[s.choice.index])
    speed = None
    if repeats > 0 and made:
        speed = decode_speed(rec.format, [s.data for s in made], sum(s.width * s.height for s in made) / 1e6, repeats)
    return StoredSample(rec.format, made, maker.missing, speed)
