"""The tune report: ``report.html`` (one self-contained file: figures inlined as SVG, pictures as
data: URIs, no scripts, no external resources), ``report.json`` (every number behind it) and the
recommended specs (``recommended.toml`` for the first format asked, ``recommended-FORMAT.toml`` for
the others), which ``preprocess run --spec`` takes as they are."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.pipeline.spec import load_spec
from preprocess.tune import plots
from preprocess.tune.recommend import Recommendation, Setting, setting
from preprocess.tune.recommended import header, recommended_spec, spec_file, spec_toml
from preprocess.tune.stored import DIFF_GAIN, THUMB_SIDE, StoredImage, StoredSample, store_sample
from preprocess.tune.sweep import Sweep

REPORT_FORMAT = 2


def mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


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

_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
.big{display:flex;flex-wrap:wrap;gap:1em}.big div{background:#f6f8fa;padding:.6em 1em;border-radius:6px}
.big b{display:block;font-size:1.5em}.warn{background:#fff3cd;padding:.6em 1em;border-radius:6px}
svg.plot{max-width:100%;height:auto;display:block;margin:.6em 0}code{background:#f4f4f4;padding:0 3px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.gallery figure{margin:0;background:#f6f8fa;border-radius:6px;padding:6px;font-size:12px}
.gallery img{display:block;max-width:100%;height:auto;margin:0 auto}.gallery .flagged{outline:2px solid #D55E00}
.crops figure{margin:.8em 0}.crops .row{display:flex;flex-wrap:wrap;gap:8px}
.crops img{image-rendering:pixelated;border:1px solid #ccc}.crops span{display:block;font-size:12px;color:#555}
details{margin:.8em 0}summary{cursor:pointer;font-weight:600}.wide{overflow-x:auto}#formats{font-size:13px}
.compare{margin:.4em 0}.compare .a{position:relative;image-rendering:pixelated;border:1px solid #ccc;
background-repeat:no-repeat}.compare .b{position:absolute;top:0;left:0;height:100%;width:50%;min-width:6px;
max-width:100%;overflow:hidden;resize:horizontal;border-right:2px solid #e8175d;background-repeat:no-repeat}
.compare:has(.flick:hover) .b{width:100%;animation:flick 1.2s steps(1) infinite}@keyframes flick{50%{opacity:0}}
.compare .flick{display:inline-block;margin-left:1em;cursor:help;text-decoration:underline dotted}"""


def _cards(rec: Recommendation, sample: StoredSample | None) -> str:
    assert rec.single is not None and rec.adaptive is not None
    s, a, src = rec.single, rec.adaptive, rec.source_bytes
    cards = [("format", rec.format), ("size", f"{s.size} px"), ("single quality", f"q{s.quality}"),
             ("bytes (single)", f"{mb(s.total_bytes)} = {s.total_bytes / src:.1%} of sources"),
             (f"similarity at p{rec.percentile:g}", _s(s.at_percentile)),
             ("adaptive (expected)", f"{mb(a.total_bytes)} = {a.total_bytes / src:.1%}, saves {a.saving:.1%}"),
             ("sources", mb(src))]
    if sample is not None and sample.speed is not None:
        cards.append(("decode (1 core)", f"{sample.speed.cpu_ms_per_mp:.1f} ms/MP"))
    return "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in cards)


def _decision(sweep: Sweep, rec: Recommendation, sample: StoredSample | None, first: bool) -> str:
    if rec.single is None or rec.adaptive is None:
        return f'<p class="warn no-recommendation" id="no-recommendation-{rec.format}">{html.escape(rec.message)}</p>'
    s, a = rec.single, rec.adaptive
    notes = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in (rec.message, a.ladder.note) if n)
    return (f'<div class="big decision" id="decision-{rec.format}">{_cards(rec, sample)}</div>{notes}'
            f"<p>Judged by <b>{html.escape(rec.model)}</b>, view <b>{rec.gauge}</b>: the lowest swept quality "
            f"whose p{rec.percentile:g} similarity is &ge; {rec.target:g} ({html.escape(s.coding)}). Adaptive: each "
            f"image at the lowest rung of the ladder q{a.ladder.min}..q{a.max_quality} step {a.ladder.step} that "
            f"reaches {rec.target:g} on its own ({a.below_target} image(s) never do and stay at q{a.max_quality}, "
            f"flagged); similarity at p{rec.percentile:g} {_s(a.at_percentile)}. "
            f"<code>{spec_file(rec, first)}</code> is that adaptive spec.</p>")


def _thumb(sweep: Sweep, rank: int, item: StoredImage) -> str:
    c = item.choice
    name = Path(c.path).name
    label = (f"{rank}. {name}: {sweep.codings[c.coding].label} q{c.quality}, {len(item.data):,} B, "
             f"{item.width}x{item.height}, similarity {c.similarity:.4f}" + ("" if c.passed else " (flagged)"))
    cls = "" if c.passed else ' class="flagged"'
    return (f'<figure{cls} data-rank="{rank}" data-similarity="{c.similarity:.6f}" data-name="{html.escape(name)}">'
            f'<img class="thumb" alt="{html.escape(name)} as stored" title="{html.escape(label)}" '
            f'src="{_data_uri(item.thumbnail, "image/jpeg")}"><figcaption>{html.escape(label)}</figcaption></figure>')


def _crops(sweep: Sweep, sample: StoredSample) -> str:
    out = []
    for rank, item in enumerate(sample.images, 1):
        if item.crop is None:
            continue
        r, c = item.crop.region, item.choice
        zoom = max(1, min(3, 256 // max(r.width, 1)))
        imgs = "".join(
            f'<div><img class="crop" alt="{what}" width="{r.width * zoom}" height="{r.height * zoom}" '
            f'src="{_data_uri(data, "image/png")}"><span>{what}</span></div>'
            for what, data in (("source (resized, uncompressed)", item.crop.source), ("stored", item.crop.stored),
                               (f"|difference| x {DIFF_GAIN:g} (dark: changed)", item.crop.difference)))
        caption = (f"{rank}. {Path(c.path).name}, {sweep.codings[c.coding].label} q{c.quality}, similarity "
                   f"{c.similarity:.4f}: the {r.width} px square at ({r.x}, {r.y}) where it changed most (mean "
                   f"|difference| {r.mean_abs_diff:.1f} of 255), shown x{zoom}")
        out.append(f'<figure class="crop-set" data-name="{html.escape(Path(c.path).name)}">'
                   f'<figcaption>{html.escape(caption)}</figcaption><div class="row">{imgs}</div>'
                   f'{_comparer(item.crop.source, item.crop.stored, r.width, r.height)}</figure>')
    return f'<div class="crops" id="crops-{sample.format}">{"".join(out)}</div>'


def _comparer(source: bytes, stored: bytes, width: int, height: int) -> str:
    """The web UI's "Compare at 100%" without a script (the report runs none): the source and the stored
    crop at 1:1 in one place, the stored one over the source up to a divider the reader drags (the
    box's resize corner), flickering while the pointer rests on "flicker". Backgrounds, not <img>."""
    size, a = f"width:{width}px;height:{height}px", _data_uri(source, "image/png")
    return (f'<div class="compare"><div class="a" style="{size};background-image:url({a})">'
            f'<div class="b" style="background-size:{width}px {height}px;'
            f'background-image:url({_data_uri(stored, "image/png")})"></div></div>'
            f'<span>compare at 100%: the stored crop over the source; drag the corner to slide</span>'
            f'<span class="flick">flicker</span></div>')


def _pictures(sweep: Sweep, rec: Recommendation, sample: StoredSample | None) -> str:
    if sample is None:
        return ""
    missing = "".join(f'<p class="warn">{html.escape(f"{m.path}: [{m.code}] {m.message}")}</p>' for m in sample.missing)
    thumbs = "".join(_thumb(sweep, k, item) for k, item in enumerate(sample.images, 1))
    return (f"<h3>Every sample image as stored, worst first</h3>{missing}"
            f"<p>Each image at its adaptive choice (coding and quality), made again by the {sweep.engine} engine "
            f"as stored ({mb(sample.total_bytes)} in all), then decoded; thumbnails downscaled to "
            f"{THUMB_SIDE} px (their own JPEG). Hover for details; a red frame marks an image flagged below the "
            f"target.</p><div class=\"gallery\" id=\"gallery-{rec.format}\">{thumbs}</div>"
            f"<h3>Where the worst images changed most</h3>"
            f"<p>Crops at 1:1 pixels (enlarged without smoothing) of the square with the largest mean absolute "
            f"difference between the uncompressed resized source and the stored image.</p>{_crops(sweep, sample)}")


def _details(sweep: Sweep, rec: Recommendation, first: bool) -> str:
    f = rec.format
    parts = ["<h3>Single quality per size</h3>", _per_size(sweep, rec),
             "<h3>Rate and fidelity</h3>", plots.rate_fidelity(sweep, rec, f"curves-{f}"),
             "<h3>Pareto front (size x quality)</h3>", plots.pareto_front(sweep, rec, f"pareto-{f}"),
             _table(["coding", *SETTING_HEAD], [[p.coding, *_setting_row(p, rec.source_bytes)] for p in rec.pareto],
                    f"pareto-table-{f}"),
             "<h3>Every image</h3><p>Hover a point for the image, quality, bytes and similarity.</p>",
             plots.per_image(sweep, rec, f"scatter-{f}"),
             "<h3>Views and models: what each calls safe</h3>",
             "<p>Whole: the whole image in the model's view. Tiles: the stored image cut into model-sized "
             "tiles at its own resolution, each against the same tile of the uncompressed resized image, "
             "combined by the worst tile (min), the 10th percentile (p10) or the mean. The minimum is the "
             "harshest and noisiest: one tile of sky or texture can decide. Tiles compare against the "
             "uncompressed image <i>at the stored size</i>, so they see compression only; the whole view "
             "compares with the source, so it also sees the resize.</p>",
             plots.views_and_models(sweep, rec, f"views-{f}"), _gauges(sweep, rec),
             "<h3>Neighbour agreement</h3>",
             f"<p>For each image, its nearest neighbours among the sample's source embeddings, against its nearest "
             f"neighbours when every image is replaced by its stored copy (k = {sweep.models[0].k}).</p>",
             plots.neighbours(sweep, rec, f"neighbours-{f}"),
             "<h3>Every setting</h3>", _grid_tables(sweep, rec)]
    return f"<details{' open' if first else ''}><summary>{f}: the measurements</summary>{''.join(parts)}</details>"


def _section(sweep: Sweep, rec: Recommendation, sample: StoredSample | None, first: bool) -> str:
    body = _decision(sweep, rec, sample, first)
    if rec.ok:
        body += _pictures(sweep, rec, sample)
    return (f'<section class="format" id="rec-{rec.format}"><h2>Recommendation: {rec.format}</h2>{body}'
            f"{_details(sweep, rec, first)}</section>")


def _summary(sweep: Sweep) -> str:
    return (f"<p>{len(sweep.images)} sample images ({mb(sweep.source_bytes)}), {len(sweep.skipped)} skipped; "
            f"sizes {sweep.sizes}; qualities {', '.join(map(str, sweep.qualities))}; "
            f"codings {', '.join(c.label for c in sweep.codings)}; models {', '.join(m.name for m in sweep.models)}; "
            f"engine {sweep.engine} on {sweep.device}; sweep {sweep.seconds:.1f} s.</p>")


def render_html(sweep: Sweep, recs: Sequence[Recommendation], samples: Sequence[StoredSample | None]) -> str:
    title = f"preprocess tune: {sweep.spec.pipeline.name}"
    parts = [f"<h1>{html.escape(title)}</h1>", _summary(sweep), "<h2>Formats</h2>", _formats(sweep, recs, samples)]
    for k, (rec, sample) in enumerate(zip(recs, samples, strict=True)):
        parts.append(_section(sweep, rec, sample, k == 0))
    skipped = _table(["file", "code", "reason"], [[s.path, s.code, s.message] for s in sweep.skipped], "skipped")
    parts += ["<h2>Skipped files</h2>", skipped if sweep.skipped else "<p>none</p>"]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{_CSS}</style></head><body>{"".join(parts)}</body></html>\n')


FORMATS_HEAD = ["format", "codings", "size", "single quality", "adaptive ladder", "adaptive (expected)", "re-made",
                "at percentile (adaptive)", "flagged", "decode ms/MP", "images/s", "decoder", "spec"]


def _format_row(rec: Recommendation, sample: StoredSample | None, first: bool, sweep: Sweep) -> list[Any]:
    codings = ", ".join(sweep.codings[c].label.removeprefix(f"{rec.format} ") for c in rec.codings)
    speed = sample.speed if sample is not None else None
    decode = ([f"{speed.cpu_ms_per_mp:.1f}", f"{speed.images_per_s:.0f}", speed.decoder] if speed is not None
              else ["-", "-", "-"])
    if rec.single is None or rec.adaptive is None:
        return [rec.format, codings, "never", *["-"] * 6, *decode, "-"]
    s, a, src = rec.single, rec.adaptive, rec.source_bytes
    return [rec.format, codings, s.size, f"q{s.quality}: {mb(s.total_bytes)} ({s.total_bytes / src:.2%})",
            f"q{a.ladder.min}..q{a.max_quality}/{a.ladder.step}", f"{mb(a.total_bytes)} ({a.total_bytes / src:.2%})",
            mb(sample.total_bytes) if sample is not None else "-", _s(a.at_percentile), a.below_target, *decode,
            spec_file(rec, first)]


def _formats(sweep: Sweep, recs: Sequence[Recommendation], samples: Sequence[StoredSample | None]) -> str:
    rows = [_format_row(rec, sample, k == 0, sweep) for k, (rec, sample) in enumerate(zip(recs, samples, strict=True))]
    size = next((r.size for r in recs if r.size is not None), sweep.sizes[-1])
    rec0 = recs[0]
    return (f"<p>Per stored format, judged by {html.escape(rec0.model)} {rec0.gauge} &ge; {rec0.target:g} at "
            f"p{rec0.percentile:g}. Every byte count is of the bytes <b>as stored</b>: after "
            f"<code>Engine.finish</code>, which rewrites progressive JPEG with mozjpeg's lossless scan "
            f"optimization (the encoder's own bytes are in report.json as <code>encoded_bytes</code>). Decode "
            f"speed: each format's stored sample at its recommended setting decoded as the dataset reader does "
            f"(<code>preprocess.pipeline.images.decode_rgb</code>), one image after another on one thread, median of "
            f"repeated passes, CPU time (wall time is in report.json; on a busy machine it is longer). Quality "
            f"scales differ between encoders: compare bytes and similarity, not quality numbers.</p>"
            + f'<div class="wide">{_table(FORMATS_HEAD, rows, "formats")}</div>'
            + plots.formats(sweep, recs, size, "formats-chart"))


def _per_size(sweep: Sweep, rec: Recommendation) -> str:
    m = next(x for x in sweep.models if x.name == rec.model)
    sims = m.values(rec.gauge)
    rows = []
    for si, sz in enumerate(sweep.sizes):
        q = rec.per_size.get(sz)
        found = [setting(sweep, sims, (ci, si, sweep.qualities.index(q)), rec.percentile) for ci in rec.codings
                 if q is not None]
        best = min((p for p in found if p.at_percentile >= rec.target), key=lambda p: p.total_bytes, default=None)
        rows.append([best.coding, *_setting_row(best, rec.source_bytes)] if best else
                    ["-", sz, "never", *["-"] * (len(SETTING_HEAD) - 2)])
    return _table(["coding", *SETTING_HEAD], rows, f"per-size-{rec.format}")


def _gauges(sweep: Sweep, rec: Recommendation) -> str:
    """Per model and view: the lowest quality meeting the target per size; what it reads at the
    recommended setting; and how often similarity drops when quality rises (noise)."""
    si = sweep.sizes.index(rec.size) if rec.size is not None else len(sweep.sizes) - 1
    qi = sweep.qualities.index(rec.single.quality) if rec.single is not None else len(sweep.qualities) - 1
    ci = rec.codings[0]
    at = f"q{sweep.qualities[qi]} @ {sweep.sizes[si]} px"
    rows = []
    for m in sweep.models:
        for g in m.gauges():
            sims = m.values(g)[ci]
            lowest = rec.by_gauge[f"{m.name} {g}"]
            steps = np.diff(sims[si], axis=0)  # [quality - 1, image]
            drops = int((steps < -1e-4).sum())
            rows.append([f"{m.name} {g}", *[f"q{v}" if v is not None else "never" for v in lowest.values()],
                         _s(float(np.percentile(sims[si, qi], rec.percentile))), _s(float(np.median(sims[si, qi]))),
                         f"{drops} of {steps.size}"])
    head = ["model and view", *[f"lowest q @ {s} px" for s in sweep.sizes], f"p{rec.percentile:g} at {at}",
            f"median at {at}", f"quality up, similarity down ({sweep.sizes[si]} px)"]
    return _table(head, rows, f"gauges-{rec.format}")


def _grid_tables(sweep: Sweep, rec: Recommendation) -> str:
    out = []
    for m in sweep.models:
        for g in m.gauges():
            sims = m.values(g)
            rows = []
            for ci in rec.codings:
                for si in range(len(sweep.sizes)):
                    for qi in range(len(sweep.qualities)):
                        row = _setting_row(setting(sweep, sims, (ci, si, qi), rec.percentile), rec.source_bytes)
                        per_image = int(sweep.bytes[ci, si, qi].mean())
                        rows.append([sweep.codings[ci].label, *row, f"{per_image:,}", f"{m.top1[ci, si, qi]:.2f}",
                                     f"{m.topk[ci, si, qi]:.2f}"])
            head = ["coding", *SETTING_HEAD, "bytes/image", "top-1", f"top-{m.k}"]
            out.append(f"<details><summary>{html.escape(m.name)}: {g}</summary>{_table(head, rows)}</details>")
    return "".join(out)


def _rec_json(sweep: Sweep, rec: Recommendation, sample: StoredSample | None, first: bool) -> dict[str, Any]:
    adaptive = None
    if rec.adaptive is not None:
        adaptive = {**asdict(rec.adaptive), "choices": [
            {**asdict(c), "coding": sweep.codings[c.coding].label} for c in rec.adaptive.choices]}
    stored = None
    if sample is not None:
        sp = sample.speed
        stored = {"total_bytes": sample.total_bytes, "images": len(sample.images),
                  "missing": [asdict(m) for m in sample.missing],
                  "decode": None if sp is None else {
                      "decoder": sp.decoder, "images": sp.images, "megapixels": round(sp.megapixels, 4),
                      "repeats": sp.repeats, "cpu_seconds": round(sp.cpu_seconds, 5),
                      "wall_seconds": round(sp.wall_seconds, 5), "cpu_ms_per_mp": round(sp.cpu_ms_per_mp, 3),
                      "wall_ms_per_mp": round(sp.wall_ms_per_mp, 3), "images_per_s": round(sp.images_per_s, 2)}}
    return {"format": rec.format, "codings": [sweep.codings[c].label for c in rec.codings], "model": rec.model,
            "gauge": rec.gauge, "target": rec.target, "percentile": rec.percentile, "ok": rec.ok,
            "message": rec.message, "size": rec.size, "source_bytes": rec.source_bytes,
            "single": asdict(rec.single) if rec.single else None, "adaptive": adaptive,
            "per_size": {str(k): v for k, v in rec.per_size.items()},
            "by_gauge": {k: {str(s): q for s, q in v.items()} for k, v in rec.by_gauge.items()},
            "pareto": [asdict(p) for p in rec.pareto], "stored": stored,
            "spec": spec_file(rec, first) if rec.ok else None}


def to_json(sweep: Sweep, recs: Sequence[Recommendation], samples: Sequence[StoredSample | None]) -> dict[str, Any]:
    def arr(a: np.ndarray) -> Any:
        return np.round(a.astype(np.float64), 6).tolist()

    return {
        "format": REPORT_FORMAT,
        "spec": sweep.spec.to_dict(), "spec_path": sweep.spec_path,
        "engine": sweep.engine, "device": sweep.device, "seconds": round(sweep.seconds, 3), "timings": sweep.timings,
        "sizes": sweep.sizes, "qualities": sweep.qualities,
        "codings": [{"label": c.label, "format": c.format, "encoder": c.variant.encoder, "chroma": c.variant.chroma,
                     "encode": c.encode.to_dict()} for c in sweep.codings],
        "images": [{"path": i.path, "source_bytes": i.source_bytes, "width": i.width, "height": i.height}
                   for i in sweep.images],
        "skipped": [{"path": s.path, "code": s.code, "message": s.message} for s in sweep.skipped],
        "bytes": sweep.bytes.tolist(), "encoded_bytes": sweep.encoded_bytes.tolist(),
        "stored_size": sweep.dims.tolist(),
        "bits_per_pixel": arr(8 * sweep.bytes / np.maximum(sweep.pixels(), 1)[None, :, None, :]),
        "models": [{"name": m.name, "ref": m.ref, "dim": m.dim, "weights_sha256": m.weights_sha256, "k": m.k,
                    "similarity": {g: arr(m.values(g)) for g in m.gauges()},
                    "neighbours": {"top1": arr(m.top1), f"top{m.k}": arr(m.topk)}} for m in sweep.models],
        "recommendations": [_rec_json(sweep, r, s, k == 0)
                            for k, (r, s) in enumerate(zip(recs, samples, strict=True))],
    }


def write_report(sweep: Sweep, recs: Sequence[Recommendation], out_dir: str | Path,
                 samples: Sequence[StoredSample | None] | None = None) -> dict[str, Path]:
    """Write the report files; a recommended spec for each format whose target is reachable.
    ``samples`` (:func:`~preprocess.tune.stored.store_sample` per recommendation) are made when not given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if samples is None:
        samples = [store_sample(sweep, r) for r in recs]
    written = {"html": out / "report.html", "json": out / "report.json"}
    written["html"].write_text(render_html(sweep, recs, samples), encoding="utf-8")
    written["json"].write_text(json.dumps(to_json(sweep, recs, samples), indent=1), encoding="utf-8")
    for k, rec in enumerate(recs):
        toml = out / spec_file(rec, k == 0)
        if not rec.ok:
            toml.unlink(missing_ok=True)  # never leave an older recommendation next to a report that has none
            continue
        spec = recommended_spec(sweep, rec)
        toml.write_text(spec_toml(spec, header(sweep, rec, spec)), encoding="utf-8")
        load_spec(toml)  # what was written must read back as a valid spec
        written["spec" if k == 0 else f"spec-{rec.format}"] = toml
    return written
