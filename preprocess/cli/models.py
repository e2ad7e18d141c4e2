"""`preprocess models list|build`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from preprocess.cli.app import emit, fail, models_app, out, quiet_libraries
from preprocess.core.errors import PreprocessError


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The bundled model manifests, and whether their ONNX file is built."""
    from preprocess.pipeline.extractor.build import cache_dir
    from preprocess.pipeline.extractor.manifest import list_manifests

    rows = []
    for m in list_manifests():
        built = cache_dir() / f"{m.name}-{m.source.sha256[:12]}.onnx"
        rows.append({"name": m.name, "dim": str(m.output.dim), "input": f"{m.input.width}x{m.input.height}",
                     "source": m.source.package or m.source.path or "", "built": "yes" if built.is_file() else "no",
                     "description": m.description})
    if as_json:
        emit("models list", rows, key="models")
        return
    columns = ["name", "dim", "input", "built", "source", "description"]
    if out.width < 110:  # on 80 columns the description (which names the source) gets the room
        columns.remove("source")
    t = Table(box=box.SIMPLE_HEAD)
    for name in columns:
        wraps = name in ("source", "description")
        t.add_column(name, no_wrap=not wraps, overflow="fold", ratio=1 if wraps else None)
    for r in rows:
        t.add_row(*(escape(r[k]) for k in columns))
    out.print(t)


@models_app.command("build")
def models_build(
    model: Annotated[str, typer.Argument(help="A bundled model name or a manifest path.")] = "mobilenetv2-imagenet",
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Build (export) a model's ONNX file into the local cache, checking weight hashes."""
    from preprocess.pipeline.extractor.build import build
    from preprocess.pipeline.extractor.manifest import find_manifest

    quiet_libraries()
    try:
        b = build(find_manifest(model), force=force)
    except PreprocessError as exc:
        fail(exc)
        return
    out.print(f"{b.manifest.name}: {b.path} (onnx sha256 {b.onnx_sha256[:16]}...)")


