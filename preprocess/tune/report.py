"""The tune report: ``report.html`` (one self-contained file: figures inlined as SVG, pictures as
data: URIs, no scripts, no external resources), ``report.json`` (every number behind it: the
measurement, which ``tune --from`` reads back, and the decision) and the recommended specs
(``recommended.toml`` for the decision, ``recommended-FORMAT.toml`` for each format's best), which
``preprocess run --spec`` takes as they are."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from preprocess.core import names
from preprocess.core.jsonable import Json, JsonObject
from preprocess.pipeline.spec import load_spec
from preprocess.tune import plots
from preprocess.tune.grid import Sweep, score_name, to_json
from preprocess.tune.recommend import PRESETS, Decision, Recommendation, Setting
from preprocess.tune.recommended import (
    DECISION_FILE,
    SPEC_FILES,
    header,
    judged,
    not_checked,
    recommended_spec,
    spec_file,
    spec_toml,
)
from preprocess.tune.stored import DIFF_GAIN, THUMB_SIDE, StoredImage, StoredSample

Samples = Sequence[StoredSample | None]


def mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], ident: str = "") -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(names.text(str(c)))}</td>" for c in r) + "</tr>" for r in rows)
    idattr = f' id="{ident}"' if ident else ""
    return f"<table{idattr}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _s(x: float) -> str:
    return f"{x:.4f}"


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
.compare .flick{display:inline-block;margin-left:1em;cursor:help;text-decoration:underline dotted}
.gallery .frame{position:relative;line-height:0;width:fit-content;margin:0 auto}
.gallery svg.worst-crop{position:absolute;inset:0;width:100%;height:100%}.gallery svg.worst-crop rect{fill:none;
stroke:#0072B2;stroke-width:2;stroke-dasharray:6 3;vector-effect:non-scaling-stroke}"""


def _cards(cards: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>" for k, v in cards)


def _decision(sweep: Sweep, d: Decision) -> str:
    t, b, r = d.target, d.best, d.runner_up
    if b is None:
        return f'<p class="warn no-recommendation" id="no-recommendation">{html.escape(d.message)}</p>'
    src = sweep.source_bytes
    cards = [("decision", b.label), ("stored", f"{mb(b.total_bytes)} = {b.total_bytes / src:.1%} of sources"),
             (f"{score_name(t.gauge)} at p{t.percentile:g}", _s(b.at_percentile)), ("flagged", str(b.below_target))]
    if r is not None and d.extra_cost is not None:
        cards.append(("runner-up", f"{r.label}: {mb(r.total_bytes)}, {d.extra_cost:+.1%}"))
    notes = "" if not b.inexact else (
        f'<p class="warn">{b.inexact} image(s) rest on a rung whose next lower rung was not measured at this target '
        f"(it was not in the search's band {', '.join(f'{x:g}' for x in sweep.band)}): the bytes are an upper "
        f"bound. Measure again with --target {t.similarity:g} for the exact answer.</p>")
    if dropped := not_checked(sweep, t.gauge, d.recs[0].model):
        notes += (f'<p class="warn">Not judged by tune, so not checked by <code>{DECISION_FILE}</code>: the base '
                  f"spec's {html.escape(dropped)}. <code>preprocess run</code> with the base spec may store more "
                  "bytes than these figures; add them to the recommended spec's <code>[gate]</code> to keep them.</p>")
    return (f'<div class="big decision" id="decision">{_cards(cards)}</div>{notes}'
            f"<p>The fewest stored bytes among every format and size measured whose images reach similarity "
            f"&ge; {t.similarity:g} at p{t.percentile:g} (judged by {html.escape(d.recs[0].model)}: "
            f"{html.escape(judged(sweep.spec, t.gauge, t.similarity))}); each image at the lowest rung of its "
            f"format's ladder that reaches the target on its own, in whichever coding stores it smallest. "
            f"<code>{DECISION_FILE}</code> is that spec.</p>"
            + _presets(sweep, d))


def _presets(sweep: Sweep, d: Decision) -> str:
    rows = []
    for name, setting in d.presets.items():
        p = PRESETS[name]
        got = ([setting.label, mb(setting.total_bytes), f"{setting.total_bytes / sweep.source_bytes:.1%}",
                setting.inexact] if setting is not None else ["not reached", "-", "-", "-"])
        rows.append([name, p.use, f"{p.similarity:g} at p{p.percentile:g}", *got])
    return ("<h3>Presets</h3><p>Named targets (<code>--preset NAME</code>; <code>tune --from report.json --preset "
            "NAME --report DIR</code> writes its spec), each with its fewest-bytes setting.</p>"
            + _table(["preset", "for", "target", "setting", "stored", "of sources", "inexact"], rows, "presets"))


def _views(item: StoredImage) -> str:
    """``whole 0.9931 · crops 0.9712`` (the worst model's, per view) of the spec's gate checks."""
    views: dict[str, float] = {}
    for per_view in item.checks.values():
        for view, s in per_view.items():
            views[view] = min(views.get(view, s), s)
    return " · ".join(f"{view} {s:.4f}" for view, s in views.items())


def _worst_crop(item: StoredImage) -> str:
    """The worst crop outlined over the thumbnail (an SVG the size of the stored image, scaled)."""
    if item.worst_crop is None:
        return ""
    x0, y0, x1, y1 = item.worst_crop
    return (f'<svg class="worst-crop" viewBox="0 0 {item.width} {item.height}" preserveAspectRatio="none" '
            f'aria-hidden="true"><rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}"/></svg>')


def _thumb(sweep: Sweep, rank: int, item: StoredImage, score: str = "similarity") -> str:
    c = item.choice
    name = names.quote(Path(c.path).name)  # printable, and UTF-8 whatever the file's name
    views = _views(item)
    label = (f"{rank}. {name}: {sweep.codings[c.coding].label} q{c.quality}, {len(item.data):,} B, "
             f"{item.width}x{item.height}, {score} {c.similarity:.4f}" + ("" if c.passed else " (flagged)")
             + (f"; the spec's gate: {views}" if views else ""))
    cls = "" if c.passed else ' class="flagged"'
    return (f'<figure{cls} data-rank="{rank}" data-similarity="{c.similarity:.6f}" data-name="{html.escape(name)}">'
            f'<div class="frame"><img class="thumb" alt="{html.escape(name)} as stored" title="{html.escape(label)}" '
            f'src="{_data_uri(item.thumbnail, "image/jpeg")}">{_worst_crop(item)}</div>'
            f'<figcaption>{html.escape(label)}</figcaption></figure>')


def _crops(sweep: Sweep, sample: StoredSample, score: str = "similarity") -> str:
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
        name = names.quote(Path(c.path).name)
        caption = (f"{rank}. {name}, {sweep.codings[c.coding].label} q{c.quality}, {score} "
                   f"{c.similarity:.4f}: the {r.width} px square at ({r.x}, {r.y}) where it changed most (mean "
                   f"|difference| {r.mean_abs_diff:.1f} of 255), shown x{zoom}")
        out.append(f'<figure class="crop-set" data-name="{html.escape(name)}">'
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
    missing = "".join(f'<p class="warn">{html.escape(f"{names.quote(m.path)}: [{m.code}] {names.text(m.message)}")}</p>'
                      for m in sample.missing)
    score = score_name(rec.gauge)
    thumbs = "".join(_thumb(sweep, k, item, score) for k, item in enumerate(sample.images, 1))
    return (f"<h3>Every sample image as stored, worst first</h3>{missing}"
            f"<p>Each image at its choice (coding and quality), made again by the {sweep.engine} engine "
            f"as stored ({mb(sample.total_bytes)} in all), then decoded; thumbnails downscaled to "
            f"{THUMB_SIDE} px (their own JPEG). Hover for details; a dashed blue box outlines an image's worst "
            f"crop (its lowest-scoring checked crop), and an orange frame marks an image flagged below the "
            f"target.</p><div class=\"gallery\" id=\"gallery-{rec.format}\">{thumbs}</div>"
            f"<h3>Where the worst images changed most</h3>"
            f"<p>Crops at 1:1 pixels (enlarged without smoothing) of the square with the largest mean absolute "
            f"difference between the uncompressed resized source and the stored image.</p>"
            f"{_crops(sweep, sample, score)}")


SETTING_HEAD = ["size", "ladder", "stored", "of sources", "bits/pixel", "at percentile", "flagged", "inexact",
                "single quality"]


def _setting_row(sweep: Sweep, s: Setting) -> list[object]:
    px = int(sweep.pixels()[sweep.sizes.index(s.size)].sum())
    single = f"q{s.single.quality}: {mb(s.single.total_bytes)}" if s.single is not None else "-"
    return [s.size, f"q{s.ladder.min}..q{s.ladder.max}/{s.ladder.step}", mb(s.total_bytes),
            f"{s.total_bytes / sweep.source_bytes:.2%}", f"{8 * s.total_bytes / px:.3f}" if px else "-",
            _s(s.at_percentile), s.below_target, s.inexact, single]


def _details(sweep: Sweep, rec: Recommendation) -> str:
    f = rec.format
    gauges = [[g, _s(at), _s(med)] for g, (at, med) in rec.gauges.items()]
    nb = rec.neighbours
    parts = ["<h3>Every size</h3>", _table(SETTING_HEAD, [_setting_row(sweep, s) for s in rec.per_size.values()],
                                           f"per-size-{f}"),
             "<h3>Every image: what was measured</h3><p>Each line is one image through the qualities measured "
             "(the search measures only the rungs that decide; --every-quality measures all); hover a point.</p>",
             plots.per_image(sweep, rec, f"scatter-{f}"),
             "<h3>Views and models at the chosen setting</h3><p>What every measured model and view reads at "
             "the images' choices: models disagree about what is safe, and the tile view (each model-sized tile "
             "against the uncompressed resized image) is far stricter than the whole view.</p>",
             _table(["model and view", f"p{rec.percentile:g}", "median"], gauges, f"gauges-{f}")]
    if nb is not None:
        parts.append(f"<p>Neighbour agreement at the choices (k = {nb[2]}): top-1 {nb[0]:.2f}, top-{nb[2]} "
                     f"{nb[1]:.2f} (does each image keep its nearest neighbours among the sample?).</p>")
    return f"<details><summary>{f}: the measurements</summary>{''.join(parts)}</details>"


def _section(sweep: Sweep, rec: Recommendation, sample: StoredSample | None) -> str:
    s = rec.setting
    if s is None:
        body = f'<p class="warn no-recommendation" id="no-recommendation-{rec.format}">{html.escape(rec.message)}</p>'
    else:
        cards = [("size", f"{s.size} px"), ("ladder", f"q{s.ladder.min}..q{s.ladder.max}/{s.ladder.step}"),
                 ("stored (expected)", f"{mb(s.total_bytes)} = {s.total_bytes / rec.source_bytes:.1%}"),
                 (f"{score_name(rec.gauge)} at p{rec.percentile:g}", _s(s.at_percentile))]
        if (cost := sweep.encode_cost(rec.format)) is not None:
            cards.append(("encode (CPU time)", f"{cost.cpu_ms_per_mp:.1f} ms/MP"))
        if sample is not None and sample.speed is not None:
            cards.append(("decode (1 core)", f"{sample.speed.cpu_ms_per_mp:.1f} ms/MP"))
        notes = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in (rec.message, s.ladder.note) if n)
        body = (f'<div class="big" id="decision-{rec.format}">{_cards(cards)}</div>{notes}'
                f"<p><code>{spec_file(rec)}</code> is this format's spec.</p>" + _pictures(sweep, rec, sample))
    return (f'<section class="format" id="rec-{rec.format}"><h2>{rec.format}</h2>{body}'
            f"{_details(sweep, rec)}</section>")


def _summary(sweep: Sweep) -> str:
    probes = int(sweep.measured().sum())
    per = probes / max(1, len(sweep.images) * len(sweep.sizes) * len(sweep.codings))
    how = (f"the search (the gate's own) bracketed each image's crossing of {', '.join(f'{b:g}' for b in sweep.band)}"
           if sweep.mode == "search" else "every quality measured for every image")
    return (f"<p>{len(sweep.images)} sample images ({mb(sweep.source_bytes)}), {len(sweep.skipped)} skipped; "
            f"sizes {sweep.sizes}; qualities q{min(sweep.qualities)}..q{max(sweep.qualities)} "
            f"({len(sweep.qualities)} rungs); {how}: {per:.1f} of {len(sweep.qualities)} rungs measured per image "
            f"and coding; codings {', '.join(c.label for c in sweep.codings)}; models "
            f"{', '.join(m.name for m in sweep.models)}; engine {sweep.engine} on {sweep.device}; measured in "
            f"{sweep.seconds:.1f} s.</p>")


FORMATS_HEAD = ["format", "codings", "size", "ladder", "stored (expected)", "re-made", "at percentile", "flagged",
                "inexact", "encode ms/MP", "decode ms/MP", "images/s", "decoder", "spec"]


def _format_row(sweep: Sweep, rec: Recommendation, sample: StoredSample | None) -> list[object]:
    codings = ", ".join(sweep.codings[c].label.removeprefix(f"{rec.format} ") for c in rec.codings)
    speed = sample.speed if sample is not None else None
    decode: list[object] = ([f"{speed.cpu_ms_per_mp:.1f}", f"{speed.images_per_s:.0f}", speed.decoder]
                            if speed is not None else ["-", "-", "-"])
    cost = sweep.encode_cost(rec.format)
    decode.insert(0, f"{cost.cpu_ms_per_mp:.1f}" if cost is not None else "-")
    s = rec.setting
    if s is None:
        return [rec.format, codings, "never", *["-"] * 6, *decode, "-"]
    return [rec.format, codings, s.size, f"q{s.ladder.min}..q{s.ladder.max}/{s.ladder.step}",
            f"{mb(s.total_bytes)} ({s.total_bytes / rec.source_bytes:.2%})",
            mb(sample.total_bytes) if sample is not None else "-", _s(s.at_percentile), s.below_target, s.inexact,
            *decode, spec_file(rec)]


def _formats(sweep: Sweep, d: Decision, samples: Samples) -> str:
    rows = [_format_row(sweep, rec, sample) for rec, sample in zip(d.recs, samples, strict=True)]
    return ("<p>Per stored format, its best size. Every byte count is of the bytes <b>as stored</b>: after "
            "<code>Engine.finish</code>, which rewrites progressive JPEG with mozjpeg's lossless scan optimization "
            "(the encoder's own bytes are in report.json as <code>encoded_bytes</code>). Encode: the CPU time "
            f"(every thread) this run spent encoding and finishing the format's candidates on {sweep.engine}, per "
            "megapixel stored: what the format costs a job on this machine. Decode speed: each "
            "format's stored sample decoded as the dataset reader does, one image after another on one thread, "
            "median of repeated passes, CPU time. Quality scales differ between encoders: compare bytes and "
            "similarity, not quality numbers.</p>"
            + f'<div class="wide">{_table(FORMATS_HEAD, rows, "formats")}</div>'
            + plots.formats(sweep, d, "formats-chart"))


def render_html(sweep: Sweep, d: Decision, samples: Samples) -> str:
    title = f"preprocess tune: {sweep.spec.pipeline.name}"
    parts = [f"<h1>{html.escape(title)}</h1>", _summary(sweep), "<h2>Decision</h2>", _decision(sweep, d),
             "<h2>Formats</h2>", _formats(sweep, d, samples)]
    if not any(s is not None for s in samples):
        parts.append("<p>No pictures or decode speed here: a report made again from a saved one "
                     "(<code>tune --from</code>) shows the numbers only; the measuring run's report has them.</p>")
    parts += [_section(sweep, rec, sample) for rec, sample in zip(d.recs, samples, strict=True)]
    skipped = _table(["file", "code", "reason"], [[names.quote(s.path), s.code, s.message] for s in sweep.skipped],
                     "skipped")
    parts += ["<h2>Skipped files</h2>", skipped if sweep.skipped else "<p>none</p>"]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{_CSS}</style></head><body>{"".join(parts)}</body></html>\n')


def _setting_json(sweep: Sweep, s: Setting | None) -> Json:
    if s is None:
        return None
    out: JsonObject = json.loads(json.dumps(asdict(s)))
    out["choices"] = [{**asdict(c), "coding": sweep.codings[c.coding].label} for c in s.choices]
    return out


def _rec_json(sweep: Sweep, rec: Recommendation, sample: StoredSample | None) -> JsonObject:
    stored: Json = None
    if sample is not None:
        sp = sample.speed
        stored = {"total_bytes": sample.total_bytes, "images": len(sample.images),
                  "missing": [asdict(m) for m in sample.missing],
                  "decode": None if sp is None else {
                      "decoder": sp.decoder, "images": sp.images, "megapixels": round(sp.megapixels, 4),
                      "repeats": sp.repeats, "cpu_seconds": round(sp.cpu_seconds, 5),
                      "wall_seconds": round(sp.wall_seconds, 5), "cpu_ms_per_mp": round(sp.cpu_ms_per_mp, 3),
                      "wall_ms_per_mp": round(sp.wall_ms_per_mp, 3), "images_per_s": round(sp.images_per_s, 2)}}
    nb, cost = rec.neighbours, sweep.encode_cost(rec.format)
    encode = None if cost is None else {
        "candidates": cost.encodes, "megapixels": round(cost.megapixels, 4), "cpu_seconds": round(cost.cpu_seconds, 4),
        "wall_seconds": round(cost.wall_seconds, 4), "cpu_ms_per_mp": round(cost.cpu_ms_per_mp, 3)}
    return {"format": rec.format, "encode": encode, "codings": [sweep.codings[c].label for c in rec.codings],
            "model": rec.model,
            "gauge": rec.gauge, "target": rec.target, "percentile": rec.percentile, "ok": rec.ok,
            "message": rec.message, "size": rec.size, "source_bytes": rec.source_bytes,
            "setting": _setting_json(sweep, rec.setting),
            "per_size": {str(k): _setting_json(sweep, v) for k, v in rec.per_size.items()},
            "gauges": {k: [round(a, 6), round(b, 6)] for k, (a, b) in rec.gauges.items()},
            "neighbours": None if nb is None else {"top1": round(nb[0], 4), f"top{nb[2]}": round(nb[1], 4), "k": nb[2]},
            "stored": stored, "spec": spec_file(rec) if rec.ok else None}


def _brief(sweep: Sweep, s: Setting | None) -> Json:
    return None if s is None else {"format": s.format, "size": s.size, "total_bytes": s.total_bytes,
                                   "share": round(s.total_bytes / sweep.source_bytes, 6),
                                   "at_percentile": round(s.at_percentile, 6), "flagged": s.below_target,
                                   "inexact": s.inexact}


def decision_json(sweep: Sweep, d: Decision, samples: Samples) -> JsonObject:
    t = d.target
    return {"target": {"similarity": t.similarity, "percentile": t.percentile, "model": d.recs[0].model,
                       "gauge": t.gauge, "size": t.size},
            "decision": _brief(sweep, d.best), "runner_up": _brief(sweep, d.runner_up),
            "extra_cost": None if d.extra_cost is None else round(d.extra_cost, 6), "message": d.message,
            "presets": {k: {"similarity": PRESETS[k].similarity, "percentile": PRESETS[k].percentile,
                            "setting": _brief(sweep, v)} for k, v in d.presets.items()},
            "recommendations": [_rec_json(sweep, r, s) for r, s in zip(d.recs, samples, strict=True)],
            "recommended_spec": DECISION_FILE if d.best is not None else None,
            "not_checked": not_checked(sweep, t.gauge, d.recs[0].model)}


def write_report(sweep: Sweep, d: Decision, out_dir: str | Path, samples: Samples | None = None,
                 *, html_too: bool = True) -> dict[str, Path]:
    """Write the report files and a recommended spec for each format that reaches the target
    (``recommended.toml``: the decision's). Without ``samples``, no pictures and no decode speed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = list(samples) if samples is not None else [None] * len(d.recs)
    written = {"json": out / "report.json"}
    if html_too:
        written["html"] = out / "report.html"
        written["html"].write_text(render_html(sweep, d, samples), encoding="utf-8")
    doc = {**to_json(sweep), **decision_json(sweep, d, samples)}
    written["json"].write_text(json.dumps(doc, indent=1), encoding="utf-8")
    for rec in d.recs:
        toml = out / spec_file(rec)
        if not rec.ok:
            toml.unlink(missing_ok=True)  # never leave an older recommendation next to a report that has none
            continue
        spec = recommended_spec(sweep, rec)
        toml.write_text(spec_toml(spec, header(sweep, rec, spec)), encoding="utf-8")
        load_spec(toml)  # what was written must read back as a valid spec
        written[f"spec-{rec.format}"] = toml
    decided = out / DECISION_FILE
    if d.best is None:
        decided.unlink(missing_ok=True)
    else:
        decided.write_text(written[f"spec-{d.best.format}"].read_text(encoding="utf-8"), encoding="utf-8")
        written["spec"] = decided
    for older in (out / name for name in SPEC_FILES):  # a format an earlier report into this folder recommended
        if older not in written.values():
            older.unlink(missing_ok=True)
    return written
