"""Every stored format end to end: run -> store -> reader -> PyTorch reader -> export, on real photos."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess import open_dataset
from preprocess.drivers.run import JobOptions, run_job
from preprocess.pipeline import codecs
from preprocess.pipeline.spec import default_spec_path
from preprocess.rows import formats
from preprocess.store import open_repo
from preprocess.store.export import export

FORMATS = ["jpeg", "webp", "avif", "jxl"]


def spec_for(fmt: str, folder: Path) -> Path:
    """The default spec with another format and a smaller size (faster), nothing else changed. Not below
    640 px: at 320 px a crop is stretched 1.4x to the model's input, and a 4:2:0 JPEG's worst crop stays
    under the default's 0.975 even at q95 (flagged)."""
    text = default_spec_path().read_text()
    text = text.replace('format = "jpeg"              #', f'format = "{fmt}"              #', 1)
    text = text.replace("size = 1280", "size = 640", 1)
    if fmt == "jxl":  # JPEG XL has no chroma subsampling
        text = text.replace('chroma_subsampling = "420"', "# (no chroma_subsampling)", 1)
    path = folder / f"{fmt}.toml"
    path.write_text(text)
    assert tomllib.loads(text)["encode"]["format"] == fmt
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, small_photos: list[Path]) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for p in small_photos[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_format_round_trips_through_run_store_reader_and_export(fmt: str, photos: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "s.icechunk")
    summary = run_job(JobOptions(sources=[str(photos)], store=store, spec_path=str(spec_for(fmt, tmp_path)),
                                 engine="pillow", device="cpu"))
    assert summary.stored == 3 and summary.failed == 0
    ds = open_dataset(store)
    for i in range(len(ds)):
        item = ds[i]
        assert item["status"] == "ok" and item["format"] == fmt and item["similarity"] >= 0.99
        assert item["encoder"] == formats.FORMATS[fmt].encoders[0].library
        assert codecs.sniff(item["jpeg"]) == fmt  # the stored bytes are in the row's format
        assert item["image"].size == (item["width"], item["height"])  # the reader decodes every format
        assert np.array_equal(np.asarray(item["image"]), codecs.decode(item["jpeg"], fmt))

    import torch

    from preprocess.torchdata import VersionDataset

    tensor = VersionDataset(store, decode="cpu")[0]["image"]
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (3, ds[0]["height"], ds[0]["width"])

    out = tmp_path / "export"
    done = export(open_repo(store, create=False), out)
    files = sorted((out / "images").iterdir())
    assert done.files == len(files) == 3
    for f in files:
        assert f.suffix == formats.FORMATS[fmt].suffix
        assert codecs.sniff(f.read_bytes()) == fmt
        if fmt == "jpeg":  # pillow-simd here reads JPEG only (the others: preprocess.pipeline.codecs.decode, above)
            assert Image.open(f).size[0] > 0
