"""The ``preprocess`` command line."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from preprocess import errors
from preprocess.errors import PreprocessError

app = typer.Typer(help="GPU image preprocessing: resize + recompress camera images as small as a neural "
                       "feature check allows, into versioned zarr (icechunk) datasets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Feature extractor models: list the bundled ones, build their ONNX files.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)


def _fail(exc: PreprocessError) -> None:
    err.print(f"[bold red]error[{exc.code}][/]: {exc.one_line()}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"  hint: {exc.hint}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code or 1)


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", module="torch")
    warnings.filterwarnings("ignore", module="zarr")
    logging.getLogger("torch").setLevel(logging.ERROR)


class _RichProgress:
    def __init__(self, console: Console) -> None:
        self._p = Progress(TextColumn("[bold]processing"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]:>7.1f} img/s"), TextColumn("{task.fields[ratio]}"),
                           TimeElapsedColumn(), console=console, transient=False)
        self._task: Any = None
        self._bytes_in = 0
        self._bytes_out = 0

    def start(self, total: int) -> None:
        self._p.start()
        self._task = self._p.add_task("run", total=total, rate=0.0, ratio="")

    def advance(self, images: int, bytes_in: int, bytes_out: int) -> None:
        self._bytes_in += bytes_in
        self._bytes_out += bytes_out
        task = self._p.tasks[0]
        self._p.update(self._task, advance=images)
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        ratio = f"{self._bytes_in / self._bytes_out:.1f}x smaller" if self._bytes_out else ""
        self._p.update(self._task, rate=rate, ratio=ratio)

    def finish(self) -> None:
        self._p.stop()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{n} B"


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


@app.command()
def run(
    sources: Annotated[list[str], typer.Argument(help="Folders (searched recursively) or image files.")],
    store: Annotated[str, typer.Option("--store", "-s", help="The dataset: a local path (created if missing).")],
    spec: Annotated[str | None, typer.Option(help="Pipeline spec (TOML); default: pipelines/camera.toml.")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")] = "",
    branch: Annotated[str, typer.Option(help="Branch to commit to.")] = "main",
    engine: Annotated[str, typer.Option(help="auto | dali | pillow (auto: DALI on a GPU, else pillow).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | gpu | cpu.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (no progress bar).")] = False,
) -> None:
    """Resize + recompress SOURCES into the versioned dataset at --store, as ONE commit.

    Exit codes: 0 all stored; 3 committed but some images failed (recorded in the dataset);
    2 bad spec/options/paths; 4 commit conflict (rerun); 5 storage error; 70 internal error.
    """
    from preprocess.job import JobOptions, run_job

    _quiet_libraries()
    opts = JobOptions(sources=sources, store=store, spec_path=spec, branch=branch, message=message,
                      engine=engine, device=device)
    progress = None if as_json else _RichProgress(err)
    try:
        summary = run_job(opts, progress)
    except PreprocessError as exc:
        _fail(exc)
        return
    if as_json:
        out.print_json(json.dumps(summary.to_dict()))
    else:
        _print_summary(summary)
    raise typer.Exit(errors.EXIT_FAILURES if summary.failed else errors.EXIT_OK)


def _print_summary(s: Any) -> None:
    t = Table(title=f"preprocess run -> {s.store} ({s.branch})", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    ratio = f"{s.bytes_in / s.bytes_out:.2f}x" if s.bytes_out else "-"
    rows = [
        ("snapshot", s.snapshot or "(nothing new: no commit)"),
        ("engine", f"{s.engine} on {s.device}"),
        ("images", f"{s.sources} found, {s.stored} stored, {s.skipped} already stored, {s.failed} failed"),
        ("gate", f"{s.flagged} flagged, {s.kept_source} kept as source (gate failed), "
                 f"{s.passthrough} source already smaller"),
        ("bytes in", _size(s.bytes_in)),
        ("bytes out", _size(s.bytes_out)),
        ("ratio", ratio),
        ("similarity", f"min {_fmt(s.similarity_min, '.4f')}  mean {_fmt(s.similarity_mean, '.4f')}"),
        ("quality", f"mean {_fmt(s.quality_mean, '.1f')}  (probes/image {_fmt(s.probes_mean, '.2f')})"),
        ("time", f"{s.seconds:.1f} s ({s.images_per_second:.1f} images/s)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    for f in s.failures[:20]:
        err.print(f"  failed [{f['code']}] {f['path']}: {f['message']}", highlight=False, soft_wrap=True)
    if len(s.failures) > 20:
        err.print(f"  ... and {len(s.failures) - 20} more (see the dataset's failures table)")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The bundled model manifests, and whether their ONNX file is built."""
    from preprocess.extractor.build import cache_dir
    from preprocess.extractor.manifest import list_manifests

    rows = []
    for m in list_manifests():
        built = cache_dir() / f"{m.name}-{m.source.sha256[:12]}.onnx"
        rows.append({"name": m.name, "dim": m.output.dim, "input": f"{m.input.width}x{m.input.height}",
                     "source": m.source.package or m.source.path or "", "built": built.is_file(),
                     "description": m.description})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table("name", "dim", "input", "source", "built", "description")
    for r in rows:
        t.add_row(r["name"], str(r["dim"]), r["input"], r["source"], "yes" if r["built"] else "no",
                  r["description"])
    out.print(t)


@models_app.command("build")
def models_build(
    model: Annotated[str, typer.Argument(help="A bundled model name or a manifest path.")] = "mobilenetv2-imagenet",
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Build (export) a model's ONNX file into the local cache, checking weight hashes."""
    from preprocess.extractor.build import build
    from preprocess.extractor.manifest import find_manifest

    _quiet_libraries()
    try:
        b = build(find_manifest(model), force=force)
    except PreprocessError as exc:
        _fail(exc)
        return
    out.print(f"{b.manifest.name}: {b.path} (onnx sha256 {b.onnx_sha256[:16]}...)")


@app.command()
def version() -> None:
    """Print the versions of preprocess and the stack it runs on."""
    from preprocess.provenance import software_versions

    for k, v in software_versions().items():
        out.print(f"{k:12} {v or '-'}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: nothing was committed by the unfinished job")
        sys.exit(130)


if __name__ == "__main__":
    main()
