"""The measurement: sample images at (coding, size, quality) points, judged by every model and view.

For each batch of sources: read and probe once; per size, decode + resize once (``Engine.load``).
Then rounds, as the gate runs them: each (coding, image) still searching names its next rung
(:mod:`.search`: the gate's own search, for every target of the band; or every rung with
``every_quality``), and the round's probes are measured together (:mod:`.measure`).

Recorded per measured (coding, size, quality, image): stored bytes (and the encoder's bytes before
``Engine.finish``), per model the similarity to the source (whole view) and, with the tile view,
the worst / 10th-percentile / mean tile similarity and which tile was worst, and the stored image's
embedding (neighbour agreement); with the crops view (every gate model's, when the spec checks crops or the
search is led by them), the worst crop's similarity and which crop. The search is led by the gate models
jointly: a probe passes where every one of them passes (:func:`.grid.joint`). Per (size, image): the stored
width/height.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InputError
from preprocess.core.progress import Progress, SilentProgress
from preprocess.pipeline.devices import DeviceChoice, DeviceName, EngineChoice, EngineName
from preprocess.pipeline.engines import make_engine, resolve
from preprocess.pipeline.engines.base import Box, Engine, crop_boxes
from preprocess.pipeline.extractor.build import build
from preprocess.pipeline.extractor.manifest import Manifest, find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.images import SourceInfo, probe
from preprocess.pipeline.spec import Spec, default_spec_path, load_spec
from preprocess.sources.files import batched, list_sources, read_source
from preprocess.tune.grid import (
    GAUGES,
    TILE_STATS,
    ModelSweep,
    SampleImage,
    Skipped,
    Sweep,
    codings,
    gate_checks,
    model_ref,
)
from preprocess.tune.measure import Batch, ModelUse, Probe, Run, encode_probes, image_axis, judge, load_size, references
from preprocess.tune.search import Learned, band_order


@dataclass(frozen=True)
class SweepOptions:
    sources: Sequence[str]
    spec_path: str | None = None
    gate_model: str | None = None  # judge by this model instead of the spec's gate models
    compare: Sequence[str] = ()  # other models (names or manifest paths), judged on the same candidates
    sizes: Sequence[int] = ()  # default: the spec's resize.size
    qualities: Sequence[int] = ()  # default: the spec's quality ladder
    formats: Sequence[str] = ()  # stored formats to compare (default: the spec's [encode] format only)
    tiles: bool = False  # measure the tile view with the spec's gate models
    compare_tiles: bool = False  # ... and with the compared models (slower: one embedding per tile)
    engine: EngineChoice = "auto"
    device: DeviceChoice = "auto"
    every_quality: bool = False  # measure every rung (full curves) instead of searching the crossings
    target: float | None = None  # the asked similarity (default: the spec's gate.threshold) ...
    band: Sequence[float] = ()  # ... and the others whose crossings the search brackets (the presets')
    gauge: str = "whole"  # the gauge (of the gate models, jointly) that leads the search


def _few(values: Sequence[int]) -> str:
    """The values out of range, at most a few of them (a range of 98 rungs is not a message)."""
    shown = ", ".join(map(str, values[:4]))
    return f"{shown} and {len(values) - 4} more" if len(values) > 4 else shown


def check_grid(sizes: Sequence[int], qualities: Sequence[int]) -> tuple[list[int], list[int]]:
    if not sizes or not qualities:
        raise ConfigError("the sweep needs at least one size and one quality", code=ErrorCode.TUNE_GRID)
    if bad := [s for s in sizes if not 16 <= s <= 65535]:
        raise ConfigError(f"sizes must be 16..65535 px, got {_few(bad)}", code=ErrorCode.TUNE_GRID)
    if bad := [q for q in qualities if not 1 <= q <= 100]:
        raise ConfigError(f"qualities must be 1..100, got {_few(bad)}", code=ErrorCode.TUNE_GRID)
    return sorted(set(sizes), reverse=True), sorted(set(qualities))


def sweep_grid(spec: Spec, opts: SweepOptions) -> tuple[list[int], list[int]]:
    """The long sides and qualities a sweep of ``spec`` measures (ConfigError TUNE_GRID for bad ones)."""
    return check_grid(opts.sizes or [spec.resize.size or 0], opts.qualities or spec.quality.ladder())


def _models(spec: Spec, opts: SweepOptions, engine: EngineName, device: DeviceName) -> list[ModelUse]:
    """The spec's gate models (each measures every view the spec checks, with the tile view when asked),
    then the compared ones."""
    manifests: list[tuple[str, Manifest, bool]] = []  # (ref, manifest, one of the gate's), each manifest once
    for k, n in enumerate([*spec.gate.models, *opts.compare]):
        m = find_manifest(n)
        if m.name not in [x.name for _, x, _ in manifests]:
            manifests.append((model_ref(n), m, k < len(spec.gate.models)))
    engines: dict[object, Engine] = {}
    out = []
    for ref, m, gate in manifests:
        built = build(m)
        if m.input not in engines:
            engines[m.input] = make_engine(engine, device, encode=spec.encode, view=m.input,
                                           max_batch=spec.batch.size)
        out.append(ModelUse(ref, m, built, Extractor(built, device=device), engines[m.input],
                            tiles=opts.tiles if gate else opts.compare_tiles,
                            crops=_crop_rule(spec) if gate and measures_crops(spec, opts.gauge) else None,
                            gate=gate))
    return out


def measures_crops(spec: Spec, gauge: str) -> bool:
    """Whether a sweep measures the crops view (with the gate models): when the spec's gate checks it, or
    the search is led by it."""
    return "crops" in dict(spec.gate.views.items()) or gauge in ("crops", "gate")


def _crop_rule(spec: Spec) -> Callable[[int, int], list[Box]]:
    grids, centre = spec.gate.crops.grids, spec.gate.crops.centre
    return lambda w, h: crop_boxes(w, h, grids, centre)


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


def _measure_size(run: Run, b: Batch, si: int) -> int:
    """Measure one size of a batch; the (coding, image) searches done (each advances the progress)."""
    size, loads = load_size(b, si)
    run.clock("decode_resize")
    b.arrays["dims"][si, size.ids] = [(p.width, p.height) for p in size.prepared]
    references(b, size, loads)
    run.clock("reference")
    refs = b.arrays[f"ref:{run.models[0].manifest.name}"][size.ids]
    plans = {(ci, k): run.plan() for ci in range(len(run.codings)) for k in range(len(size.prepared))}
    priors = {ci: run.learned.setdefault((ci, si), Learned()).prior() for ci in range(len(run.codings))}
    active, done = dict(plans), 0
    while True:
        probes: list[Probe] = []
        for (ci, k), plan in list(active.items()):
            rung = plan.next_rung(priors[ci], refs[k])
            if rung is None:
                del active[(ci, k)]
                done += 1
                run.progress.advance(1)
            else:
                probes.append((ci, k, rung))
        if not probes:
            break
        for (ci, k, rung), sim in zip(probes, judge(b, size, probes, encode_probes(b, size, probes)), strict=True):
            plans[(ci, k)].record(rung, sim)
    for ci in range(len(run.codings)):
        run.learned[(ci, si)].learn([plans[(ci, k)] for k in range(len(size.prepared))], list(refs))
    b.alive = size.ids
    return done


def _measure(run: Run, paths: Sequence[Path]) -> tuple[list[SampleImage], dict[str, list[np.ndarray]],
                                                        dict[str, dict[tuple[int, int, int, int], np.ndarray]]]:
    """Every batch at every size; the images that survived, their arrays (one part per batch) and their
    stored embeddings. Progress counts (coding, size, image) searches."""
    images: list[SampleImage] = []
    parts: dict[str, list[np.ndarray]] = {}
    stored: dict[str, dict[tuple[int, int, int, int], np.ndarray]] = {m.manifest.name: {} for m in run.models}
    per_image = len(run.codings)
    run.progress.start(len(paths) * len(run.sizes) * per_image)
    try:
        for paths_batch in batched(paths, run.spec.batch.size):
            read = _read(paths_batch, run.spec, run.skipped)
            run.clock("read")
            if not read:  # every file of this batch was skipped: nothing to measure (arrays of 0 images fail)
                run.progress.advance(len(paths_batch) * per_image * len(run.sizes))
                continue
            b = Batch(read, run)
            for si in range(len(run.sizes)):
                done = _measure_size(run, b, si)
                run.progress.advance(len(paths_batch) * per_image - done)  # the unreadable ones
            for name, points in b.kept_stored(len(images)).items():
                stored[name].update(points)
            images.extend(b.read[i][2] for i in b.alive)
            for key, a in b.kept().items():
                parts.setdefault(key, []).append(a)
    finally:
        run.progress.finish()
        for eng in {id(m.engine): m.engine for m in run.models}.values():
            eng.close()
    return images, parts, stored


def _spec(opts: SweepOptions) -> tuple[Spec, str]:
    spec_path = opts.spec_path or str(default_spec_path())
    spec = load_spec(spec_path)
    if opts.gate_model:
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"models": (opts.gate_model,)})})
    if spec.resize.mode not in ("long-side", "short-side"):
        raise ConfigError(f"tune measures resize.size, but the spec's resize.mode is {spec.resize.mode!r}",
                          code=ErrorCode.TUNE_RESIZE, path=spec_path,
                          hint='use resize.mode = "long-side" or "short-side"')
    if opts.gauge not in GAUGES or (opts.gauge.startswith("tiles-") and not opts.tiles):
        raise ConfigError(f"the search cannot be led by {opts.gauge!r}", code=ErrorCode.TUNE_VIEW,
                          hint="--view tiles measures the tile view (--tiles); --tiles-combine min|p10|mean")
    if opts.gauge == "gate" and gate_checks(spec) is None:
        raise ConfigError("--view gate judges the whole view and the crops together, and the spec's gate does "
                          "not check both", code=ErrorCode.TUNE_VIEW, path=spec_path,
                          hint="--view whole or --view crops, or a spec whose [gate.views] has whole and crops")
    return spec, spec_path


def _model_sweeps(models: Sequence[ModelUse], full: dict[str, np.ndarray],
                  stored: dict[str, dict[tuple[int, int, int, int], np.ndarray]],
                  checks: tuple[float, float] | None) -> list[ModelSweep]:
    out = []
    for m in models:
        name = m.manifest.name
        tiles, crops = full.get(f"tiles:{name}"), full.get(f"crops:{name}")
        out.append(ModelSweep(
            name=name, ref=m.ref, dim=m.manifest.output.dim, weights_sha256=m.manifest.weights_sha256(),
            whole=full[f"whole:{name}"],
            tiles={s: tiles[c] for c, s in enumerate(TILE_STATS)} if tiles is not None else None,
            worst_tile=full.get(f"worst:{name}"), reference=full[f"ref:{name}"], stored=stored[name],
            crops=crops, worst_crop=full.get(f"worstcrop:{name}"), checks=checks if crops is not None else None))
    return out


def run_sweep(opts: SweepOptions, progress: Progress | None = None) -> Sweep:
    """Measure; raise ConfigError before any decode for a bad spec, grid, view or an empty sample."""
    t_start = time.perf_counter()
    spec, spec_path = _spec(opts)
    sizes, qualities = sweep_grid(spec, opts)
    coding_list = codings(spec, opts.formats)
    engine_name, device = resolve(opts.engine, opts.device)
    paths = list_sources(opts.sources)
    if not paths:
        raise ConfigError("the sample is empty: no image files found", code=ErrorCode.SAMPLE_EMPTY,
                          path=", ".join(opts.sources), hint="pass folders holding .jpg/.png/... images")
    band = band_order(spec.gate.threshold if opts.target is None else opts.target, opts.band)
    run = Run(spec, sizes, qualities, coding_list, _models(spec, opts, engine_name, device),
               progress or SilentProgress(), opts.every_quality, opts.gauge, band, gate_checks(spec))
    images, parts, stored = _measure(run, paths)
    if not images:
        first = run.skipped[0] if run.skipped else None
        raise ConfigError(f"none of the {len(paths)} sample files could be read"
                          + (f" (e.g. {first.path}: [{first.code}] {first.message})" if first else ""),
                          code=ErrorCode.SAMPLE_EMPTY, hint="pass a folder of readable images")
    full = {key: np.concatenate(a, axis=image_axis(key)) for key, a in parts.items()}
    return Sweep(spec=spec, spec_path=spec_path, sizes=sizes, qualities=qualities, codings=coding_list,
                 images=images, skipped=run.skipped, bytes=full["bytes"], encoded_bytes=full["encoded"],
                 dims=full["dims"], models=_model_sweeps(run.models, full, stored, run.checks), engine=engine_name,
                 device=device, mode="every-quality" if opts.every_quality else "search", band=band,
                 gauge=opts.gauge, seconds=time.perf_counter() - t_start, timings=run.timings.rounded(3),
                 gate_models=sum(m.gate for m in run.models))
