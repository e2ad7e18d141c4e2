"""`show --item` and `Dataset.find` go from a stored image back to its row (issue 14, broken 1): an
exported file by its path, its name or its content, and the stored bytes' sha256; and from a source
typed any way the path rule allows. On the store of real jobs (``hist``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.core.errors import ConfigError
from preprocess.store import dataset_at, lineage
from preprocess.store import export as export_mod
from tests.store.conftest import Hist


def test_an_exported_file_leads_back_to_its_row(hist: Hist, tmp_path: Path) -> None:
    export_mod.export(hist.repo, tmp_path / "out", ref="low-q")
    ds = dataset_at(hist.repo, "low-q")
    table = ds.items_table(["source_sha256", "fingerprint"])
    for i, f in enumerate(sorted((tmp_path / "out" / "images").iterdir(), key=lambda p: p.name)):
        row = next(r for r in range(len(ds)) if f.name.startswith(f"{table['source_sha256'][r][:16]}-"
                                                                  f"{table['fingerprint'][r]}."))
        found = lineage.lineage(hist.repo, str(f), "low-q")
        assert [x.index for x in found.items] == [row], (i, f.name)
        assert ds.find(str(f)) == [row]
        moved = tmp_path / f"moved-{i}.bin"  # the content alone, under another name
        shutil.copy(f, moved)
        assert ds.find(str(moved)) == [row]
        assert ds.find(f"/nowhere/{f.name}") == [row]  # the name alone, the file gone
    r = CliRunner().invoke(app, ["show", str(hist.store), "low-q", "--item", str(f), "--json"])
    assert r.exit_code == 0, r.output
    assert [x["index"] for x in json.loads(r.stdout)["items"]] == [row]


def test_the_stored_bytes_sha256_leads_back_to_its_row(hist: Hist) -> None:
    ds = dataset_at(hist.repo, "main")
    for i in range(len(ds)):
        stored = hashlib.sha256(ds.jpeg(i)).hexdigest()
        assert ds.find(stored) == [i]
        assert ds.find(stored[:10].upper()) == [i]
        assert [x.index for x in lineage.lineage(hist.repo, stored, "main").items] == [i]
    with pytest.raises(ConfigError) as e:
        lineage.lineage(hist.repo, "0" * 64, "main")
    assert e.value.code == "ITEM_MISSING" and "stored" in e.value.hint


def test_a_source_is_found_however_its_path_is_typed(hist: Hist, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = hist.sets[0] / "apple.jpg"
    ds = dataset_at(hist.repo, "v1")
    row = ds.find("apple.jpg")
    assert len(row) == 1 and ds.items_table(["source_path"])["source_path"][row[0]] == os.path.realpath(src)
    link = tmp_path / "link"
    link.symlink_to(hist.sets[0], target_is_directory=True)
    monkeypatch.chdir(hist.sets[0].parent)
    for typed in (str(src), f"./{hist.sets[0].name}/apple.jpg", f"{hist.sets[0].name}//apple.jpg",
                  str(link / "apple.jpg")):
        assert ds.find(typed) == row, typed
    assert ds.find("") == [] and ds.find("no-such.jpg") == []
