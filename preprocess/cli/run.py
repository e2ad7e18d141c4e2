"""`preprocess run`: the batch job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from preprocess.cli.app import app, emit, err, fail, fmt, out, progress_for, quiet_libraries
from preprocess.cli.helptext import SPEC_HELP
from preprocess.core import errors, names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import PreprocessError
from preprocess.core.units import count, size
from preprocess.pipeline.devices import choices

if TYPE_CHECKING:
    from preprocess.core.progress import Progress
    from preprocess.drivers.ingest import Summary
    from preprocess.drivers.ray.job import RayOptions
    from preprocess.drivers.run import JobOptions


@app.command()
def run(
    sources: Annotated[list[str], typer.Argument(help="Folders (searched recursively), image files or "
                                                       "s3://bucket/prefix.")],
    store: Annotated[str, typer.Option("--store", "-s", help="The dataset: a local path or s3://bucket/prefix "
                                                             "(created if missing).")],
    spec: Annotated[str | None, typer.Option(help=SPEC_HELP)] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")] = "",
    branch: Annotated[str, typer.Option(help="Branch to commit to.")] = "main",
    engine: Annotated[str, typer.Option(help="auto | dali | pillow (auto: DALI on a GPU, else pillow).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | gpu | cpu.")] = "auto",
    wait: Annotated[float, typer.Option(min=0.0, help="Seconds to wait while another job writes the same local "
                                             "store (default: fail at once, exit 4).")] = 0.0,
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Follow symlinks that lead outside the source folders (default: such a "
                                  "link is a failure, E_SYMLINK_OUTSIDE, and its target is never read).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (no progress bar).")] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Run on Ray (pip install 'preprocess\\[ray]'): local (this machine), auto (the running "
                      "cluster) or a cluster address (ray://head:10001).")] = None,
    gpus_per_worker: Annotated[float, typer.Option(
        help="With --ray: GPUs per processing actor on a GPU cluster (0.5 = two actors per GPU).")] = 1.0,
    actors: Annotated[int | None, typer.Option(
        help="With --ray: processing actors (default: GPUs / --gpus-per-worker, or CPUs - 1 without GPUs).")] = None,
    ray_batch_size: Annotated[int | None, typer.Option(
        help="With --ray: images per actor call (default: the spec's batch.size).")] = None,
) -> None:
    """Resize + recompress SOURCES into the versioned dataset at --store, as ONE commit.

    Exit codes: 0 all stored; 3 committed, some images failed (recorded);
    2 bad spec/options/paths, or no image files (NO_SOURCES): nothing created;
    4 commit conflict, or the store is locked by another job (rerun, or --wait);
    5 storage error (STORE_FULL: the disk is full; free space and rerun);
    6 the GPU failed (DEVICE_OOM, DEVICE_FAULT); 70 internal error;
    130 interrupted (Ctrl-C, SIGTERM). After any of them the dataset is at its
    last commit, and a rerun processes the job's images again (no duplicates).
    """
    from preprocess.drivers.run import JobOptions, run_job

    quiet_libraries()
    progress = None if as_json else progress_for("processing", job=True)
    try:
        engine_choice, device_choice = choices(engine, device)
        opts = JobOptions(sources=sources, store=store, spec_path=spec, branch=branch, message=message,
                          engine=engine_choice, device=device_choice, wait=wait, follow_symlinks=follow_symlinks)
        if not as_json:  # --json: the summary's warnings
            _warn(spec)
        if ray is None:
            summary = run_job(opts, progress)
        else:
            summary = _run_on_ray(opts, progress, _ray_options(ray, gpus_per_worker, actors, ray_batch_size))
    except PreprocessError as exc:
        fail(exc, as_json="run" if as_json else "")
        return
    if as_json:
        emit("run", summary.to_dict())
    else:
        _print_summary(summary)
    raise typer.Exit(errors.EXIT_FAILURES if summary.failed else errors.EXIT_OK)


def _warn(spec: str | None) -> None:
    """The spec's warnings (:meth:`~preprocess.pipeline.spec.Spec.warnings`), on stderr before the job starts."""
    from preprocess.pipeline.spec import default_spec_path, load_spec

    for line in load_spec(spec or default_spec_path()).warnings():
        err.print(Text(f"warning: {line}"), highlight=False, soft_wrap=True)


def _ray_options(address: str, gpus_per_worker: float, actors: int | None, batch_size: int | None) -> RayOptions:
    import importlib.util

    from preprocess.core.errors import ConfigError

    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--ray needs Ray, which is not installed", code=ErrorCode.RAY_MISSING,
                          hint="pip install 'preprocess[ray]'")
    from preprocess.drivers.ray.job import RayOptions

    return RayOptions(address=address, gpus_per_worker=gpus_per_worker, actors=actors, batch_size=batch_size)


def _run_on_ray(opts: JobOptions, progress: Progress | None, ro: RayOptions) -> Summary:
    from preprocess.drivers.ray.job import run_ray_job

    return run_ray_job(opts, ro, progress)


def _print_summary(s: Summary) -> None:
    t = Table(title=escape(f"preprocess run -> {names.quote(s.store)} ({s.branch})"), show_header=False,
              title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    ratio = f"{s.bytes_in / s.bytes_out:.2f}x" if s.bytes_out else "-"
    rows = [
        ("snapshot", s.snapshot or "(nothing new: no commit)"),
        ("engine", f"{s.engine} on {s.device}"),
        ("images", f"{s.sources} found, {s.stored} stored, {s.skipped - len(s.duplicates)} already stored, "
                   + (f"{count(len(s.duplicates), 'duplicate')} of another file in this job, " if s.duplicates else "")
                   + f"{s.failed} failed" + (f" ({s.failed_known} already recorded)" if s.failed_known else "")),
        *[("duplicate", escape(f"{names.shown(d['path'])}: the same content as {names.shown(d['same_as'])}, "
                               + d.get("same_as_outcome", "stored") + " under that name"))
          for d in s.duplicates],
        ("gate", f"{s.flagged} flagged, {s.kept_source} kept as source (gate failed), "
                 f"{s.passthrough} source already smaller"),
        ("bytes in", size(s.bytes_in)),
        ("bytes out", size(s.bytes_out)),
        ("ratio", ratio),
        ("similarity", _similarity(s)),
        ("quality", f"mean {fmt(s.quality_mean, '.1f')}  (probes/image {fmt(s.probes_mean, '.2f')})"),
        ("time", f"{s.seconds:.1f} s " + (f"({s.images_per_second:.1f} images/s)" if s.stored + s.failed
                                           else "(nothing new: no image processed)")),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)
    hinted: set[str] = set()
    for f in s.failures[:20]:
        err.print(Text(f"  failed [{f['code']}] {names.shown(f['path'])}: {names.line(f['message'])}"),
                  highlight=False, soft_wrap=True)
        if (hint := errors.failure_hint(f["code"])) and f["code"] not in hinted:  # once, under its first file
            hinted.add(f["code"])
            err.print(Text(f"    hint: {hint}"), highlight=False, soft_wrap=True)
    if len(s.failures) > 20:
        err.print(f"  ... and {len(s.failures) - 20} more (see the dataset's failures table)")


def _similarity(s: Summary) -> str:
    """Every checked view's min and mean (``whole min 0.9915 mean 0.9970, crops min 0.9754 ...``): the check
    that binds is seldom the whole view's; a commit without views' columns, the first check's alone."""
    if not s.views:
        return f"min {fmt(s.similarity_min, '.4f')}  mean {fmt(s.similarity_mean, '.4f')}"
    return ", ".join(f"{view} min {v['min']:.4f}  mean {v['mean']:.4f}" for view, v in s.views.items())
