"""The tune report: ``report.html`` (one self-contained file: figures inlined as base64 PNG, no
scripts, no external resources), ``report.json`` (every number behind it) and ``recommended.toml``
(a pipeline spec that ``preprocess run --spec`` takes as is)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.codecs import Candidate
from preprocess.engines import make_engine, tile_boxes
from preprocess.engines.base import SourceImage
from preprocess.extractor.manifest import find_manifest
from preprocess.images import probe
from preprocess.spec import Spec, load_spec, parse_spec
from preprocess.tune import plots
from preprocess.tune.recommend import Recommendation, Setting, setting
from preprocess.tune.sweep import Sweep

REPORT_FORMAT = 1


def mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def recommended_spec(sweep: Sweep, rec: Recommendation) -> Spec:
    """The sweep's spec with the recommended size, adaptive quality bounds, target and gate view."""
    assert rec.single is not None and rec.adaptive is not None
    q = sweep.qualities
    step = q[1] - q[0] if len(q) > 1 else 5
    view, combine = ("whole", sweep.spec.gate.tiles_combine) if rec.gauge == "whole" else (
        "tiles", rec.gauge.removeprefix("tiles-"))
    data = sweep.spec.to_dict()
    data["pipeline"] = {**data["pipeline"], "name": f"{sweep.spec.pipeline.name}-tuned",
                        "description": f"preprocess tune: {rec.model} {rec.gauge} >= {rec.target:g} at "
                                       f"p{rec.percentile:g}, {len(sweep.images)} sample images"}
    data["resize"] = {**data["resize"], "size": rec.single.size}
    data["quality"] = {**data["quality"], "mode": "adaptive", "min": q[0], "max": rec.single.quality,
                       "step": step, "value": rec.single.quality}
    ref = next(m.ref for m in sweep.models if m.name == rec.model)
    data["gate"] = {**data["gate"], "model": ref, "threshold": rec.target, "on_fail": "flag",
                    "view": view, "tiles_combine": combine}
    return parse_spec(data, source="recommended.toml")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are valid TOML
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def spec_toml(spec: Spec, header: list[str]) -> str:
    lines = [f"# {h}" for h in header]
    for section, values in spec.to_dict().items():
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def _crops(sweep: Sweep, rec: Recommendation) -> list[plots.Crop]:
    """The worst images at the recommended setting, around their worst tile (else the centre),
    re-made with the pillow engine (what the report shows is the bytes a CPU run stores)."""
    if rec.single is None or not rec.worst:
        return []
    view = find_manifest(rec.model).input
    engine = make_engine("pillow", "cpu", encode=sweep.spec.encode, view=view)
    resize = sweep.resize(rec.single.size)
    try:
        srcs = []
        for w in rec.worst:
            data = Path(w.path).read_bytes()
            info = probe(data, max_pixels=sweep.spec.limits.max_pixels, path=w.path)
            srcs.append(SourceImage(w.path, data, "", info, resize.target(info.width, info.height)))
        loaded = engine.load(srcs)
        primary = sweep.spec.encode.variants()[0]
        blobs = engine.encode(loaded.prepared, [Candidate(primary, rec.single.quality)] * len(loaded.prepared))
        out = []
        for p, blob in zip(loaded.prepared, blobs, strict=True):
            w = rec.worst[p.index]
            boxes = tile_boxes(p.width, p.height, view.width, view.height)
            if w.tile is not None and w.tile < len(boxes):
                box = boxes[w.tile]
            else:
                cx, cy = p.width // 2, p.height // 2
                box = (max(cx - view.width // 2, 0), max(cy - view.height // 2, 0),
                       min(cx + view.width // 2, p.width), min(cy + view.height // 2, p.height))
            src = engine.crop(p, box)
            stored = engine.crop(blob, box)
            where = "worst tile" if w.tile is not None else "centre"
            out.append(plots.Crop(f"{Path(w.path).name}: {rec.gauge} {w.similarity:.4f}, {w.bytes:,} B "
                                  f"({where} {box[0]},{box[1]})", src, stored))
        return out
    finally:
        engine.close()


def _img(png: bytes, alt: str, ident: str) -> str:
    b64 = base64.b64encode(png).decode()
    return f'<img class="plot" id="{ident}" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(head: list[str], rows: list[list[Any]], ident: str = "") -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    idattr = f' id="{ident}"' if ident else ""
    return f"<table{idattr}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _s(x: float) -> str:
    return f"{x:.4f}"


def _setting_row(s: Setting, source_bytes: int) -> list[Any]:
    return [s.size, s.quality, mb(s.total_bytes), f"{source_bytes / s.total_bytes:.1f}x" if s.total_bytes else "-",
            f"{s.bits_per_pixel:.3f}", _s(s.at_percentile), _s(s.minimum), _s(s.p1), _s(s.p5), _s(s.median),
            _s(s.mean)]


SETTING_HEAD = ["size", "quality", "bytes", "smaller than sources", "bits/pixel", "at percentile", "min", "p1",
                "p5", "median", "mean"]

_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
.big{display:flex;flex-wrap:wrap;gap:1em}.big div{background:#f6f8fa;padding:.6em 1em;border-radius:6px}
.big b{display:block;font-size:1.5em}.warn{background:#fff3cd;padding:.6em 1em;border-radius:6px}
img.plot{max-width:100%;display:block;margin:.6em 0}code{background:#f4f4f4;padding:0 3px}"""


def _decision(sweep: Sweep, rec: Recommendation) -> str:
    if rec.single is None or rec.adaptive is None:
        return f'<p class="warn" id="no-recommendation">{html.escape(rec.message)}</p>'
    s, a = rec.single, rec.adaptive
    src = rec.source_bytes
    cards = [("size", f"{s.size} px"), ("single quality", f"q{s.quality}"),
             ("bytes (single)", f"{mb(s.total_bytes)} = {s.total_bytes / src:.1%} of sources"),
             (f"similarity at p{rec.percentile:g}", _s(s.at_percentile)),
             ("adaptive (expected)", f"{mb(a.total_bytes)}, saves {a.saving:.1%}"),
             ("sources", mb(src))]
    big = "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in cards)
    note = f'<p class="warn">{html.escape(rec.message)}</p>' if rec.message else ""
    worst = _table(["image", f"similarity ({rec.gauge})", "bytes"],
                   [[Path(w.path).name, _s(w.similarity), f"{w.bytes:,}"] for w in rec.worst], "worst")
    return (f'<div class="big" id="decision">{big}</div>{note}'
            f"<p>Judged by <b>{html.escape(rec.model)}</b>, view <b>{rec.gauge}</b>: the lowest swept quality "
            f"whose p{rec.percentile:g} similarity is &ge; {rec.target:g}. Adaptive: each image at the lowest "
            f"quality &le; q{s.quality} that reaches {rec.target:g} on its own ({a.below_target} image(s) "
            f"never do and stay at q{s.quality}, flagged); similarity at p{rec.percentile:g} "
            f"{_s(a.at_percentile)}. <code>recommended.toml</code> is that adaptive spec.</p>"
            f"<h3>Worst images at this setting</h3>{worst}")


def render_html(sweep: Sweep, rec: Recommendation) -> str:
    m0 = sweep.models[0]
    title = f"preprocess tune: {sweep.spec.pipeline.name}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(sweep.images)} sample images ({mb(sweep.source_bytes)}), {len(sweep.skipped)} skipped; "
             f"sizes {sweep.sizes}; qualities {sweep.qualities[0]}..{sweep.qualities[-1]} "
             f"({len(sweep.qualities)} steps); models {', '.join(m.name for m in sweep.models)}; "
             f"engine {sweep.engine} on {sweep.device}; {sweep.seconds:.1f} s.</p>",
             "<h2>Recommendation</h2>", _decision(sweep, rec)]
    if sweep.images:
        parts += ["<h2>Single quality per size</h2>", _per_size(sweep, rec),
                  "<h2>Rate and fidelity</h2>",
                  _img(plots.rate_fidelity(sweep, rec), "rate-fidelity curves", "curves"),
                  "<h2>Pareto front (size x quality)</h2>",
                  _img(plots.pareto_front(sweep, rec), "Pareto front", "pareto"),
                  _table(SETTING_HEAD, [_setting_row(p, rec.source_bytes) for p in rec.pareto], "pareto-table"),
                  "<h2>Every image</h2>", _img(plots.per_image(sweep, rec), "per-image scatter", "scatter"),
                  "<h2>Views and models: what each calls safe</h2>",
                  "<p>Whole: the whole image in the model's view. Tiles: the stored image cut into model-sized "
                  "tiles at its own resolution, each against the same tile of the uncompressed resized image, "
                  "combined by the worst tile (min), the 10th percentile (p10) or the mean. The minimum is the "
                  "harshest and noisiest: one tile of sky or texture can decide. Tiles compare against the "
                  "uncompressed image <i>at the stored size</i>, so they see compression only; the whole view "
                  "compares with the source, so it also sees the resize.</p>",
                  _img(plots.views_and_models(sweep, rec), "views and models", "views"),
                  _gauges(sweep, rec),
                  "<h2>Neighbour agreement</h2>",
                  f"<p>For each image, its nearest neighbours among the sample's source embeddings, against its "
                  f"nearest neighbours when every image is replaced by its stored copy (k = {m0.k}).</p>",
                  _img(plots.neighbours(sweep, rec), "neighbour agreement", "neighbours")]
        crops = _crops(sweep, rec)
        if crops:
            parts += ["<h2>Worst-affected images at the recommended setting</h2>",
                      _img(plots.crops(crops), "source vs stored crops", "crops")]
        parts += ["<h2>Every setting</h2>", _grid_tables(sweep, rec)]
    skipped = _table(["file", "code", "reason"], [[s.path, s.code, s.message] for s in sweep.skipped], "skipped")
    parts += ["<h2>Skipped files</h2>", skipped if sweep.skipped else "<p>none</p>"]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{_CSS}</style></head><body>{"".join(parts)}</body></html>\n')


def _per_size(sweep: Sweep, rec: Recommendation) -> str:
    m = next(x for x in sweep.models if x.name == rec.model)
    sims = m.values(rec.gauge)
    rows = []
    for si, sz in enumerate(sweep.sizes):
        q = rec.per_size.get(sz)
        if q is None:
            rows.append([sz, "never", *["-"] * (len(SETTING_HEAD) - 2)])
        else:
            rows.append(_setting_row(setting(sweep, sims, si, sweep.qualities.index(q), rec.percentile),
                                     rec.source_bytes))
    return _table(SETTING_HEAD, rows, "per-size")


def _gauges(sweep: Sweep, rec: Recommendation) -> str:
    """Per model and view: the lowest quality meeting the target per size; what it reads at the
    recommended setting; and how often similarity drops when quality rises (noise)."""
    si = sweep.sizes.index(rec.size) if rec.size is not None else len(sweep.sizes) - 1
    qi = sweep.qualities.index(rec.single.quality) if rec.single is not None else len(sweep.qualities) - 1
    at = f"q{sweep.qualities[qi]} @ {sweep.sizes[si]} px"
    rows = []
    for m in sweep.models:
        for g in m.gauges():
            sims = m.values(g)
            lowest = rec.by_gauge[f"{m.name} {g}"]
            steps = np.diff(sims[si], axis=0)  # [quality - 1, image]
            drops = int((steps < -1e-4).sum())
            rows.append([f"{m.name} {g}", *[f"q{v}" if v is not None else "never" for v in lowest.values()],
                         _s(float(np.percentile(sims[si, qi], rec.percentile))), _s(float(np.median(sims[si, qi]))),
                         f"{drops} of {steps.size}"])
    head = ["model and view", *[f"lowest q @ {s} px" for s in sweep.sizes], f"p{rec.percentile:g} at {at}",
            f"median at {at}", f"quality up, similarity down ({sweep.sizes[si]} px)"]
    return _table(head, rows, "gauges")


def _grid_tables(sweep: Sweep, rec: Recommendation) -> str:
    out = []
    for m in sweep.models:
        for g in m.gauges():
            sims = m.values(g)
            rows = []
            for si in range(len(sweep.sizes)):
                for qi in range(len(sweep.qualities)):
                    row = _setting_row(setting(sweep, sims, si, qi, rec.percentile), rec.source_bytes)
                    per_image = int(sweep.bytes[si, qi].mean())
                    rows.append([*row, f"{per_image:,}", f"{m.top1[si, qi]:.2f}", f"{m.topk[si, qi]:.2f}"])
            head = [*SETTING_HEAD, "bytes/image", "top-1", f"top-{m.k}"]
            out.append(f"<details><summary>{html.escape(m.name)}: {g}</summary>{_table(head, rows)}</details>")
    return "".join(out)


def to_json(sweep: Sweep, rec: Recommendation) -> dict[str, Any]:
    def arr(a: np.ndarray) -> Any:
        return np.round(a.astype(np.float64), 6).tolist()

    return {
        "format": REPORT_FORMAT,
        "spec": sweep.spec.to_dict(), "spec_path": sweep.spec_path,
        "engine": sweep.engine, "device": sweep.device, "seconds": round(sweep.seconds, 3), "timings": sweep.timings,
        "sizes": sweep.sizes, "qualities": sweep.qualities,
        "images": [{"path": i.path, "source_bytes": i.source_bytes, "width": i.width, "height": i.height}
                   for i in sweep.images],
        "skipped": [{"path": s.path, "code": s.code, "message": s.message} for s in sweep.skipped],
        "bytes": sweep.bytes.tolist(), "stored_size": sweep.dims.tolist(),
        "bits_per_pixel": arr(8 * sweep.bytes / np.maximum(sweep.pixels(), 1)[:, None, :]),
        "models": [{"name": m.name, "ref": m.ref, "dim": m.dim, "weights_sha256": m.weights_sha256, "k": m.k,
                    "similarity": {g: arr(m.values(g)) for g in m.gauges()},
                    "neighbours": {"top1": arr(m.top1), f"top{m.k}": arr(m.topk)}} for m in sweep.models],
        "recommendation": {
            "model": rec.model, "gauge": rec.gauge, "target": rec.target, "percentile": rec.percentile,
            "ok": rec.ok, "message": rec.message, "size": rec.size, "source_bytes": rec.source_bytes,
            "single": rec.single.__dict__ if rec.single else None,
            "adaptive": rec.adaptive.__dict__ if rec.adaptive else None,
            "per_size": {str(k): v for k, v in rec.per_size.items()},
            "by_gauge": {k: {str(s): q for s, q in v.items()} for k, v in rec.by_gauge.items()},
            "pareto": [p.__dict__ for p in rec.pareto],
            "worst": [w.__dict__ for w in rec.worst],
        },
    }


def write_report(sweep: Sweep, rec: Recommendation, out_dir: str | Path) -> dict[str, Path]:
    """Write the report files; ``recommended.toml`` only when the target is reachable."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"html": out / "report.html", "json": out / "report.json"}
    written["html"].write_text(render_html(sweep, rec), encoding="utf-8")
    written["json"].write_text(json.dumps(to_json(sweep, rec), indent=1), encoding="utf-8")
    toml = out / "recommended.toml"
    if rec.single is not None and rec.adaptive is not None:
        spec = recommended_spec(sweep, rec)
        header = [f"Made by `preprocess tune` from {sweep.spec_path} on {len(sweep.images)} sample images.",
                  f"Target: {rec.model} {rec.gauge} similarity >= {rec.target:g} at percentile "
                  f"{rec.percentile:g} of the sample.",
                  f"Single quality q{rec.single.quality} at {rec.single.size} px: {rec.single.total_bytes:,} bytes "
                  f"({rec.single.total_bytes / rec.source_bytes:.1%} of the sources), similarity at the percentile "
                  f"{rec.single.at_percentile:.4f}.",
                  f"This adaptive spec (q{spec.quality.min}..q{spec.quality.max}): expected "
                  f"{rec.adaptive.total_bytes:,} bytes, {rec.adaptive.saving:.1%} less."]
        toml.write_text(spec_toml(spec, header), encoding="utf-8")
        load_spec(toml)  # what was written must read back as a valid spec
        written["spec"] = toml
    else:
        toml.unlink(missing_ok=True)  # never leave an older recommendation next to a report that has none
    return written
