"""The gate's views, models and sizes in a spec: the older spelling still parses and keeps every
fingerprint (rows are keyed by it), the new one says what it checks, and mistakes name their field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preprocess.core.errors import ConfigError
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.spec import AUTO_SIDES, load_spec, parse_spec
from preprocess.rows.spec_toml import dumps
from tests.paths import ROOT

BEFORE = ROOT / "tests" / "data" / "specs-before-21"
MOBILENET = find_manifest("mobilenetv2-imagenet").weights_sha256()
# (fingerprint, digest) of the bundled specs as written before issue 21: a store made with them keeps its rows
PINNED = {
    "camera": ("e94423c9233aa569", "083641bc7ed88f0076ea1d2cb5ca204d3d7b535de131d212e1db681adffdd86b"),
    "avif": ("64a50f6899618957", "4e0a5b9c9ee5e45d7c05598227a174297dd8295a5c3643a8dec86d10e474b5f9"),
    "archive": ("a2132827a9d906e4", "72691fc0842b62050b568c951770d4346045bcf867355f1b4c651d32ff73fb24"),
    "gpu": ("27dc9c3f9e82781d", "aeb8b9d6b1cf2ba95cea5e26e1a37b07a14f822f52c000eed07c82472b43216b"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_specs_written_before_views_keep_their_fingerprint_and_digest(name: str) -> None:
    spec = load_spec(BEFORE / f"{name}.toml")
    assert (spec.fingerprint(MOBILENET), spec.digest()) == PINNED[name]
    assert spec.fingerprint([MOBILENET]) == PINNED[name][0]  # one model, given as a list
    assert spec.gate.models == ("mobilenetv2-imagenet",) and spec.gate.views.items() == [("whole", spec.gate.threshold)]
    again = parse_spec(spec.to_dict())  # what provenance records parses back to the same spec
    assert again == spec and again.fingerprint(MOBILENET) == PINNED[name][0]


def test_the_stores_of_older_versions_keep_their_keys() -> None:
    """The spec that wrote tests/data/store-d87bf7b (its rows say f0f52283a6036e73), and a tiles spec."""
    tiny = parse_spec({"pipeline": {"name": "layers-tiny"}, "resize": {"mode": "long-side", "size": 64},
                       "gate": {"threshold": 0.9}, "batch": {"size": 8}})
    assert tiny.fingerprint(MOBILENET) == "f0f52283a6036e73"
    tiles = parse_spec({"gate": {"view": "tiles", "tiles_combine": "min"}})
    assert tiles.fingerprint(MOBILENET) == "986b895911ec6037"
    assert tiles.gate.views.items() == [("tiles", 0.99)]


def test_the_new_spelling_of_an_old_gate_is_the_same_spec() -> None:
    old = parse_spec({"gate": {"model": "mobilenetv2-imagenet", "threshold": 0.99}})
    new = parse_spec({"gate": {"models": ["mobilenetv2-imagenet"], "views": {"whole": 0.99}}})
    assert new == old and new.fingerprint("m") == old.fingerprint("m") and new.digest() == old.digest()
    assert "views" not in new.to_dict()["gate"]  # written in the older spelling


def test_views_models_and_crops_are_decisive() -> None:
    base = parse_spec({})
    specs = [base, parse_spec({"gate": {"views": {"whole": 0.99, "crops": 0.97}}}),
             parse_spec({"gate": {"views": {"whole": 0.99, "crops": 0.96}}}),
             parse_spec({"gate": {"views": {"whole": 0.99, "crops": 0.97}, "crops": {"grids": [2, 3]}}}),
             parse_spec({"gate": {"views": {"crops": 0.97}}}),
             parse_spec({"gate": {"models": ["mobilenetv2-imagenet", "dinov2-small"]}})]
    prints = {s.fingerprint(["a", "b"][:len(s.gate.models)]) for s in specs}
    assert len(prints) == len(specs)
    # settings of a view that is not checked change nothing
    assert parse_spec({"gate": {"crops": {"grids": [3]}, "tiles_combine": "min"}}).fingerprint("a") == \
        base.fingerprint("a")


def test_several_models_and_views(tmp_path: Path) -> None:
    text = """[gate]
models = ["mobilenetv2-imagenet", "dinov2-small"]
on_fail = "flag"
[gate.views]
whole = 0.99
crops = 0.97
[gate.crops]
grids = [2, 3]
"""
    (tmp_path / "s.toml").write_text(text)
    spec = load_spec(tmp_path / "s.toml")
    gate = spec.gate
    assert gate.model == "mobilenetv2-imagenet" and gate.threshold == 0.99 and gate.view == "whole"
    assert gate.checks() == [("mobilenetv2-imagenet", "whole", 0.99), ("mobilenetv2-imagenet", "crops", 0.97),
                             ("dinov2-small", "whole", 0.99), ("dinov2-small", "crops", 0.97)]
    written = dumps(spec.to_dict())  # the web UI's spec download: the same spec, the same fingerprint
    assert parse_spec(tomllib.loads(written)) == spec


@pytest.mark.parametrize(("gate", "says"), [
    ({"views": {"whole": 0.99}, "threshold": 0.99}, "not both"),
    ({"models": ["a"], "model": "a"}, "not both"),
    ({"views": {}}, "name at least one view"),
    ({"views": {"crop": 0.97}}, "did you mean 'crops'"),
    ({"views": {"crops": 1.5}}, "less than or equal to 1"),
    ({"models": []}, "name at least one model"),
    ({"models": ["a", "a"]}, "listed twice"),
    ({"view": "crops"}, "gate.views"),
    ({"crops": {"grids": [2, 2]}}, "listed twice"),
    ({"crops": {"grids": [9]}}, "less than or equal to 8"),
])
def test_a_bad_gate_names_its_field(tmp_path: Path, gate: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_spec({"gate": gate}, source="s.toml")
    assert e.value.code == "SPEC_INVALID" and "gate" in str(e.value) and says in str(e.value), str(e.value)


def test_sizes_in_the_search() -> None:
    spec = parse_spec({"resize": {"size": 1280, "sizes": [960, 640, 320]}})
    assert spec.resize.sides() == [1280, 960, 640, 320]
    assert spec.resize.targets(2560, 1600) == [(1280, 800), (960, 600), (640, 400), (320, 200)]
    assert spec.resize.targets(700, 500) == [(700, 500), (640, 457), (320, 229)]  # never upscaled, no twice
    auto = parse_spec({"resize": {"size": 1280, "sizes": "auto"}})
    assert auto.resize.sides() == [1280, *(s for s in AUTO_SIDES if s < 1280)] and min(auto.resize.sides()) == 224
    listed = parse_spec({"resize": {"size": 1280, "sizes": [s for s in AUTO_SIDES if s < 1280]}})
    assert auto.fingerprint("m") == listed.fingerprint("m") != parse_spec({}).fingerprint("m")  # the same bytes
    assert parse_spec(auto.to_dict()) == auto and "sizes" not in parse_spec({}).to_dict()["resize"]


@pytest.mark.parametrize(("data", "says"), [
    ({"resize": {"size": 640, "sizes": [1280]}}, "at most resize.size"),
    ({"resize": {"mode": "none", "sizes": "auto"}}, "needs mode long-side"),
    ({"resize": {"sizes": "auto"}, "gate": {"views": {"whole": 0.99, "crops": 0.97}}}, "whole view only"),
])
def test_bad_sizes_are_spec_errors(data: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_spec(data)
    assert says in str(e.value), str(e.value)


@given(st.lists(st.integers(16, 1280), min_size=1, max_size=6), st.integers(16, 6000), st.integers(16, 6000))
def test_every_target_fits_its_side(sides: list[int], w: int, h: int) -> None:
    resize = parse_spec({"resize": {"size": 1280, "sizes": sides}}).resize
    targets = resize.targets(w, h)
    assert len(set(targets)) == len(targets) and targets == sorted(targets, reverse=True)
    assert all(max(t) <= max(1280, w, h) and t[0] <= w and t[1] <= h for t in targets)
