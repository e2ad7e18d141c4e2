"""A store written by the code just before the layers moved into folders (tests/data/store-d87bf7b: a run
commit tagged v1 with a failure, then a watch daemon commit; made by tests/data/make_store_d87bf7b.py.txt)
reads unchanged: every column and failure as that code read them, embeddings, images, log and show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import preprocess
from preprocess.store import open_dataset
from tests.paths import ROOT

DATA = ROOT / "tests" / "data"


@pytest.fixture
def store(tmp_path: Path) -> str:
    copy = tmp_path / "store.icechunk"
    shutil.copytree(DATA / "store-d87bf7b", copy)
    return str(copy)


def test_every_row_reads_as_the_old_code_read_it(store: str) -> None:
    expected = json.loads((DATA / "store-d87bf7b.json").read_text())
    ds = open_dataset(store)
    assert ds.snapshot_id == expected["snapshot"] and len(ds) == 3
    got = ds.items_table(list(expected["items"]))
    for name, values in expected["items"].items():
        column = got[name].tolist()
        if name == "similarity":
            assert np.allclose(column, values), name
        else:
            assert [str(v) for v in column] == [str(v) for v in values], name
    failures = ds.failures_table(list(expected["failures"]))
    assert {k: [str(v) for v in col.tolist()] for k, col in failures.items()} == \
        {k: [str(v) for v in col] for k, col in expected["failures"].items()}
    first = ds.embedding("mobilenetv2-imagenet")[0]
    assert np.allclose(first, expected["embedding"][0], atol=1e-6)


def test_its_images_history_and_tags_read(store: str) -> None:
    ds = preprocess.open_dataset(store, ref="v1")
    assert len(ds) == 2 and all(max(item["image"].size) == 64 for item in ds)
    commits = preprocess.history.log(store)
    assert len(commits) == 2 and commits[1].message == "before the layers"  # the initial snapshot is not listed
    assert commits[0].provenance is not None and commits[0].provenance.watch is not None
    shown = preprocess.history.show(store, "v1")
    assert shown.commit.provenance is not None and shown.commit.provenance.spec_info.pipeline.name == "layers-tiny"
