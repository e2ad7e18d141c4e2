"""The notebook side of the reader (issue 14): ``Dataset.to_pandas()`` with optional embeddings,
``failures_to_pandas()``, pandas as an optional dependency, and opening a store prints nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from preprocess.core.errors import ConfigError
from preprocess.rows.schema import ITEM_COLUMNS
from preprocess.store import dataset_at
from tests.store.conftest import Hist


def test_to_pandas_is_one_row_per_item_with_its_fields(hist: Hist) -> None:
    ds = dataset_at(hist.repo, "low-q")
    df = ds.to_pandas()
    table = ds.items_table()
    assert list(df.columns) == [c.name for c in ITEM_COLUMNS if c.name != "jpeg"]
    assert len(df) == len(ds) == 6 and df.index.name == "index" and list(df.index) == list(range(6))
    assert df["source_sha256"].tolist() == table["source_sha256"].tolist()
    assert str(df["source_path"].dtype) == "str" and df["quality"].dtype == table["quality"].dtype
    assert np.allclose(df["similarity"].to_numpy(), table["similarity"])
    worst = int(df["similarity"].idxmin())
    assert ds[worst]["similarity"] == pytest.approx(float(df["similarity"].min()))  # the index is ds[i]'s
    some = ds.to_pandas(["source_path", "model"], embeddings=True)
    assert list(some.columns) == ["source_path", "model", "embedding"]
    matrix = np.stack(some["embedding"].to_list())
    assert matrix.shape == (6, 1280) and matrix.dtype == np.float32
    assert np.array_equal(matrix, ds.embedding("mobilenetv2-imagenet"))
    failures = dataset_at(hist.repo, "main").failures_to_pandas()
    assert failures["code"].tolist() == ["E_TRUNCATED"] and failures["source_path"].iloc[0].endswith("truncated.jpg")
    with pytest.raises(ConfigError) as e:
        ds.to_pandas(["similarty"])
    assert "did you mean 'similarity'" in e.value.message  # (or similarity_whole, ...: the closest first)


def test_to_pandas_without_pandas_says_how_to_get_it(hist: Hist, monkeypatch: pytest.MonkeyPatch) -> None:
    # A test double on purpose: pandas is installed here (the notebook extra); a None entry in
    # sys.modules makes `import pandas` fail as it does where the extra was not installed.
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ConfigError) as e:
        dataset_at(hist.repo, "main").to_pandas()
    assert e.value.code == "PANDAS_MISSING" and "preprocess[notebook]" in e.value.hint


OPEN = textwrap.dedent("""
    import sys
    from preprocess.store import open_dataset, open_writer
    print(len(open_dataset(sys.argv[1])), len(open_dataset(sys.argv[1], ref="v1")))
""")


def test_opening_a_store_prints_nothing_unless_icechunk_log_is_set(hist: Hist) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(hist.store.parent)}
    quiet = subprocess.run([sys.executable, "-c", OPEN, str(hist.store)], capture_output=True, text=True,
                           env=env, timeout=120, check=True)
    assert quiet.stdout.split() == ["4", "2"] and quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-c", OPEN, str(hist.store)], capture_output=True, text=True,
                          env={**env, "ICECHUNK_LOG": "warn"}, timeout=120, check=True)
    assert "not safe for concurrent commits" in loud.stderr  # the user's filter wins


def test_a_process_that_opened_a_store_waits_for_icechunk_before_it_exits(hist: Hist,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """icechunk's binding finishes reads on its own threads; a process that exits at once could crash in
    finalization (SIGSEGV after all its output: this file's subprocess test and a README example did, under
    load). Opening a store registers a short wait at exit; the crash itself is too timing-bound to test."""
    import os
    import time

    from preprocess.store import storage

    seen: list[object] = []
    monkeypatch.setattr("preprocess.store.storage.atexit.register", lambda fn, *args: seen.append((fn, args)))
    monkeypatch.setattr(storage, "_settling", set())
    storage.open_repo(str(hist.store), create=False)
    storage.open_repo(str(hist.store), create=False)
    assert seen == [(time.sleep, (storage.EXIT_SETTLE_S,))]  # once per process
    assert os.getpid() in storage._settling
