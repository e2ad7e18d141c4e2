"""What tune measured, and its form in ``report.json`` (read back by ``tune --from``).

A *coding* is one way of storing: a format's ``[encode]`` section and one of its variants (encoder,
chroma subsampling). Arrays are indexed ``[coding, size, quality, image]``; a point the search did
not measure is NaN (similarity) and 0 (bytes). A *gauge* is one way of judging a stored image: a
model and a view (``whole``; ``crops``, the worst of the spec's crops; the tile view combined by
``tiles-min`` / ``tiles-p10`` / ``tiles-mean``), or ``gate``: the whole view and the crops together as
the gate judges them (:func:`gate_values`); every gauge is measured at every point measured, whichever
gauge led the search.

Nothing here encodes or embeds (no engine, no model session): ``tune --from`` re-recommends from a saved
report with this module, :mod:`.recommend` and numpy alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.core.jsonable import Json, JsonObject
from preprocess.pipeline.codecs import Variant
from preprocess.pipeline.devices import DeviceName, EngineName
from preprocess.pipeline.extractor.manifest import names_a_file
from preprocess.pipeline.gate.measure import carried
from preprocess.pipeline.gate.stages import DEFICIT_FLOOR
from preprocess.pipeline.spec import Encode, Resize, Spec, parse_spec
from preprocess.rows.formats import FORMATS

TILE_STATS = ("min", "p10", "mean")
GAUGES = ("whole", "crops", "gate", *(f"tiles-{s}" for s in TILE_STATS))
REPORT_FORMAT = 3  # report.json's layout (3: points not measured are null; the search's band)
Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]
Key = tuple[int, int, int, int]  # (coding, size, quality, image)
Mode = Literal["search", "every-quality"]
ENCODE_CPU = "encode_cpu:"  # timings' key (+ a format): CPU seconds of every thread encoding and finishing it


@dataclass(frozen=True)
class EncodeCost:
    """What encoding a format cost the sweep on the machine that measured (every candidate it encoded and
    finished as stored): CPU time of every thread, per megapixel stored, and the wall time it took."""

    format: str
    encodes: int
    megapixels: float
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_ms_per_mp(self) -> float:
        return 1000 * self.cpu_seconds / self.megapixels if self.megapixels else 0.0


@dataclass(frozen=True)
class Coding:
    """One way of storing that tune measures: a format's ``[encode]`` section (the spec's own when
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
    """One model's verdicts; arrays are indexed [coding, size, quality, image], NaN where not measured."""

    name: str
    ref: str  # how a spec names it: the bundled name, or the manifest's absolute path
    dim: int
    weights_sha256: str
    whole: Floats  # similarity of the stored image's whole view to the source's
    tiles: dict[str, Floats] | None  # TILE_STATS -> combined tile similarity
    worst_tile: npt.NDArray[np.int32] | None  # index of the worst tile (into tile_boxes of the stored size)
    reference: Floats | None = None  # [image, D] the sources' embeddings (not in report.json)
    stored: dict[Key, Floats] = field(default_factory=dict)  # each measured point's embedding (idem)
    crops: Floats | None = None  # the worst crop's similarity (the spec's crops), when measured
    worst_crop: npt.NDArray[np.int32] | None = None  # its index (into the spec's crop boxes)
    checks: tuple[float, float] | None = None  # the spec's (whole, crops) thresholds: the "gate" gauge's
    members: tuple[str, ...] = ()  # the joint judge of several gate models (:func:`joint`): their refs

    @property
    def refs(self) -> list[str]:
        """How a spec names the model(s) this judges by."""
        return list(self.members) or [self.ref]

    def gauges(self) -> list[str]:
        crops = ["crops"] + (["gate"] if self.checks is not None else []) if self.crops is not None else []
        return ["whole", *crops] + ([f"tiles-{s}" for s in TILE_STATS] if self.tiles is not None else [])

    def values(self, gauge: str) -> Floats:
        if gauge == "whole":
            return self.whole
        if gauge in self.gauges() and self.crops is not None:
            if gauge == "crops":
                return self.crops
            if gauge == "gate" and self.checks is not None:
                return gate_values(self.whole, self.crops, self.checks)
        if self.tiles is None or not gauge.startswith("tiles-"):
            raise KeyError(f"{self.name} has no {gauge!r} measurement")
        return self.tiles[gauge.removeprefix("tiles-")]


def model_ref(name: str) -> str:
    """How a recommended spec names a model the sweep's spec named ``name``: a bundled model by its name, a
    manifest by its absolute path (the recommended spec is written elsewhere)."""
    return str(Path(name).resolve()) if names_a_file(name) else name


def joint(models: Sequence[ModelSweep]) -> ModelSweep:
    """Several gate models judged as the gate judges them (every one must pass every view): each view's
    similarity is the least of the models'. The gate score of those least values is the least of the
    models' gate scores (each view's margin grows with its similarity), so the ``gate`` gauge passes
    exactly where every model's does. One model is itself."""
    if len(models) == 1:
        return models[0]

    def least(arrays: Sequence[Floats | None]) -> Floats | None:
        return None if any(a is None for a in arrays) else np.minimum.reduce([a for a in arrays if a is not None])

    def worst(values: Sequence[Floats | None], where: Sequence[npt.NDArray[np.int32] | None]
              ) -> npt.NDArray[np.int32] | None:
        """At each point, the index recorded by the model whose value is the least."""
        if any(v is None for v in values) or any(w is None for w in where):
            return None
        stacked = np.nan_to_num(np.stack([v for v in values if v is not None]), nan=np.inf)
        picked: npt.NDArray[np.int32] = np.choose(np.argmin(stacked, axis=0), [w for w in where if w is not None])
        return picked

    first = models[0]
    each = [m.tiles for m in models if m.tiles is not None]
    tiles = {s: np.minimum.reduce([t[s] for t in each]) for s in TILE_STATS} if len(each) == len(models) else None
    crops = least([m.crops for m in models])
    return ModelSweep(
        name=" + ".join(m.name for m in models), ref=first.ref, dim=first.dim, weights_sha256=first.weights_sha256,
        whole=np.minimum.reduce([m.whole for m in models]), tiles=tiles,
        # the worst tile's index is into the tile grid of the model that saw it (one grid: the bundled models'
        # inputs are all 224 x 224)
        worst_tile=worst([m.tiles["min"] if m.tiles else None for m in models], [m.worst_tile for m in models]),
        reference=first.reference, stored=first.stored,  # neighbours: as the first model sees them
        crops=crops, worst_crop=worst([m.crops for m in models], [m.worst_crop for m in models]),
        checks=first.checks if crops is not None else None, members=tuple(m.ref for m in models))


def score_name(gauge: str) -> str:
    """What a target's number is called: the ``gate`` gauge's is the gate score (the worse of the whole view
    and the crops, on the whole view's scale), which no row stores: `ls` and `show` give each view's similarity."""
    return "gate score" if gauge == "gate" else "similarity"


def gate_checks(spec: Spec) -> tuple[float, float] | None:
    """The spec's (whole, crops) thresholds when its gate checks both (the ``gate`` gauge), else None."""
    views = dict(spec.gate.views.items())
    return (views["whole"], views["crops"]) if {"whole", "crops"} <= set(views) else None


def gate_values(whole: Floats, crops: Floats, checks: tuple[float, float]) -> Floats:
    """The whole view and the worst crop judged together, as the gate scores a candidate
    (:func:`preprocess.pipeline.gate.measure.gate_score`, array-wise): the smaller margin, in decades of
    the deficit 1 - similarity below each view's threshold, carried to the whole view's threshold. It is
    >= that threshold exactly when both pass; a target T judges both views in proportion (the crops'
    threshold moves by as many decades as T from the whole view's: :func:`scaled_checks`)."""
    tw, tc = checks

    def deficit(s: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64]:
        return np.log10(np.maximum(1.0 - np.asarray(s, dtype=np.float64), DEFICIT_FLOOR))

    w, c = whole.astype(np.float64), crops.astype(np.float64)
    margin = np.minimum(deficit(tw) - deficit(w), deficit(tc) - deficit(c))
    passed = (w >= tw) & (c >= tc)
    out: Floats = carried(margin, passed, tw).astype(np.float32)
    # a failure a hair below tw rounds to float32(tw), which reads as a pass (the gauges are compared with a
    # target in float32): it stays a float32 step below
    below = np.nextafter(np.float32(tw), np.float32(0))
    return np.where(passed, out, np.minimum(out, below)).astype(np.float32)


def scaled_checks(checks: tuple[float, float], target: float) -> tuple[float, float]:
    """The (whole, crops) thresholds that the ``gate`` gauge at ``target`` stands for: the whole view at
    ``target``, the crops' deficit scaled as the whole view's (the spec's own at its own threshold)."""
    tw, tc = checks
    if tw >= 1.0:  # the whole view's deficit is 0: there is no scale to move the crops' by
        return target, tc
    return target, max(round(1.0 - (1.0 - tc) * (1.0 - target) / (1.0 - tw), 6), 0.0)


@dataclass
class Sweep:
    spec: Spec
    spec_path: str
    sizes: list[int]
    qualities: list[int]
    codings: list[Coding]
    images: list[SampleImage]
    skipped: list[Skipped]
    bytes: Ints  # [coding, size, quality, image] bytes as stored (after Engine.finish); 0: not measured
    encoded_bytes: Ints  # [coding, size, quality, image] the encoder's bytes (before Engine.finish)
    dims: Ints  # [size, image, 2] stored (width, height)
    models: list[ModelSweep]  # the spec's gate models first (``gate_models`` of them), then the compared ones
    engine: EngineName
    device: DeviceName
    mode: Mode = "every-quality"
    band: list[float] = field(default_factory=list)  # the similarities whose crossings the search bracketed
    gauge: str = "whole"  # the gauge (of the gate models, jointly) that led the search
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    gate_models: int = 1  # how many of ``models`` are the spec's gate models
    remade: bool = False  # read back from a saved report (tune --from): nothing measured now

    def resize(self, size: int) -> Resize:
        return self.spec.resize.model_copy(update={"size": size})

    @property
    def source_bytes(self) -> int:
        return sum(im.source_bytes for im in self.images)

    @property
    def formats(self) -> list[str]:
        """The measured formats, in the order asked."""
        return list(dict.fromkeys(c.format for c in self.codings))

    def of_format(self, fmt: str) -> list[int]:
        """Indices of ``fmt``'s codings (its [encode] section's variants, the primary first)."""
        return [i for i, c in enumerate(self.codings) if c.format == fmt]

    def pixels(self) -> Ints:
        """[size, image] stored pixel count."""
        px: Ints = self.dims[..., 0].astype(np.int64) * self.dims[..., 1]
        return px

    def encode_cost(self, fmt: str) -> EncodeCost | None:
        """What encoding ``fmt`` cost (None for a report made before it was measured, or nothing encoded)."""
        cpu = self.timings.get(f"{ENCODE_CPU}{fmt}")
        at = self.of_format(fmt)
        if cpu is None or not at:
            return None
        done = self.measured()[at]  # each point measured was encoded once
        mp = float((done * self.pixels()[None, :, None, :]).sum()) / 1e6
        wall = self.timings.get(f"encode:{fmt}", 0.0) + self.timings.get(f"finish:{fmt}", 0.0)
        return EncodeCost(fmt, int(done.sum()), mp, cpu, wall) if mp else None

    def measured(self) -> npt.NDArray[np.bool_]:
        """[coding, size, quality, image]: which points were measured."""
        return np.isfinite(self.models[0].whole)

    @property
    def judge(self) -> ModelSweep:
        """What a target judges by unless it names a model: the spec's gate models jointly (:func:`joint`)."""
        return joint(self.models[:self.gate_models])

    def model(self, name: str | None) -> ModelSweep:
        """The judge named ``name`` (a model's name, or the gate models' joint name), or :attr:`judge`."""
        judge = self.judge
        found = judge if name in (None, judge.name) else next((m for m in self.models if m.name == name), None)
        if found is None:
            raise ConfigError(f"model {name!r} was not measured ({', '.join(m.name for m in self.models)})",
                              code=ErrorCode.TUNE_MODEL)
        return found


def _nulls(a: npt.NDArray[np.float64]) -> Json:
    """Nested lists, with null for NaN (JSON has no NaN)."""
    if a.ndim == 0:
        v = float(a)
        return v if np.isfinite(v) else None
    return [_nulls(x) for x in a]


def to_json(sweep: Sweep) -> JsonObject:
    """The measurement: everything ``tune --from`` needs to recommend again."""
    return {
        "format": REPORT_FORMAT, "spec": sweep.spec.to_dict(), "spec_path": sweep.spec_path,
        "engine": sweep.engine, "device": sweep.device, "mode": sweep.mode, "band": list(sweep.band),
        "gauge": sweep.gauge, "seconds": round(sweep.seconds, 3), "timings": dict(sweep.timings),
        "gate_models": sweep.gate_models,
        "sizes": list(sweep.sizes), "qualities": list(sweep.qualities),
        "codings": [{"label": c.label, "format": c.format, "encoder": c.variant.encoder, "chroma": c.variant.chroma,
                     "encode": c.encode.to_dict()} for c in sweep.codings],
        "images": [{"path": i.path, "source_bytes": i.source_bytes, "width": i.width, "height": i.height}
                   for i in sweep.images],
        "skipped": [{"path": s.path, "code": s.code, "message": s.message} for s in sweep.skipped],
        "bytes": sweep.bytes.tolist(), "encoded_bytes": sweep.encoded_bytes.tolist(),
        "stored_size": sweep.dims.tolist(),
        "models": [{"name": m.name, "ref": m.ref, "dim": m.dim, "weights_sha256": m.weights_sha256,
                    "similarity": {g: _nulls(np.round(m.values(g).astype(np.float64), 6))
                                   for g in m.gauges() if g != "gate"},  # gate: from whole and crops
                    "worst_tile": m.worst_tile.tolist() if m.worst_tile is not None else None,
                    "worst_crop": m.worst_crop.tolist() if m.worst_crop is not None else None}
                   for m in sweep.models],
    }


def _get[T](doc: JsonObject, key: str, kind: type[T]) -> T:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"report.json: {key!r} is missing or not a {kind.__name__}", code=ErrorCode.TUNE_REPORT,
                          hint="pass the report.json (or its folder) that `preprocess tune --report` wrote")
    return value


def _nan(value: Json) -> object:
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return np.nan if value is None else value


def _coding(doc: JsonObject) -> Coding:
    enc = Encode.model_validate(_get(doc, "encode", dict))
    found = [v for v in enc.variants() if (v.encoder, v.chroma) == (doc.get("encoder"), doc.get("chroma"))]
    if not found:
        raise ConfigError(f"report.json: coding {doc.get('label')!r} is not a variant of its [encode]",
                          code=ErrorCode.TUNE_REPORT, hint="measure again: preprocess tune ...")
    return Coding(enc, found[0])


def _model(doc: JsonObject, checks: tuple[float, float] | None) -> ModelSweep:
    sims = _get(doc, "similarity", dict)
    whole = np.asarray(_nan(sims["whole"]), dtype=np.float32)
    tiles = {s: np.asarray(_nan(sims[f"tiles-{s}"]), dtype=np.float32) for s in TILE_STATS} \
        if "tiles-min" in sims else None
    crops = np.asarray(_nan(sims["crops"]), dtype=np.float32) if "crops" in sims else None
    worst, worst_crop = doc.get("worst_tile"), doc.get("worst_crop")
    return ModelSweep(name=_get(doc, "name", str), ref=_get(doc, "ref", str), dim=_get(doc, "dim", int),
                      weights_sha256=_get(doc, "weights_sha256", str), whole=whole, tiles=tiles,
                      worst_tile=np.asarray(worst, dtype=np.int32) if worst is not None else None, crops=crops,
                      worst_crop=np.asarray(worst_crop, dtype=np.int32) if worst_crop is not None else None,
                      checks=checks if crops is not None else None)


def from_json(doc: JsonObject, path: str) -> Sweep:
    """The measurement of a saved ``report.json`` (format 3): ConfigError TUNE_REPORT for anything else."""
    if doc.get("format") != REPORT_FORMAT:
        raise ConfigError(f"{path}: a report.json of format {doc.get('format')!r}, not {REPORT_FORMAT}",
                          code=ErrorCode.TUNE_REPORT, hint="measure again with this version: preprocess tune ...")
    spec = parse_spec(_get(doc, "spec", dict), source=_get(doc, "spec_path", str))
    coding_list = [_coding(c) for c in _get(doc, "codings", list) if isinstance(c, dict)]
    images = [SampleImage(str(i["path"]), int(str(i["source_bytes"])), int(str(i["width"])), int(str(i["height"])))
              for i in _get(doc, "images", list) if isinstance(i, dict)]
    skipped = [Skipped(str(s["path"]), str(s["code"]), str(s["message"]))
               for s in _get(doc, "skipped", list) if isinstance(s, dict)]
    mode = _get(doc, "mode", str)
    gate_models = doc.get("gate_models", 1)  # reports before it judged by the first model only
    listed = [m for m in _get(doc, "models", list) if isinstance(m, dict)]
    if not isinstance(gate_models, int) or isinstance(gate_models, bool) or not 1 <= gate_models <= len(listed):
        raise ConfigError(f"report.json: 'gate_models' is {gate_models!r}, not a count of models",
                          code=ErrorCode.TUNE_REPORT, hint="measure again: preprocess tune ...")
    return Sweep(spec=spec, spec_path=_get(doc, "spec_path", str),
                 sizes=[int(str(x)) for x in _get(doc, "sizes", list)],
                 qualities=[int(str(x)) for x in _get(doc, "qualities", list)], codings=coding_list, images=images,
                 skipped=skipped, bytes=np.asarray(_get(doc, "bytes", list), dtype=np.int64),
                 encoded_bytes=np.asarray(_get(doc, "encoded_bytes", list), dtype=np.int64),
                 dims=np.asarray(_get(doc, "stored_size", list), dtype=np.int64),
                 models=[_model(m, gate_checks(spec) if i < gate_models else None) for i, m in enumerate(listed)],
                 engine="dali" if doc.get("engine") == "dali" else "pillow",
                 device="gpu" if doc.get("device") == "gpu" else "cpu",
                 mode="search" if mode == "search" else "every-quality",
                 band=[float(str(b)) for b in _get(doc, "band", list)], gauge=_get(doc, "gauge", str),
                 seconds=float(str(doc.get("seconds", 0.0))), gate_models=gate_models, timings=_timings(doc),
                 remade=True)


def _timings(doc: JsonObject) -> dict[str, float]:
    """A report's stage seconds (the encode costs among them); what is not a finite number >= 0 is left out."""
    got = doc.get("timings")
    items = got.items() if isinstance(got, dict) else ()
    return {str(k): float(v) for k, v in items
            if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) and v >= 0}
