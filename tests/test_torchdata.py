"""The PyTorch reader: a version of a real store through DataLoader workers (spawned), pickling,
the fork guard, and DALI batch decoding (CPU here; GPU on the lent machine)."""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from preprocess import open_dataset
from preprocess.core.errors import ConfigError
from preprocess.drivers.run import JobOptions, run_job
from preprocess.torchdata import Loader, VersionDataset, Where, WorkerForked, collate, fit_box, loader
from preprocess.torchdata.dataset import DRAFT_GAP
from tests.paths import ROOT
from tests.store import conftest as shared

photo_sets = shared.photo_sets  # the history tests' fixtures: small real-photo folders, tiny specs
tiny_specs = shared.tiny_specs


def each(batches: Iterable[dict[str, object]]) -> list[dict[str, Any]]:
    """The batches, typed for these tests (a batch's values are tensors or lists by field: object to the reader)."""
    return list(batches)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, photo_sets: list[Path], tiny_specs: list[Path]) -> Path:
    path = tmp_path_factory.mktemp("torch") / "cams.icechunk"
    run_job(JobOptions(sources=[str(p) for p in photo_sets], store=str(path), spec_path=str(tiny_specs[0]),
                       engine="pillow", device="cpu"))
    return path


def test_two_workers_yield_every_item_of_the_version_once(store: Path) -> None:
    ds = VersionDataset(str(store), ref="main", decode="cpu")
    plain = open_dataset(str(store))
    assert len(ds) == len(plain) == 6
    seen: dict[int, dict[str, object]] = {}
    for batch in each(loader(ds, batch_size=2, num_workers=2)):
        assert isinstance(batch["quality"], torch.Tensor) and isinstance(batch["source_path"], list)
        for j, index in enumerate(batch["index"].tolist()):
            assert index not in seen
            seen[index] = {"image": batch["image"][j], "sha": batch["source_sha256"][j]}
    assert sorted(seen) == list(range(len(plain)))
    for i, got in seen.items():
        ref = plain[i]
        assert got["sha"] == ref["source_sha256"]
        image = got["image"]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8
        assert np.array_equal(image.permute(1, 2, 0).numpy(), np.asarray(ref["image"]))


def test_the_dataset_pickles_as_location_and_snapshot(store: Path) -> None:
    ds = VersionDataset(str(store), ref="main", decode="none", fields=["quality", "source_sha256"])
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.snapshot_id == ds.snapshot_id and len(copy) == len(ds)
    a, b = ds[3], copy[3]
    assert a["jpeg"] == b["jpeg"] and a["quality"] == b["quality"] and set(a) == {"index", "jpeg", "quality",
                                                                                 "source_sha256"}
    (batch,) = each([collate([ds[0], ds[1]])])
    assert batch["quality"].shape == (2,) and len(batch["jpeg"]) == 2
    with pytest.raises(ConfigError):
        VersionDataset(str(store), fields=["nope"])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_workers_are_refused_with_one_line_and_its_fix(store: Path) -> None:
    """This process has loaded icechunk (every test here opens stores), so a forked worker would hang."""
    ds = VersionDataset(str(store), decode="none")
    with pytest.raises(ConfigError) as e:
        loader(ds, multiprocessing_context="fork")
    assert e.value.code == "TORCH_FORK"
    forked = DataLoader(ds, batch_size=2, num_workers=1, multiprocessing_context="fork", timeout=60)
    with pytest.raises(WorkerForked) as raised:
        next(iter(forked))
    line = str(raised.value)  # torch rebuilds the worker's error from its traceback text: one line still
    assert "\n" not in line and line.startswith("error[TORCH_FORK]") and "multiprocessing_context='forkserver'" in line
    assert raised.value.code == "TORCH_FORK"


def test_a_draft_decodes_fewer_pixels_to_nearly_the_same_items(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``draft=True``: a stored JPEG is decoded at the smallest DCT scale that covers the resize (as Pillow's
    ``Image.draft``), then resized to the same geometry: the same shapes, pixels within a few levels. The real
    decoder is wrapped only to see the sizes it decoded (a spy, not a stand-in)."""
    from preprocess.pipeline.formats import jpeg

    sizes: list[tuple[int, int] | None] = []
    real = jpeg.decode_rgbx_into

    def spy(*args: Any, **kw: Any) -> tuple[int, int] | None:
        sizes.append(got := real(*args, **kw))
        return got

    monkeypatch.setattr(jpeg, "decode_rgbx_into", spy)
    full = VersionDataset(str(store), decode="cpu", size=(48, 32))
    draft = VersionDataset(str(store), decode="cpu", size=(48, 32), draft=True)
    for i in range(len(full)):
        a, b = full[i]["image"], draft[i]["image"]
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        assert a.shape == b.shape == (3, 32, 48)
        assert (a.int() - b.int()).abs().float().mean() < 1.0, i  # the geometry exact: 3.4 with it rounded
    whole, drafted = sizes[0::2], sizes[1::2]
    for w, d in zip(whole, drafted, strict=True):
        assert w is not None and d is not None and d[0] * d[1] * 2 <= w[0] * w[1], (w, d)  # fewer pixels ...
        resized, _ = fit_box(w[0], w[1], (48, 32), "crop")
        assert d[0] >= math.ceil(DRAFT_GAP * resized[0]) and d[1] >= math.ceil(DRAFT_GAP * resized[1])  # ... enough
    with pytest.raises(ConfigError) as refused:
        VersionDataset(str(store), decode="cpu", draft=True)  # no size: nothing to draft for
    assert refused.value.code == "TORCH_SIZE"


def test_dali_decodes_stored_images_on_the_cpu(store: Path) -> None:
    from preprocess.pipeline.engines.dali import ImageDecoder

    plain = open_dataset(str(store))
    decoder = ImageDecoder(device="cpu", max_batch=4)
    blobs = [plain.jpeg(i) for i in range(len(plain))]
    decoded = decoder(blobs)  # two batches: 4 + 2
    for i, px in enumerate(decoded):
        ref = np.asarray(plain[i]["image"], dtype=np.int16)
        assert px.shape == ref.shape and px.dtype == np.uint8
        assert np.abs(px.astype(np.int16) - ref).mean() < 2.0  # another IDCT, the same image
    decoder.close()


@pytest.mark.gpu
def test_gpu_batches_are_decoded_by_dali_on_the_device(store: Path) -> None:
    ds = VersionDataset(str(store), decode="gpu")
    plain = open_dataset(str(store))
    seen = 0
    for batch in each(loader(ds, batch_size=4, num_workers=2)):
        for j, image in enumerate(batch["image"]):
            assert image.is_cuda and image.dtype == torch.uint8
            ref = np.asarray(plain[int(batch["index"][j])]["image"], dtype=np.int16)
            hwc = image.permute(1, 2, 0).cpu().numpy()  # CHW, as on the CPU
            assert hwc.shape == ref.shape
            assert np.abs(hwc.astype(np.int16) - ref).mean() < 2.0
            seen += 1
    assert seen == len(plain)


# --- one layout on both decoders, every stored format, row selection, fixed output size -------------


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory: pytest.TempPathFactory, photo_sets: list[Path], tiny_specs: list[Path],
                odd_images: dict[str, bytes], base_image: Image.Image) -> Path:
    """One branch, four jobs: two JPEG specs over the same photos (so one source has two rows), kept
    sources that need the CPU's conversion (RGBA PNG, GIF: gate impossible to pass, on_fail = source),
    and AVIF rows."""
    root = tmp_path_factory.mktemp("mixed")
    odd = root / "odd"
    odd.mkdir()
    (odd / "rgba.png").write_bytes(odd_images["rgba.png"])
    buf = io.BytesIO()
    base_image.convert("P").save(buf, format="GIF")
    (odd / "frame.gif").write_bytes(buf.getvalue())
    keep = root / "keep.toml"
    keep.write_text("[resize]\nsize = 256\n[quality]\nmode = \"fixed\"\nvalue = 90\n"
                    "[gate]\nthreshold = 1.0\non_fail = \"source\"\n")
    avif = root / "avif.toml"
    avif.write_text("[resize]\nsize = 256\n[encode]\nformat = \"avif\"\nspeed = 9\n"
                    "[quality]\nmode = \"fixed\"\nvalue = 60\n[gate]\nthreshold = 0.5\n")
    store = root / "mixed.icechunk"
    for sources, spec in (([photo_sets[0]], tiny_specs[0]), ([photo_sets[0]], tiny_specs[1]), ([odd], keep),
                          ([photo_sets[1]], avif)):
        run_job(JobOptions(sources=[str(x) for x in sources], store=str(store), spec_path=str(spec),
                           engine="pillow", device="cpu"))
    return store


def _dali_cpu_loader(ds: VersionDataset, batch_size: int = 8) -> Loader:
    """The GPU reader's code path with DALI's CPU decoder in place of the GPU one (same graph)."""
    from preprocess.pipeline.engines.dali import ImageDecoder

    dl = DataLoader(ds, batch_size=batch_size, num_workers=0, collate_fn=collate)
    return Loader(ds, dl, decoder=ImageDecoder(device="cpu", max_batch=batch_size))


def test_the_store_holds_every_kind_of_row(mixed_store: Path) -> None:
    table = open_dataset(str(mixed_store)).items_table(["status", "format", "source_path"])
    kinds = {(str(st), str(f)) for st, f in zip(table["status"], table["format"], strict=True)}
    assert {("ok", "jpeg"), ("source", "png"), ("source", "gif"), ("ok", "avif")} <= kinds


@pytest.mark.parametrize("size", [None, (96, 64)])
def test_the_gpu_reader_gives_the_cpu_readers_layout_and_pixels(mixed_store: Path,
                                                                size: tuple[int, int] | None) -> None:
    cpu = VersionDataset(str(mixed_store), decode="cpu", size=size)
    gpu = VersionDataset(str(mixed_store), decode="gpu", size=size)
    (a,) = each(loader(cpu, batch_size=len(cpu), num_workers=0))
    (b,) = each(_dali_cpu_loader(gpu, batch_size=len(gpu)))
    assert torch.equal(a["index"], b["index"]) and a["status"] == b["status"]
    if size is None:  # different sizes: a list of CHW tensors on both
        assert isinstance(a["image"], list) and isinstance(b["image"], list)
    else:  # one size: one stacked tensor on both
        assert a["image"].shape == b["image"].shape == (len(cpu), 3, size[1], size[0])
    for x, y, fmt in zip(a["image"], b["image"], a["format"], strict=True):
        assert x.dtype == y.dtype == torch.uint8 and x.shape == y.shape and x.shape[0] == 3
        diff = (x.int() - y.int()).abs().float().mean().item()
        assert diff < (2.0 if size is None else 3.0), fmt  # another IDCT (and resize), the same image


def test_kept_sources_are_converted_like_the_pipeline_does(mixed_store: Path) -> None:
    ds = VersionDataset(str(mixed_store), decode="gpu", where=Where(status="source"))
    (batch,) = each(_dali_cpu_loader(ds))
    by_path = {Path(p).name: img for p, img in zip(batch["source_path"], batch["image"], strict=True)}
    rgba = by_path["rgba.png"]
    top = rgba[:, : rgba.shape[1] // 2 - 2]  # the transparent half: white, not the colour under it
    assert int(top.min()) == 255
    assert by_path["frame.gif"].shape[0] == 3  # a GIF row does not fail the batch


def test_a_row_dali_cannot_decode_is_decoded_on_the_cpu(mixed_store: Path) -> None:
    class Refusing:
        """Test double: DALI's batch decoder refusing every image (as for a JPEG it cannot take)."""

        device = "cpu"

        def decode(self, blobs: list[bytes]) -> list[None]:
            return [None] * len(blobs)

    ds = VersionDataset(str(mixed_store), decode="gpu", where=Where(status="ok"), size=(64, 64))
    dl = DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate)
    got = torch.cat([b["image"] for b in each(Loader(ds, dl, decoder=Refusing()))])
    ref = torch.cat([b["image"] for b in each(loader(VersionDataset(str(mixed_store), decode="cpu",
                                                                 where=Where(status="ok"), size=(64, 64)),
                                                  batch_size=4, num_workers=0))])
    assert torch.equal(got, ref)


def test_rows_are_selected_by_where(mixed_store: Path, tiny_specs: list[Path]) -> None:
    plain = open_dataset(str(mixed_store))
    table = plain.items_table()
    fps = list(dict.fromkeys(str(f) for f in table["fingerprint"]))  # in job order
    q80 = VersionDataset(str(mixed_store), decode="none", where={"fingerprint": fps[0]})
    assert len(q80) == 2 and {q80[i]["quality"] for i in range(len(q80))} == {80}
    ok = VersionDataset(str(mixed_store), decode="none", where=Where(status=["ok", "flagged"], quality=(50, 100)))
    assert {int(plain.record(int(r))["quality"]) for r in ok.rows} == {60, 80}
    sims = VersionDataset(str(mixed_store), decode="none", where=Where(similarity=(0.9999, 1.0)))
    assert all(table["status"][r] == "source" for r in sims.rows) and len(sims) == 2
    prefix = str(Path(str(table["source_path"][0])).parent)
    assert len(VersionDataset(str(mixed_store), decode="none", where=Where(source_prefix=prefix))) == 4
    newest = VersionDataset(str(mixed_store), decode="none", where=Where(source_prefix=prefix, one_per_source=True))
    assert len(newest) == 2 and {newest[i]["quality"] for i in range(2)} == {40}  # the later spec's rows
    assert newest[0]["index"] == int(newest.rows[0]) and newest.rows.tolist() == sorted(newest.rows.tolist())
    copy = pickle.loads(pickle.dumps(newest))
    assert copy.rows.tolist() == newest.rows.tolist() and copy[1]["jpeg"] == newest[1]["jpeg"]
    assert len(VersionDataset(str(mixed_store), decode="none", where=Where(status="nope"))) == 0


def test_size_and_fit_give_every_image_one_shape(mixed_store: Path) -> None:
    for fit in ("crop", "stretch"):
        ds = VersionDataset(str(mixed_store), decode="cpu", size=(50, 30), fit=fit)
        (batch,) = each(loader(ds, batch_size=len(ds), num_workers=0))
        assert batch["image"].shape == (len(ds), 3, 30, 50)
    assert fit_box(200, 100, (50, 50), "crop") == ((100, 50), (25, 0, 75, 50))
    assert fit_box(100, 200, (50, 30), "crop") == ((50, 100), (0, 35, 50, 65))
    assert fit_box(10, 10, (40, 20), "crop") == ((40, 40), (0, 10, 40, 30))  # small images are scaled up
    assert fit_box(640, 427, (224, 224), "stretch") == ((224, 224), (0, 0, 224, 224))
    with pytest.raises(ConfigError) as e:
        VersionDataset(str(mixed_store), size=(0, 10))
    assert e.value.code == "TORCH_SIZE"


def test_gpu_decoding_without_a_gpu_is_a_clear_error(mixed_store: Path) -> None:
    from tests.conftest import gpu_available

    if gpu_available():
        pytest.skip("a CUDA GPU is here")
    with pytest.raises(ConfigError) as e:
        loader(VersionDataset(str(mixed_store), decode="gpu"), num_workers=0)
    assert e.value.code == "NO_GPU"


def test_a_transform_is_applied_on_the_cpu_or_refused(mixed_store: Path) -> None:
    with pytest.raises(ConfigError) as e:
        VersionDataset(str(mixed_store), decode="gpu", transform=lambda img: img)
    assert e.value.code == "TORCH_TRANSFORM" and "size=" in e.value.hint
    ds = VersionDataset(str(mixed_store), decode="auto", transform=lambda img: img.size)
    assert ds.decode == "cpu"  # a PIL transform: auto decodes on the CPU, wherever it runs
    assert ds[0]["image"] == open_dataset(str(mixed_store))[0]["image"].size


def test_avif_rows_decode_in_spawned_workers_of_the_gpu_reader(mixed_store: Path) -> None:
    ds = VersionDataset(str(mixed_store), decode="gpu", where=Where(source_prefix="/"), size=(32, 32))
    dl = DataLoader(ds, batch_size=len(ds), num_workers=1, multiprocessing_context="spawn", collate_fn=collate)
    from preprocess.pipeline.engines.dali import ImageDecoder

    (batch,) = each(Loader(ds, dl, decoder=ImageDecoder(device="cpu")))
    assert batch["image"].shape == (len(ds), 3, 32, 32)
    assert "avif" in batch["format"] and "jpeg" in batch["format"]


CLEAN = """
import sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a process with torch's thread
from torch.utils.data import DataLoader
from preprocess.torchdata import VersionDataset, collate, loader
from preprocess.torchdata.loader import start_method

if __name__ == "__main__":
    ds = VersionDataset(sys.argv[1], decode="cpu", size=(32, 32))
    print("icechunk" in sys.modules, start_method(None))
    plain = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, timeout=120)  # fork: Linux's default
    print(sorted(i for b in plain for i in b["index"].tolist()))
    ds[0]  # this process reads the store itself: icechunk is loaded, workers come from a forkserver now
    print("icechunk" in sys.modules, start_method(None))
    print(sorted(i for b in loader(ds, batch_size=4, num_workers=2, timeout=120) for i in b["index"].tolist()))
"""


def test_a_process_that_reads_through_workers_forks_them_and_falls_back_to_a_forkserver(
        store: Path, tmp_path: Path) -> None:
    """Reading the version's rows leaves this process free of icechunk, so DataLoader's plain fork works;
    once the process opened the store itself, loader() starts its workers from a forkserver."""
    script = tmp_path / "train.py"
    script.write_text(CLEAN)
    done = subprocess.run([sys.executable, str(script), str(store)], capture_output=True, text=True, timeout=600,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    every = str(list(range(6)))
    assert done.stdout.splitlines() == ["False fork", every, "True forkserver", every]


def test_the_reader_and_a_forkserver_preload_never_import_icechunk() -> None:
    """What keeps forked workers safe: importing the reader (and what a forkserver preloads) loads numpy,
    torch, zarr and the decoders, never icechunk (whose runtime a forked child cannot use)."""
    from preprocess.torchdata.loader import PRELOAD

    code = (f"import sys; import preprocess.torchdata; [__import__(m) for m in {PRELOAD!r}]; "
            "print('icechunk' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == ["False", "True"]


def test_odd_sizes_fields_and_indices_are_said_not_a_crash(store: Path) -> None:
    """An audit (2026-12-07): size=(100000, 100000) was taken and the first item asked ~30 GB (the process was
    killed); size=224 and where={"bogus": 1} were TypeErrors from inside; size=(224.5, 224) was taken as 224;
    a slice or an array index said "'<=' not supported between 'int' and 'slice'"; "0" and 2.0 were read as
    row 0 and row 2 by the reader and refused by open_dataset. One rule for both now."""
    for bad in (0, (100000, 100000), (224.5, 224), (224,), "224", True):
        with pytest.raises(ConfigError) as e:
            VersionDataset(str(store), size=bad)  # type: ignore[arg-type]
        assert e.value.code == "TORCH_SIZE" and "1..16384" in e.value.message, bad
    assert VersionDataset(str(store), size=32).size == (32, 32)
    assert VersionDataset(str(store), size=(np.int64(48), 32)).size == (48, 32)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        VersionDataset(str(store), where={"bogus": 1})
    assert e.value.code == "STORE_FIELD" and "bogus" in e.value.message and "status" in (e.value.hint or "")
    assert VersionDataset(str(store), where={"status": "ok"}).where == Where(status="ok")
    reader, ds = VersionDataset(str(store), size=(16, 16)), open_dataset(str(store))
    for index in (slice(0, 3), np.array([1, 2]), "0", 2.0):
        for rows in (reader, ds):
            with pytest.raises(TypeError, match="a row is one whole number"):
                rows[index]  # type: ignore[index]
    one = reader[np.int64(1)]  # type: ignore[index]
    assert one["index"] == reader[1]["index"] and type(one["index"]) is int
    assert ds.record(np.int64(-1))["source_path"] == ds.record(len(ds) - 1)["source_path"]  # type: ignore[arg-type]
