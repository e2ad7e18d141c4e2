"""Provenance as typed models: written with to_metadata(), read back tolerantly with from_metadata()."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from preprocess.rows.provenance import Counts, Header, Provenance, RayInfo, SpecInfo, WatchInfo


def written() -> dict[str, Any]:
    """A commit's metadata as a job writes it (every section)."""
    p = Provenance(preprocess=Header(kind="watch", job_id="j1"), spec={"pipeline": {"name": "cams"}, "future": 1},
                   fingerprint="fp", counts=Counts(sources=3, stored=2, failed=1), timings={"store": 0.5},
                   watch=WatchInfo(reason="interval", sequence=4, folder="/in"))
    return p.to_metadata()


def test_to_metadata_is_plain_json_and_reads_back_the_same() -> None:
    md = written()
    assert json.loads(json.dumps(md, allow_nan=False)) == md
    assert md["bytes"] == {"in": 0, "out": 0} and md["watch"]["reason"] == "interval" and "ray" not in md
    back = Provenance.from_metadata(md)
    assert back is not None and back.to_metadata() == md
    assert (back.kind, back.job_id, back.counts.stored, back.watch) == ("watch", "j1", 2, WatchInfo(
        reason="interval", sequence=4, folder="/in"))


def test_reading_is_tolerant_of_old_new_and_damaged_commits() -> None:
    md = written()
    md["counts"] = "not a section"  # damaged: the section reads as its default
    md["inputs"] = {"count": "many", "branch": "main", "added_later": [1, 2]}  # one bad field, one unknown
    md["ray"] = {"actors": 2, "engines": [{"engine": "dali", "device": "gpu", "gpu": "H200"}]}
    md["newer_section"] = {"x": 1}
    del md["machine"], md["software"]  # written before these existed
    p = Provenance.from_metadata(md)
    assert p is not None
    assert p.counts == Counts() and p.inputs.count == 0 and p.inputs.branch == "main"
    assert p.machine.host == "" and p.software == {}
    assert p.ray is not None and p.ray.actors == 2 and p.ray.engines[0].engine == "dali"
    out: dict[str, Any] = p.to_metadata()  # nested plain JSON
    assert out["inputs"]["added_later"] == [1, 2] and out["newer_section"] == {"x": 1}  # unknown fields are kept
    assert out["ray"]["engines"][0]["gpu"] == "H200"


def test_commits_preprocess_did_not_make_have_no_provenance() -> None:
    assert Provenance.from_metadata(None) is None
    assert Provenance.from_metadata({}) is None
    assert Provenance.from_metadata({"author": "someone else"}) is None
    assert Provenance.from_metadata({"preprocess": "not a section"}) is None


def test_writing_is_strict() -> None:
    with pytest.raises(ValidationError):
        Counts(stored="many")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RayInfo.model_validate({"actors": "x"})


def test_the_spec_is_recorded_as_it_was_and_read_through_a_typed_view() -> None:
    spec = {"pipeline": {"name": "cams"}, "resize": {"mode": "long-side", "size": 1280},
            "quality": {"mode": "adaptive", "min": 30, "max": 95, "step": 5},
            "encode": {"chroma_subsampling": {"not": "a list"}}, "gate": {"model": "m", "threshold": 0.99}}
    p = Provenance(spec=spec)
    assert p.to_metadata()["spec"] == spec  # exactly, whatever a later spec version holds
    assert p.spec_info.summary() == "long-side 1280, q30-95/5, ?, gate m >= 0.99 (?)"
    assert SpecInfo.of(None).summary() == "? ?, q?-?/?, ?, gate ? >= ? (?)"
    new = {**spec, "encode": {"format": "jpeg", "encoders": ["jpegli"], "chroma_subsampling": ["420"]}}
    assert Provenance(spec=new).spec_info.summary() == "long-side 1280, q30-95/5, jpeg jpegli 420, gate m >= 0.99 (?)"
