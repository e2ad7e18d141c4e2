"""A location is parsed once, at the edge, into a Location: a dataset's (local path, file://, s3://) or a
source root's (a path as written, or s3://), with the codes the store has always given."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.core.errors import ConfigError
from preprocess.sources.location import Location, S3Location, given


def test_a_dataset_location_is_an_absolute_local_path_or_an_s3_prefix(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for text in ("ds", "./ds", " ds ", f"{tmp_path}/ds", f"file://{tmp_path}/ds", f"file://localhost{tmp_path}/ds"):
        loc = Location.of_store(text)
        assert loc.path == tmp_path / "ds" and not loc.remote and loc.text == text, text
        assert str(loc) == str(tmp_path / "ds") and loc.local == tmp_path / "ds"
    assert Location.of_store("file:///data/a%20b").path == Path("/data/a b")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Location.of_store("~/ds").path == tmp_path / "ds"
    s3 = Location.of_store("S3://bucket/some/prefix/")
    assert s3.remote and s3.object == S3Location("bucket", "some/prefix") and s3.path is None
    assert str(s3) == "s3://bucket/some/prefix" and s3.text == "S3://bucket/some/prefix/"


@pytest.mark.parametrize(("text", "code"), [("", "STORE_PATH"), ("   ", "STORE_PATH"), ("gs://b/ds", "STORE_URL"),
                                            ("https://host/ds", "STORE_URL"), ("file://host/ds", "STORE_URL"),
                                            ("s3://", "STORE_URL")])
def test_a_bad_dataset_location_keeps_its_code(text: str, code: str) -> None:
    with pytest.raises(ConfigError) as e:
        Location.of_store(text)
    assert e.value.code == code and e.value.hint


def test_a_source_location_is_a_path_as_written_or_an_s3_prefix(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loc = Location.of_source("photos/")
    assert loc.path == tmp_path / "photos" and loc.text == "photos/" and given(loc) == "photos/"
    assert Location.of_source("~/x").path == tmp_path / "~" / "x"  # a shell expands ~, not the lister
    assert Location.of_source("http://x/a.jpg").path is not None  # a missing path: the lister's SOURCE_MISSING
    assert Location.of_source("s3://cams/raw").object == S3Location("cams", "raw")
    assert Location.of_source(tmp_path / "p").path == tmp_path / "p"


def test_a_location_is_parsed_once_and_passed_on() -> None:
    loc = Location.of_store("s3://bucket/ds")
    assert Location.of_store(loc) is loc and Location.of_source(loc) is loc and given(loc) == "s3://bucket/ds"
    with pytest.raises(ConfigError) as e:  # a local-only use of an object URL
        _ = loc.local
    assert e.value.code == "STORE_URL"
    with pytest.raises(TypeError):
        Location("x")  # neither a path nor an object
