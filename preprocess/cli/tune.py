"""`preprocess tune`: sweep sizes x qualities over a sample, recommend a setting, write a report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from preprocess.cli.app import app, err, fail, out, quiet_libraries, size
from preprocess.errors import ConfigError, PreprocessError

if TYPE_CHECKING:
    from preprocess.tune import Recommendation, Sweep

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
        raise ConfigError(f"--qualities {text!r}: expected LO..HI/STEP or a list", code="TUNE_GRID",
                          hint="e.g. --qualities 10..95/5 or --qualities 30,50,70,90") from None


def parse_sizes(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--sizes {text!r}: expected a list of pixel sizes", code="TUNE_GRID",
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


@app.command()
def tune(
    sample: Annotated[list[str], typer.Argument(help="Sample folders (searched recursively) or image files.")],
    report: Annotated[str, typer.Option(help="Folder for report.html, report.json and recommended.toml.")],
    spec: Annotated[str | None, typer.Option(help="Spec to start from; default: pipelines/camera.toml.")] = None,
    gate_model: Annotated[str | None, typer.Option(
        help="Judge by this model (name or manifest) instead of the spec's gate.model.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Another model (name or manifest) to compare with the spec's gate model; repeatable.")] = None,
    qualities: Annotated[str, typer.Option(help="JPEG qualities: LO..HI/STEP or a list.")] = "10..95/5",
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
    engine: Annotated[str, typer.Option(help="auto | dali | pillow (auto: DALI on a GPU, else pillow).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | gpu | cpu.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the recommendation as JSON.")] = False,
) -> None:
    """Measure how far SAMPLE compresses at every size x quality, as judged by your model, and
    recommend a setting: writes report.html (opens offline), report.json and recommended.toml.

    Exit codes: 0 recommendation written; 2 bad options, empty sample, or a target no swept setting
    reaches (the report is still written: it shows the best reachable).
    """
    from preprocess.tune import SweepOptions, recommend, run_sweep, write_report

    quiet_libraries()
    try:
        opts = SweepOptions(sources=sample, spec_path=spec, gate_model=gate_model, compare=model or (),
                            sizes=parse_sizes(sizes), qualities=parse_qualities(qualities), tiles=tiles,
                            compare_tiles=compare_tiles, engine=engine, device=device)
        sweep = run_sweep(opts, None if as_json else _SweepProgress())
        gate = sweep.spec.gate
        v, combine = view or gate.view, tiles_combine or gate.tiles_combine
        if v not in ("whole", "tiles") or combine not in ("min", "p10", "mean"):
            raise ConfigError(f"--view {v} --tiles-combine {combine}", code="TUNE_VIEW",
                              hint="--view whole|tiles, --tiles-combine min|p10|mean")
        rec = recommend(sweep, target=gate.threshold if target is None else target, percentile=percentile,
                        gauge="whole" if v == "whole" else f"tiles-{combine}", size=at_size)
        files = write_report(sweep, rec, report)
        if not rec.ok:
            raise ConfigError(f"{rec.message} (report: {files['html']})", code="TARGET_UNREACHABLE",
                              hint="lower --target, raise the quality range, or judge by another view/model")
    except PreprocessError as exc:
        fail(exc)
        return
    for skip in sweep.skipped:
        err.print(f"  skipped [{skip.code}] {skip.path}: {skip.message}", highlight=False, soft_wrap=True)
    if as_json:
        out.print_json(json.dumps({"files": {k: str(p) for k, p in files.items()},
                                   "recommendation": json.loads(files["json"].read_text())["recommendation"]}))
        return
    _print_recommendation(sweep, rec, files)


def _print_recommendation(sweep: Sweep, rec: Recommendation, files: dict[str, Path]) -> None:
    assert rec.single is not None and rec.adaptive is not None
    t = Table(title=f"preprocess tune ({len(sweep.images)} images, {sweep.engine} on {sweep.device})",
              show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    s, a = rec.single, rec.adaptive
    rows = [("judged by", f"{rec.model}, {rec.gauge} >= {rec.target:g} at p{rec.percentile:g}"),
            ("size", f"{s.size} px"),
            ("single quality", f"q{s.quality}: {size(s.total_bytes)} ({s.total_bytes / rec.source_bytes:.1%} of "
                               f"{size(rec.source_bytes)}), similarity {s.at_percentile:.4f} at p{rec.percentile:g}"),
            ("adaptive", f"q{min(a.qualities)}..q{a.max_quality}: {size(a.total_bytes)} expected, "
                         f"{a.saving:.1%} less"),
            ("worst", ", ".join(f"{Path(w.path).name} {w.similarity:.4f}" for w in rec.worst[:3])),
            *[(g, "  ".join(f"{sz}px:{'q' + str(q) if q else 'never'}" for sz, q in row.items()))
              for g, row in rec.by_gauge.items()],
            ("report", str(files["html"])), ("spec", str(files["spec"]))]
    for k, val in rows:
        t.add_row(k, val)
    if rec.message:
        err.print(f"note: {rec.message}")
    out.print(t)
