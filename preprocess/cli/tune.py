"""`preprocess tune`: measure formats x sizes x qualities over a sample, decide the setting with the fewest
bytes that meets a target, write a report; or decide again from a saved report (``--from``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from preprocess.cli.app import app, emit, err, fail, out, progress_for, quiet_libraries
from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, PreprocessError
from preprocess.core.textfiles import parse_json, read_text
from preprocess.core.units import size
from preprocess.pipeline.devices import choices

if TYPE_CHECKING:
    from preprocess.core.progress import Progress
    from preprocess.pipeline.spec import Spec
    from preprocess.tune.grid import Sweep
    from preprocess.tune.recommend import Decision, Recommendation, Setting, Target
    from preprocess.tune.stored import StoredSample
    from preprocess.tune.sweep import SweepOptions

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*(?:/\s*(\d+))?\s*\Z")


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


def _numbers[T: (int, float)](text: str | None, kind: type[T], option: str, example: str) -> list[T]:
    try:
        return [kind(x) for x in (text or "").split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a list of numbers", code=ErrorCode.TUNE_GRID,
                          hint=f"e.g. {option} {example}") from None


def parse_sizes(text: str | None) -> list[int]:
    return _numbers(text, int, "--sizes", "1920,1280,640")


def parse_formats(text: str | None) -> list[str]:
    """``jpeg,avif``: the stored formats to compare (empty: the spec's format)."""
    return [x.strip().lower() for x in (text or "").split(",") if x.strip()]


VIEWS = ("gate", "whole", "crops", "tiles")
REPORT_LIMIT = 512 << 20  # a report.json read by --from (`--from /dev/zero` read until memory ran out)
GATE_SCORE = ("gate score: the worse check on the whole view's scale, what the gate compares; `show --item`, "
              "`ls --json` and the web UI's cards give each view's similarity")


def _default_gauge(spec: Spec | None, sweep: Sweep | None) -> str:
    """The saved report's gauge; else the spec's gate: its whole view and crops together when it checks
    both (``gate``), else its first view."""
    from preprocess.tune.grid import gate_checks

    if sweep is not None:
        return sweep.gauge
    if spec is None:
        return "whole"
    if gate_checks(spec) is not None:
        return "gate"
    return f"tiles-{spec.gate.tiles_combine}" if spec.gate.view == "tiles" else spec.gate.view


def _gauge(view: str | None, tiles_combine: str | None, spec: Spec | None, sweep: Sweep | None = None) -> str:
    """The gauge to judge by: the spec's gate (or the saved report's gauge) unless --view / --tiles-combine
    say otherwise."""
    default = _default_gauge(spec, sweep)
    v = view or ("tiles" if default.startswith("tiles-") else default)
    combine = tiles_combine or (default.removeprefix("tiles-") if default.startswith("tiles-") else
                                spec.gate.tiles_combine if spec else "p10")
    if v not in VIEWS:
        raise ConfigError(f"--view {v}: not a view tune measures", code=ErrorCode.TUNE_VIEW,
                          hint="--view gate (the whole view and the crops together, as the default gate checks "
                               "them) | whole | crops | tiles")
    if combine not in ("min", "p10", "mean"):
        raise ConfigError(f"--tiles-combine {combine}: not a way to combine tiles", code=ErrorCode.TUNE_VIEW,
                          hint="--tiles-combine min|p10|mean")
    return f"tiles-{combine}" if v == "tiles" else v


def _view_threshold(spec: Spec, gauge: str) -> float:
    """The spec's threshold for what ``gauge`` judges (the gate's whole view's for ``gate``)."""
    views = dict(spec.gate.views.items())
    return views.get("crops" if gauge == "crops" else "tiles" if gauge.startswith("tiles-") else "whole",
                     spec.gate.threshold)


def _target(target: float | None, percentile: float | None, preset: str | None, default: float) -> tuple[float, float]:
    """(similarity, percentile): --preset's, else --target / --percentile (default: the gate's threshold at p1)."""
    if preset is not None:
        from preprocess.tune.recommend import PRESETS

        if preset not in PRESETS:
            raise ConfigError(f"--preset {preset!r}: not a preset", code=ErrorCode.TUNE_TARGET,
                              hint=f"one of {', '.join(PRESETS)} (see `preprocess tune --help`)")
        if target is not None or percentile is not None:
            raise ConfigError("--preset names a target and a percentile: give it, or --target/--percentile",
                              code=ErrorCode.CLI_USAGE, hint=f"--preset {preset}, or --target 0.99 --percentile 1")
        return PRESETS[preset].similarity, PRESETS[preset].percentile
    return (default if target is None else target), (1.0 if percentile is None else percentile)


Sample = Annotated[list[str] | None, typer.Argument(help="Sample folders (searched recursively) or image files; "
                                                          "not with --from.", show_default=False)]
FromReport = Annotated[str | None, typer.Option(
    "--from", help="Decide again from a saved report.json (or its folder): a new --target, --preset, --percentile, "
                   "--size or view, in about a second, nothing encoded again.")]
Formats = Annotated[str | None, typer.Option(
    help="Stored formats to compare, e.g. jpeg,avif,webp,jxl. Each takes its default \\[encode] options, the "
         "spec's own format the spec's. Default: the spec's format.")]
Preset = Annotated[str | None, typer.Option(
    help="A named target instead of --target and --percentile: archive (0.995 at p1: features kept for models to "
         "come), train (0.99 at p1: the default gate), index (0.98 at p5: search and deduplication by embedding), "
         "preview (0.95 at p5: people browsing).")]
WhatIf = Annotated[str | None, typer.Option(
    help="More similarities to bracket, e.g. 0.985,0.993, so that --from answers them exactly (the asked target "
         "and the presets' always are).")]
View = Annotated[str | None, typer.Option(
    help="gate | whole | crops | tiles: what to judge by. gate (the default when the spec checks whole and crops): "
         "both together, the crops' threshold moved with the target as the whole view's; else the spec's first "
         "view. tiles measures the tile view.")]
EveryQuality = Annotated[bool, typer.Option(
    help="Measure every quality of the ladder for every image (full curves; slower) instead of the search, "
         "which measures the rungs that decide.")]


@dataclass(frozen=True)
class _Judge:
    """What the decision is judged by (the options ``--from`` takes as well)."""

    target: float | None
    percentile: float | None
    preset: str | None
    view: str | None
    tiles_combine: str | None
    size: int | None
    model: str | None

    def resolve(self, spec: Spec, sweep: Sweep | None = None) -> Target:
        from preprocess.tune.recommend import Target

        gauge = _gauge(self.view, self.tiles_combine, None if sweep is not None else spec, sweep)
        similarity, pct = _target(self.target, self.percentile, self.preset, _view_threshold(spec, gauge))
        return Target(similarity, pct, self.model if sweep is not None else None, gauge, self.size)


@app.command()
def tune(
    sample: Sample = None,
    report: Annotated[str | None, typer.Option(help="Folder for report.html, report.json and the recommended "
                                                    "specs (with --from: optional).")] = None,
    from_report: FromReport = None,
    spec: Annotated[str | None, typer.Option(
        help="Spec to start from; default: camera (the bundled default spec).")] = None,
    formats: Formats = None,
    gate_model: Annotated[str | None, typer.Option(
        help="Judge by this model (name or manifest) instead of the spec's gate models (jointly).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Another model (name or manifest) to compare with the spec's gate models; "
                        "repeatable.")] = None,
    qualities: Annotated[str | None, typer.Option(help="The quality ladder (each encoder's own 1-100 scale): "
                                                       "LO..HI/STEP or a list. Default: the spec's.")] = None,
    sizes: Annotated[str | None, typer.Option(help="Long-side sizes in px to compare, e.g. 1920,1280,640. "
                                                   "Default: the spec's resize.size.")] = None,
    target: Annotated[float | None, typer.Option(
        help="Similarity to reach; default: the spec's threshold of the view judged by (gate: the whole "
             "view's).")] = None,
    percentile: Annotated[float | None, typer.Option(help="... at this percentile of the sample (1: 99% of "
                                                          "images); default 1.")] = None,
    preset: Preset = None,
    what_if: WhatIf = None,
    view: View = None,
    tiles_combine: Annotated[str | None, typer.Option(help="min | p10 | mean (default: the spec's).")] = None,
    at_size: Annotated[int | None, typer.Option("--size", help="Decide at this size only (default: whichever "
                                                 "measured size stores the fewest bytes).")] = None,
    tiles: Annotated[bool, typer.Option(help="Also measure the tile view (one embedding per tile: slower).")] = False,
    compare_tiles: Annotated[bool, typer.Option(help="Measure the tile view with the compared models too.")] = False,
    every_quality: EveryQuality = False,
    decode_repeats: Annotated[int, typer.Option(
        help="Time decoding each format's stored sample this many times (median); 0: do not time.")] = 5,
    engine: Annotated[str, typer.Option(help="auto | dali | pillow (auto: DALI on a GPU, else pillow).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | gpu | cpu.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Decide how to store: measure how far SAMPLE compresses in each format and size, as judged by your
    model, and pick the setting with the fewest stored bytes that meets the target (with the runner-up
    and what it costs, and each preset's pick). Writes report.html (opens offline: every sample image as
    it would be stored, crops where it changed most, decode speed per format), report.json and
    recommended.toml (the decision; recommended-FORMAT.toml per format). Progress goes to stderr: a bar
    on a terminal, plain lines in a log.

    Exit codes: 0 decided; 2 bad options, an empty sample, or a target no measured setting reaches (the
    report is still written: it shows the best reachable).
    """
    judge = _Judge(target, percentile, preset, view, tiles_combine, at_size, gate_model)
    try:
        if from_report is not None:
            _from(from_report, sample, report, judge, as_json=as_json)
            return
        if decode_repeats < 0:
            raise ConfigError(f"--decode-repeats must be >= 0, got {decode_repeats}", code=ErrorCode.TUNE_GRID)
        _measure(sample, report, judge, spec=spec, formats=formats, compare=model or [], qualities=qualities,
                 sizes=sizes, what_if=what_if, tiles=tiles, compare_tiles=compare_tiles, every_quality=every_quality,
                 decode_repeats=decode_repeats, engine=engine, device=device, as_json=as_json)
    except PreprocessError as exc:
        fail(exc, as_json="tune" if as_json else "")


def _band(what_if: str | None) -> list[float]:
    """The similarities the search brackets besides the asked one: the presets' and --what-if's."""
    from preprocess.tune.recommend import PRESETS

    extra = _numbers(what_if, float, "--what-if", "0.985,0.993")
    if any(not 0.0 < x <= 1.0 for x in extra):
        raise ConfigError(f"--what-if {what_if}: similarities are in (0, 1]", code=ErrorCode.TUNE_TARGET)
    return sorted({p.similarity for p in PRESETS.values()} | set(extra))


def _measure(sample: list[str] | None, report: str | None, judge: _Judge, *, spec: str | None,
             formats: str | None, compare: list[str], qualities: str | None, sizes: str | None, what_if: str | None,
             tiles: bool, compare_tiles: bool, every_quality: bool, decode_repeats: int, engine: str, device: str,
             as_json: bool) -> None:
    if not sample or report is None:
        raise ConfigError("tune measures SAMPLE into --report", code=ErrorCode.CLI_USAGE,
                          hint="preprocess tune PHOTOS --report ./tune-report (or --from REPORT to decide again)")
    quiet_libraries()
    from preprocess.pipeline.spec import default_spec_path, load_spec
    from preprocess.tune.recommend import decide
    from preprocess.tune.report import write_report
    from preprocess.tune.stored import store_sample
    from preprocess.tune.sweep import SweepOptions, run_sweep

    engine_choice, device_choice = choices(engine, device)  # parsed: their types from here on
    base = load_spec(spec or default_spec_path())
    asked = judge.resolve(base)
    opts = SweepOptions(sources=sample, spec_path=spec, gate_model=judge.model, compare=compare,
                        sizes=parse_sizes(sizes), qualities=parse_qualities(qualities) if qualities else (),
                        formats=parse_formats(formats), tiles=tiles or asked.gauge.startswith("tiles-"),
                        compare_tiles=compare_tiles, engine=engine_choice, device=device_choice,
                        every_quality=every_quality,
                        target=asked.similarity, band=_band(what_if), gauge=asked.gauge)
    sweep = run_sweep(opts, None if as_json else _progress(base, opts))
    decision = decide(sweep, asked)
    samples = [store_sample(sweep, r, repeats=decode_repeats) for r in decision.recs]
    files = write_report(sweep, decision, report, samples)
    _finish(sweep, decision, samples, files, as_json=as_json)


def _progress(spec: Spec, opts: SweepOptions) -> Progress:
    """tune's progress counts searches, one per image, format variant and size: in images when that is one
    search an image, else in searches, saying how many make an image."""
    from preprocess.tune.grid import codings
    from preprocess.tune.sweep import sweep_grid

    per_image = len(codings(spec, opts.formats)) * len(sweep_grid(spec, opts)[0])
    if per_image == 1:
        return progress_for("tune: measuring", unit="images")
    return progress_for(f"tune: measuring ({per_image} searches an image: format variants x sizes)", unit="searches")


def _from(path: str, sample: list[str] | None, report: str | None, judge: _Judge, *, as_json: bool) -> None:
    """Decide again from a saved report.json: numpy and the decision, nothing measured again."""
    from preprocess.tune.grid import from_json
    from preprocess.tune.recommend import decide

    if sample:
        raise ConfigError("--from decides from a saved report: no SAMPLE", code=ErrorCode.CLI_USAGE,
                          hint="drop the sample folders, or drop --from to measure them")
    file = Path(path) / "report.json" if Path(path).is_dir() else Path(path)
    try:
        doc = parse_json(read_text(file, REPORT_LIMIT))
    except (OSError, ValueError) as exc:  # TooLong and TooDeep too
        raise ConfigError(f"{file}: cannot read a report: {exc}", code=ErrorCode.TUNE_REPORT,
                          hint="pass the report.json (or its folder) that `preprocess tune --report` wrote") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{file}: not a report", code=ErrorCode.TUNE_REPORT, hint="pass a tune report.json")
    if report is not None and Path(report).resolve() == file.resolve().parent:
        raise ConfigError(f"--report {report} is the folder of the report it decides from: its report.html (with "
                          "every picture), report.json and specs would be replaced", code=ErrorCode.CLI_USAGE,
                          hint="give another --report folder, e.g. --report tune-index")
    sweep = from_json(doc, str(file))
    decision = decide(sweep, judge.resolve(sweep.spec, sweep))
    files: dict[str, Path] = {}
    if report is not None:
        from preprocess.tune.report import write_report

        files = write_report(sweep, decision, report)
    elif not as_json:  # a newcomer ran `run --spec DIR/recommended.toml` with the spec of the first decision
        err.print("note: nothing written: add --report DIR to write this decision's recommended.toml",
                  highlight=False, soft_wrap=True)
    _finish(sweep, decision, [None] * len(decision.recs), files, as_json=as_json)


def _finish(sweep: Sweep, d: Decision, samples: list[StoredSample | None], files: dict[str, Path], *,
            as_json: bool) -> None:
    """Show the decision; exit 2 (TARGET_UNREACHABLE) when no setting meets the target (with --json, the
    error is the document; the report says what came closest)."""
    if d.best is not None or not as_json:
        _show(sweep, d, samples, files, as_json=as_json)
    if d.best is None:
        where = f" (report: {files['html']})" if "html" in files else ""
        if sweep.mode == "search" and sweep.band and d.target.similarity > max(sweep.band):  # where it stopped
            where += f"; the search did not bracket it: measure again with --what-if {d.target.similarity:g}"
        raise ConfigError(f"{d.message}{where}", code=ErrorCode.TARGET_UNREACHABLE,
                          hint="lower --target, raise the quality range, or judge by another view/model")


def _show(sweep: Sweep, d: Decision, samples: list[StoredSample | None], files: dict[str, Path], *,
          as_json: bool) -> None:
    """The skipped files and notes on stderr; the decision as JSON or as a table."""
    for skip in sweep.skipped:
        err.print(Text(f"  skipped [{skip.code}] {names.quote(skip.path)}: {names.line(skip.message)}"),
                  highlight=False, soft_wrap=True)
    if as_json:
        from preprocess.tune.report import decision_json

        emit("tune", {"files": {k: str(p) for k, p in files.items()}, **decision_json(sweep, d, samples)})
        return
    for rec in d.recs:
        for note in (rec.message, rec.setting.ladder.note if rec.setting else ""):
            if note:
                err.print(f"note: {note}", highlight=False, soft_wrap=True)
    if dropped := _dropped(sweep, d):
        err.print(f"warning: {escape(dropped)}", highlight=False, soft_wrap=True)  # [gate] is no markup
    when = "from a saved report measured in " if sweep.remade else ""  # the measuring run's seconds, not these
    t = Table(title=f"preprocess tune ({len(sweep.images)} images, {sweep.engine} on {sweep.device}, "
                    f"{when}{sweep.seconds:.0f} s)", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, val in _rows(sweep, d, samples, files):
        t.add_row(k, val)
    out.print(t)


def _dropped(sweep: Sweep, d: Decision) -> str:
    """What the recommendation leaves unchecked of the base spec's gate, as a warning; "" when nothing."""
    from preprocess.tune.recommended import not_checked

    dropped = not_checked(sweep, d.target.gauge, d.recs[0].model)
    if not dropped:
        return ""
    return (f"tune judged by {d.recs[0].model} {d.target.gauge} only; the base spec also checks {dropped}, which "
            "the recommended spec does not: `run` with the base spec may store more bytes than the figures below. "
            "Add them to the recommended spec's [gate] to keep them (then each image may store more).")


def _setting_line(sweep: Sweep, s: Setting, score: str = "similarity") -> str:
    line = (f"{s.label}: {size(s.total_bytes)} ({s.total_bytes / sweep.source_bytes:.1%} of "
            f"{size(sweep.source_bytes)}), {score} {s.at_percentile:.4f}")
    return line + (f", {s.below_target} flagged" if s.below_target else "") + (
        f", {s.inexact} upper bound(s)" if s.inexact else "")


def _rows(sweep: Sweep, d: Decision, samples: list[StoredSample | None],
          files: dict[str, Path]) -> list[tuple[str, str]]:
    t = d.target
    from preprocess.tune.grid import score_name
    from preprocess.tune.recommended import judged

    score = score_name(t.gauge)
    rows = [("judged by", f"{d.recs[0].model}, {judged(sweep.spec, t.gauge, t.similarity)} at p{t.percentile:g}"
                          + (f" ({GATE_SCORE})" if t.gauge == "gate" else ""))]
    if d.best is not None:
        rows.append(("decision", _setting_line(sweep, d.best, score)))
    if d.runner_up is not None and d.extra_cost is not None:
        rows.append(("runner-up", f"{_setting_line(sweep, d.runner_up, score)}: {d.extra_cost:+.1%} bytes"
                                  + _encode_ratio(sweep, d.runner_up.format, d.best.format if d.best else None)))
    for rec, sample in zip(d.recs, samples, strict=True):
        rows += _format_rows(sweep, rec, sample, score)
    rows += [(f"preset {name}", f"{_setting_line(sweep, s, score)}" if s else "not reached")
             for name, s in d.presets.items()]
    rows += [("report", str(files["html"]))] if "html" in files else []
    rows += [(k, str(p)) for k, p in files.items() if k.startswith("spec")]
    return rows


def _format_rows(sweep: Sweep, rec: Recommendation, sample: StoredSample | None,
                 score: str = "similarity") -> list[tuple[str, str]]:
    s = rec.setting
    if s is None:
        return [(rec.format, "target not reached")]
    rows = [(rec.format, f"q{s.ladder.min}..q{s.ladder.max} step {s.ladder.step} at {s.size} px: "
                         f"{size(s.total_bytes)} ({s.total_bytes / rec.source_bytes:.1%})"),
            (f"  worst ({score})", escape(", ".join(f"{names.quote(Path(c.path).name)} q{c.quality} {c.similarity:.4f}"
                                         for c in s.worst_first()[:3])))]
    if (cost := sweep.encode_cost(rec.format)) is not None:
        rows.append(("  encode", f"{cost.cpu_ms_per_mp:.1f} ms/MP of CPU time ({cost.encodes} candidates, "
                                 f"{cost.wall_seconds:.1f} s of this run on {sweep.engine})"
                                 + _encode_ratio(sweep, rec.format, _cheapest(sweep))))
    if sample is not None and sample.speed is not None:
        sp = sample.speed
        rows.append(("  decode", f"{sp.cpu_ms_per_mp:.1f} ms/MP, {sp.images_per_s:.1f} images/s on 1 core "
                                 f"({sp.decoder})"))
    return rows


def _cheapest(sweep: Sweep) -> str | None:
    """The measured format that cost the least CPU time to encode (per megapixel)."""
    costs = [c for c in map(sweep.encode_cost, sweep.formats) if c is not None]
    return min(costs, key=lambda c: c.cpu_ms_per_mp).format if len(costs) > 1 else None


def _encode_ratio(sweep: Sweep, fmt: str, other: str | None) -> str:
    """", encodes 8.9x slower than avif" (by CPU time per megapixel); "" for the same format, a ratio
    under 1.5 or a cost not measured."""
    a, b = sweep.encode_cost(fmt), sweep.encode_cost(other) if other and other != fmt else None
    if a is None or b is None or not (a.cpu_ms_per_mp and b.cpu_ms_per_mp):
        return ""
    ratio = a.cpu_ms_per_mp / b.cpu_ms_per_mp
    if 1 / 1.5 < ratio < 1.5:
        return ""
    return f", encodes {max(ratio, 1 / ratio):.1f}x {'slower' if ratio > 1 else 'faster'} than {other}"
