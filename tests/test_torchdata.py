"""The PyTorch reader: a version of a real store through DataLoader workers (spawned), pickling,
the fork guard, and DALI batch decoding (CPU here; GPU on the lent machine)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from preprocess.errors import ConfigError
from preprocess.job import JobOptions, run_job
from preprocess.store import open_dataset
from preprocess.torchdata import VersionDataset, collate, loader
from tests.store import conftest as shared

photo_sets = shared.photo_sets  # the history tests' fixtures: small real-photo folders, tiny specs
tiny_specs = shared.tiny_specs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, photo_sets: list[Path], tiny_specs: list[Path]) -> Path:
    path = tmp_path_factory.mktemp("torch") / "cams.icechunk"
    run_job(JobOptions(sources=[str(p) for p in photo_sets], store=str(path), spec_path=str(tiny_specs[0]),
                       engine="pillow", device="cpu"))
    return path


def test_two_spawned_workers_yield_every_item_of_the_version_once(store: Path) -> None:
    ds = VersionDataset(str(store), ref="main", decode="cpu")
    plain = open_dataset(str(store))
    assert len(ds) == len(plain) == 6
    seen: dict[int, dict[str, object]] = {}
    for batch in loader(ds, batch_size=2, num_workers=2):
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
    batch = collate([ds[0], ds[1]])
    assert batch["quality"].shape == (2,) and len(batch["jpeg"]) == 2
    with pytest.raises(ConfigError):
        VersionDataset(str(store), fields=["nope"])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_workers_are_refused_with_a_clear_error(store: Path) -> None:
    ds = VersionDataset(str(store), decode="none")
    with pytest.raises(ConfigError) as e:
        loader(ds, multiprocessing_context="fork")
    assert e.value.code == "TORCH_FORK"
    forked = DataLoader(ds, batch_size=2, num_workers=1, multiprocessing_context="fork", timeout=60)
    with pytest.raises(ConfigError, match="fork"):
        next(iter(forked))


def test_dali_decodes_stored_images_on_the_cpu(store: Path) -> None:
    from preprocess.engines.dali import ImageDecoder

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
    for batch in loader(ds, batch_size=4, num_workers=2):
        for j, image in enumerate(batch["image"]):
            assert image.is_cuda and image.dtype == torch.uint8
            ref = np.asarray(plain[int(batch["index"][j])]["image"], dtype=np.int16)
            assert tuple(image.shape) == ref.shape
            assert np.abs(image.cpu().numpy().astype(np.int16) - ref).mean() < 2.0
            seen += 1
    assert seen == len(plain)
