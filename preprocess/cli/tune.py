"""`preprocess tune`: sweep formats x sizes x qualities over a sample, recommend a setting per format,
write a report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from preprocess.cli.app import app, emit, err, fail, out, quiet_libraries
from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, PreprocessError
from preprocess.core.units import size
from preprocess.pipeline.devices import choices

if TYPE_CHECKING:
    from preprocess.tune import Recommendation, StoredSample, Sweep

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*(?:/\s*(\d+))?\s*$")


def parse_qualities(text: str) -> list[int]:
    """``10..95/5`` (inclusive, step 5 by default) or a list ``30,50,70``."""
    m = _RANGE.match(text)
    try:
        if m:
            lo, hi, step = int(m[1]), int(m[2]), int(m[3] or 5)
            if step < 1 or lo > hi:
                raise ValueError
            values = list(range(lo, hi + 1, step))
            return values if values[-1] == hi else [*values, hi]
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--qualities {text!r}: expected LO..HI/STEP or a list", code=ErrorCode.TUNE_GRID,
                          hint="e.g. --qualities 10..95/5 or --qualities 30,50,70,90") from None


def parse_sizes(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--sizes {text!r}: expected a list of pixel sizes", code=ErrorCode.TUNE_GRID,
                          hint="e.g. --sizes 2560,1920,1280,960,640") from None


class _SweepProgress:
    def __init__(self) -> None:
        self._p = Progress(TextColumn("[bold]sweeping"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("batch x size x quality"), TimeElapsedColumn(), console=err)
        self._task: Any = None

    def start(self, total: int) -> None:
        self._p.start()
        self._task = self._p.add_task("tune", total=total)

    def advance(self, steps: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        self._p.update(self._task, advance=steps)

    def finish(self) -> None:
        self._p.stop()


def parse_formats(text: str | None) -> list[str]:
    """``jpeg,avif``: the stored formats to compare (empty: the spec's format)."""
    return [x.strip().lower() for x in (text or "").split(",") if x.strip()]


@app.command()
def tune(
    sample: Annotated[list[str], typer.Argument(help="Sample folders (searched recursively) or image files.")],
    report: Annotated[str, typer.Option(help="Folder for report.html, report.json and recommended.toml.")],
    spec: Annotated[str | None, typer.Option(help="Spec to start from; default: pipelines/camera.toml.")] = None,
    formats: Annotated[str | None, typer.Option(
        help="Stored formats to compare, e.g. jpeg,avif,webp,jxl (the first is recommended.toml's; each other "
             "gets recommended-FORMAT.toml). Each takes its default \\[encode] options, the spec's own format "
             "the spec's. Default: the spec's format.")] = None,
    gate_model: Annotated[str | None, typer.Option(
        help="Judge by this model (name or manifest) instead of the spec's gate.model.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Another model (name or manifest) to compare with the spec's gate model; repeatable.")] = None,
    qualities: Annotated[str, typer.Option(help="Qualities (each encoder's own 1-100 scale): LO..HI/STEP or a "
                                                "list; the recommended ladder uses swept ones only.")] = "10..95/5",
    sizes: Annotated[str, typer.Option(help="Long-side sizes in px (the spec's resize.size is replaced).")] = (
        "2560,1920,1280,960,640"),
    target: Annotated[float | None, typer.Option(help="Similarity to reach; default: gate.threshold.")] = None,
    percentile: Annotated[float, typer.Option(help="... at this percentile of the sample (1: 99% of images).")] = 1.0,
    view: Annotated[str | None, typer.Option(help="whole | tiles: the gate view (default: the spec's).")] = None,
    tiles_combine: Annotated[str | None, typer.Option(help="min | p10 | mean (default: the spec's).")] = None,
    at_size: Annotated[int | None, typer.Option("--size", help="Recommend for this size (default: resize.size "
                                                 "if swept, else the largest meeting the target).")] = None,
    tiles: Annotated[bool, typer.Option(help="Measure the tile view (one embedding per tile: slower).")] = True,
    compare_tiles: Annotated[bool, typer.Option(help="Measure the tile view with the compared models too.")] = False,
    decode_repeats: Annotated[int, typer.Option(
        help="Time decoding each format's stored sample this many times (median); 0: do not time.")] = 5,
    engine: Annotated[str, typer.Option(help="auto | dali | pillow (auto: DALI on a GPU, else pillow).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | gpu | cpu.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the recommendations as JSON.")] = False,
) -> None:
    """Measure how far SAMPLE compresses at every format x size x quality, as judged by your model, and
    recommend a setting per format: writes report.html (opens offline: every sample image as it would be
    stored, crops where it changed most, decode speed per format), report.json and recommended.toml.

    Exit codes: 0 recommendation written; 2 bad options, an empty sample, or a target no swept
    setting of the first format reaches (the report is still written: it shows the best reachable).
    """
    from preprocess.tune import SweepOptions, Target, recommend_formats, run_sweep, store_sample, write_report

    quiet_libraries()
    try:
        if decode_repeats < 0:
            raise ConfigError(f"--decode-repeats must be >= 0, got {decode_repeats}", code=ErrorCode.TUNE_GRID)
        engine, device = choices(engine, device)  # parsed: their types from here on
        opts = SweepOptions(sources=sample, spec_path=spec, gate_model=gate_model, compare=model or (), engine=engine,
                            device=device, sizes=parse_sizes(sizes), qualities=parse_qualities(qualities),
                            formats=parse_formats(formats), tiles=tiles, compare_tiles=compare_tiles)
        sweep = run_sweep(opts, None if as_json else _SweepProgress())
        gauge = _gauge(sweep, view, tiles_combine)
        recs = recommend_formats(sweep, Target(sweep.spec.gate.threshold if target is None else target, percentile,
                                               gauge=gauge, size=at_size))
        samples = [store_sample(sweep, r, repeats=decode_repeats) for r in recs]
        files = write_report(sweep, recs, report, samples)
        if not recs[0].ok:
            raise ConfigError(f"{recs[0].message} (report: {files['html']})", code=ErrorCode.TARGET_UNREACHABLE,
                              hint="lower --target, raise the quality range, or judge by another view/model")
    except PreprocessError as exc:
        fail(exc, as_json="tune" if as_json else "")
        return
    _show(sweep, recs, samples, files, as_json=as_json)


def _gauge(sweep: Sweep, view: str | None, tiles_combine: str | None) -> str:
    """The gauge to recommend by: the spec's gate view unless --view / --tiles-combine say otherwise."""
    gate = sweep.spec.gate
    v, combine = view or gate.view, tiles_combine or gate.tiles_combine
    if v not in ("whole", "tiles") or combine not in ("min", "p10", "mean"):
        raise ConfigError(f"--view {v} --tiles-combine {combine}", code=ErrorCode.TUNE_VIEW,
                          hint="--view whole|tiles, --tiles-combine min|p10|mean")
    return "whole" if v == "whole" else f"tiles-{combine}"


def _show(sweep: Sweep, recs: list[Recommendation], samples: list[StoredSample | None], files: dict[str, Path], *,
          as_json: bool) -> None:
    """The skipped files on stderr; the recommendations as JSON or as a table."""
    for skip in sweep.skipped:
        err.print(Text(f"  skipped [{skip.code}] {names.quote(skip.path)}: {names.line(skip.message)}"),
                  highlight=False, soft_wrap=True)
    if as_json:
        emit("tune", {"files": {k: str(p) for k, p in files.items()},
                      "recommendations": json.loads(files["json"].read_text())["recommendations"]})
        return
    rec0 = recs[0]
    t = Table(title=f"preprocess tune ({len(sweep.images)} images, {sweep.engine} on {sweep.device})",
              show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows = [("judged by", f"{rec0.model}, {rec0.gauge} >= {rec0.target:g} at p{rec0.percentile:g}")]
    for rec, sample in zip(recs, samples, strict=True):
        rows += _format_rows(rec, sample)
    rows += [(g, "  ".join(f"{sz}px:{'q' + str(q) if q else 'never'}" for sz, q in row.items()))
             for g, row in rec0.by_gauge.items()]
    rows += [("report", str(files["html"]))]
    rows += [(k, str(p)) for k, p in files.items() if k.startswith("spec")]
    for k, val in rows:
        t.add_row(k, val)
    for rec in recs:
        for note in (rec.message, rec.adaptive.ladder.note if rec.adaptive else ""):
            if note:
                err.print(f"note: {note}")
    out.print(t)


def _format_rows(rec: Recommendation, sample: StoredSample | None) -> list[tuple[str, str]]:
    if rec.single is None or rec.adaptive is None:
        return [(rec.format, "target not reached")]
    s, a, src = rec.single, rec.adaptive, rec.source_bytes
    rows = [(rec.format, f"{s.size} px, single q{s.quality}: {size(s.total_bytes)} ({s.total_bytes / src:.1%} of "
                         f"{size(src)}), similarity {s.at_percentile:.4f} at p{rec.percentile:g}"),
            ("  adaptive", f"q{a.ladder.min}..q{a.max_quality} step {a.ladder.step}: {size(a.total_bytes)} expected "
                           f"({a.total_bytes / src:.1%}), {a.saving:.1%} less"),
            ("  worst", ", ".join(f"{Path(c.path).name} q{c.quality} {c.similarity:.4f}"
                                  for c in a.worst_first()[:3]))]
    if sample is not None and sample.speed is not None:
        sp = sample.speed
        rows.append(("  decode", f"{sp.cpu_ms_per_mp:.1f} ms/MP, {sp.images_per_s:.1f} images/s on 1 core "
                                 f"({sp.decoder})"))
    return rows
