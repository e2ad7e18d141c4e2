from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from preprocess.cli import app
from preprocess.core.errors import ConfigError
from preprocess.pipeline.spec import Quality, Resize, Spec, default_spec_path, load_spec, parse_spec


def test_default_spec_is_the_documented_camera_pipeline() -> None:
    spec = load_spec(default_spec_path())
    assert spec.resize.mode == "long-side" and spec.resize.size == 1280 and not spec.resize.upscale
    assert spec.encode.chroma_subsampling == ("420",) and spec.encode.encoders == ("jpegli",)
    assert spec.encode.progressive
    assert (spec.quality.mode, spec.quality.min, spec.quality.max, spec.quality.step) == ("adaptive", 5, 95, 2)
    assert spec.gate.threshold == 0.99 and spec.gate.model == "mobilenetv2-imagenet"


def test_a_spec_that_names_no_views_keeps_its_fingerprint_and_says_what_it_checks(tmp_path: Path) -> None:
    """A newcomer's walkthrough (session 7): a spec that only set `[resize] size` checked the whole frame alone,
    silently, where the default spec also checks the crops. It still checks the whole frame (its fingerprint is
    the one it always had: a store made with it does not make its rows again), and `run` says so."""
    default = load_spec(default_spec_path())
    assert {k: v for k, v in Spec().model_dump().items() if k not in ("pipeline", "gate")} == {
        k: v for k, v in default.model_dump().items() if k not in ("pipeline", "gate")}
    assert Spec().fingerprint("abc") == "1a8f3b649860a530"  # pinned: every spec's defaults, as written before
    partial = tmp_path / "size.toml"
    partial.write_text("[resize]\nsize = 1024\n")
    (warning,) = load_spec(partial).warnings()
    assert "only the whole frame is checked" in warning and "crops >= 0.975" in warning and "[gate.views]" in warning
    assert default.warnings() == [] and parse_spec({"gate": {"views": {"whole": 0.99}}}).warnings() == []
    assert parse_spec({"resize": {"size": 640, "sizes": [448, 320]}}).warnings() == []  # whole frames by rule
    r = CliRunner().invoke(app, ["run", str(tmp_path / "none"), "--store", str(tmp_path / "s.icechunk"),
                                 "--spec", str(partial)])
    assert r.stderr.startswith("warning: gate.views is not given"), r.stderr


def test_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[quality]\nmin = 0\n[gate]\nthreshold = 2\nwat = 1\n")
    with pytest.raises(ConfigError) as e:
        load_spec(bad)
    text = str(e.value)
    assert str(bad) in text
    assert "quality.min" in text and "gate.threshold" in text and "gate.wat" in text
    assert e.value.code == "SPEC_INVALID"


def test_a_misspelt_field_says_what_was_meant() -> None:
    with pytest.raises(ConfigError) as e:
        parse_spec({"quality": {"maxx": 90}, "gaet": {"threshold": 0.9}, "encode": {"encoder": ["jpegli"]},
                    "resize": {"zzz": 1}})
    text = e.value.message
    assert "quality.maxx: Extra inputs are not permitted (did you mean 'max'?)" in text
    assert "gaet: Extra inputs are not permitted (did you mean 'gate'?)" in text
    assert "(did you mean 'encoders'?)" in text
    assert "resize.zzz: Extra inputs are not permitted;" in text + ";"  # nothing close: no guess


def test_bounds_and_mode_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"quality.min \(90\) is above quality.max \(40\)"):
        parse_spec({"quality": {"min": 90, "max": 40}})
    with pytest.raises(ConfigError, match=r"needs resize\.width and resize\.height"):
        parse_spec({"resize": {"mode": "fit", "width": 100}})
    with pytest.raises(ConfigError, match=r"resize.sizes: at most 16 sides"):  # 1,265 sides: 115 s, 3.25 GB a photo
        parse_spec({"resize": {"mode": "long-side", "size": 1280, "sizes": list(range(16, 1281))}})
    assert parse_spec({"resize": {"mode": "long-side", "size": 1280, "sizes": [640] * 20}}).resize.sizes == (640,) * 20


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text("[quality\n")
    with pytest.raises(ConfigError) as e:
        load_spec(tmp_path / "x.toml")
    assert e.value.code == "SPEC_SYNTAX"
    with pytest.raises(ConfigError) as e:
        load_spec(tmp_path / "missing.toml")
    assert e.value.code == "SPEC_MISSING"


def test_a_hostile_spec_or_manifest_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Nesting deeper than Python's recursion limit was a RecursionError (a 3,000-line traceback, exit 70),
    and `--spec /dev/zero` read until memory ran out (a hostile-input audit, session 8)."""
    from preprocess.pipeline.extractor.manifest import load_manifest

    deep = tmp_path / "deep.toml"
    deep.write_text('[pipeline]\nname = "x"\n[encode]\nx = ' + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_spec(deep)
    assert e.value.code == "SPEC_SYNTAX" and "nested too deeply" in e.value.message
    (tmp_path / "inline.toml").write_text("a = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_manifest(tmp_path / "inline.toml")
    assert e.value.code == "MODEL_MANIFEST" and "nested too deeply" in e.value.message
    with pytest.raises(ConfigError) as e:
        load_spec("/dev/zero")
    assert e.value.code == "SPEC_UNREADABLE" and "over 1024 KB" in e.value.message


@given(w=st.integers(1, 20000), h=st.integers(1, 20000), size=st.integers(16, 4096))
def test_long_side_never_upscales_and_keeps_aspect(w: int, h: int, size: int) -> None:
    tw, th = Resize(mode="long-side", size=size).target(w, h)
    assert max(tw, th) <= max(size, max(w, h) if max(w, h) <= size else size)
    assert tw <= w and th <= h
    if max(w, h) > size:
        assert max(tw, th) == size
        exact_short = min(w, h) * size / max(w, h)
        assert abs(min(tw, th) - max(1.0, exact_short)) <= 0.5 + 1e-9


@given(lo=st.integers(1, 100), hi=st.integers(1, 100), step=st.integers(1, 50))
def test_ladder_is_ascending_within_bounds_and_ends_at_max(lo: int, hi: int, step: int) -> None:
    if lo > hi:
        lo, hi = hi, lo
    ladder = Quality(min=lo, max=hi, step=step).ladder()
    assert ladder == sorted(set(ladder))
    assert ladder[0] == lo and ladder[-1] == hi


@given(threshold=st.floats(0.5, 1.0), step=st.integers(1, 20), size=st.integers(16, 4000),
       sub=st.sampled_from(["444", "422", "420"]), fmt=st.sampled_from(["jpeg", "webp", "avif", "jxl"]))
def test_spec_round_trips_and_fingerprint_ignores_names(threshold: float, step: int, size: int, sub: str,
                                                        fmt: str) -> None:
    encode = {"format": fmt, "encoders": ["libjpeg"], "chroma_subsampling": sub} if fmt == "jpeg" else {"format": fmt}
    spec = parse_spec({"resize": {"size": size}, "quality": {"step": step}, "gate": {"threshold": threshold},
                       "encode": encode})
    again = parse_spec(spec.to_dict())
    assert again == spec
    renamed = parse_spec({**spec.to_dict(), "pipeline": {"name": "other", "description": "x"},
                          "batch": {"size": 7}})
    assert renamed.fingerprint("m") == spec.fingerprint("m")
    assert spec.fingerprint("m") != spec.fingerprint("other-model")


def test_every_bundled_spec_is_valid() -> None:
    for path in sorted(default_spec_path().parent.glob("*.toml")):
        spec = load_spec(path)
        assert isinstance(spec, Spec)
        tomllib.loads(path.read_text())


def test_the_avif_spec_is_the_default_with_another_format() -> None:
    """pipelines/avif.toml is camera.toml with `format = "avif"`: nothing else changed."""
    camera_text = default_spec_path().read_text()
    data = tomllib.loads(camera_text)
    data["encode"]["format"] = "avif"
    avif = load_spec(default_spec_path().parent / "avif.toml")
    assert parse_spec(data).fingerprint("m") == avif.fingerprint("m") != load_spec(default_spec_path()).fingerprint("m")
    assert avif.encode.format == "avif" and avif.encode.encoders == ("libavif",) and avif.encode.speed == 6
    avif_data = tomllib.loads((default_spec_path().parent / "avif.toml").read_text())
    assert {k: v for k, v in avif_data.items() if k != "pipeline"} == {k: v for k, v in data.items() if k != "pipeline"}


def test_a_spec_that_changes_only_its_format_is_valid_for_every_format() -> None:
    data = tomllib.loads(default_spec_path().read_text())
    for fmt in ("jpeg", "webp", "avif", "jxl"):
        assert parse_spec({**data, "encode": {**data["encode"], "format": fmt}}).encode.format == fmt


def test_specs_that_store_the_same_bytes_share_a_fingerprint() -> None:
    base = parse_spec({})
    same: list[dict[str, Any]] = [
        {"encode": {"encoders": "jpegli", "chroma_subsampling": ["420"]}},  # a string, a list, the defaults
        {"quality": {"value": 50}},  # an adaptive spec's unused fixed value
        {"encode": {"progressive": True, "format": "jpeg"}}]
    for s in same:
        assert parse_spec(s).fingerprint("m") == base.fingerprint("m"), s
    other: list[dict[str, Any]] = [
        {"encode": {"progressive": False, "encoders": ["libjpeg"]}}, {"quality": {"step": 1}},
        {"encode": {"encoders": ["jpegli", "libjpeg"]}}, {"encode": {"format": "avif", "speed": 5}}]
    assert len({parse_spec(s).fingerprint("m") for s in other} | {base.fingerprint("m")}) == len(other) + 1


@pytest.mark.parametrize(("encode", "field", "says"), [
    ({"format": "avif", "encoders": ["jpegli"]}, "encode.encoders", "'jpegli' is not an encoder of format 'avif'"),
    ({"format": "webp", "chroma_subsampling": "444"}, "encode.chroma_subsampling", "'444' is not a subsampling"),
    ({"format": "jpeg", "speed": 3}, "encode.speed", "does not apply to format 'jpeg'"),
    ({"format": "avif", "speed": 11}, "encode.speed", "less than or equal to 10"),
    ({"format": "jxl", "effort": 0}, "encode.effort", "greater than or equal to 1"),
    ({"format": "gif"}, "encode.format", "'jpeg', 'webp', 'avif' or 'jxl'"),
    ({"encoders": []}, "encode.encoders", "name at least one encoder"),
    ({"encoders": ["libjpeg", "libjpeg"]}, "encode.encoders", "listed twice"),
    ({"chroma_subsampling": "444"}, "encode.chroma_subsampling", "jpegli encodes 420 only"),
    ({"chroma_subsampling": ["420", "444"]}, "encode.chroma_subsampling", "no listed encoder makes 444"),
    ({"encoders": ["libjpeg"], "chroma_subsampling": ["420", "420"]}, "encode.chroma_subsampling", "listed twice"),
    ({"progressive": False}, "encode.progressive", 'use encoders = ["libjpeg"]'),
])
def test_a_bad_encoder_option_is_a_spec_error_naming_the_field(tmp_path: Path, encode: dict[str, object], field: str,
                                                               says: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[encode]\n" + "\n".join(f"{k} = {tomllib_value(v)}" for k, v in encode.items()) + "\n")
    with pytest.raises(ConfigError) as e:
        load_spec(bad)
    assert e.value.code == "SPEC_INVALID"
    assert str(bad) in str(e.value) and f"{field}: " in str(e.value) and says in str(e.value)
    assert "encode: encode." not in str(e.value)  # the field is named once


def tomllib_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(tomllib_value(x) for x in v) + "]"
    return str(v)


def test_variants_cross_encoders_with_chroma() -> None:
    spec = parse_spec({"encode": {"encoders": ["libjpeg", "jpegli"], "chroma_subsampling": ["420", "444"]}})
    assert [(v.encoder, v.chroma) for v in spec.encode.variants()] == [
        ("libjpeg", "420"), ("libjpeg", "444"), ("jpegli", "420")]  # jpegli encodes 4:2:0 only
    assert parse_spec({"encode": {"format": "jxl"}}).encode.variants()[0].chroma == ""


def test_an_empty_spec_is_refused_not_silently_all_defaults(tmp_path: Path) -> None:
    """Issue 16, item 11: an empty file (or only comments) is SPEC_EMPTY, exit 2 from the CLI."""
    for text in ("", "# nothing here\n\n"):
        empty = tmp_path / "empty.toml"
        empty.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_spec(empty)
        assert e.value.code == "SPEC_EMPTY" and e.value.path == str(empty) and e.value.exit_code == 2
        assert "pipelines/camera.toml" in e.value.hint


def test_a_missing_model_names_the_spec_file_and_the_field(tmp_path: Path) -> None:
    from preprocess.pipeline.process import plan

    spec = tmp_path / "spec.toml"
    spec.write_text(f'[gate]\nmodel = "{tmp_path / "nope.toml"}"\n')
    with pytest.raises(ConfigError) as e:
        plan(str(spec), engine="pillow", device="cpu")
    assert e.value.code == "MODEL_MISSING" and e.value.path == str(spec)
    assert "gate.model" in e.value.message and str(tmp_path / "nope.toml") in e.value.message
    assert str(spec) in e.value.hint
    spec.write_text('[gate]\nmodel = "no-such-model"\n')
    with pytest.raises(ConfigError) as e:
        plan(str(spec), engine="pillow", device="cpu")
    assert e.value.code == "MODEL_UNKNOWN" and e.value.path == str(spec) and "gate.model" in e.value.message


def test_an_unknown_format_is_the_only_error_of_its_section(tmp_path: Path) -> None:
    """issue 23, bug 7: a spec copied from camera.toml with ``format = "png"`` (its chroma and encoder
    written as one value each) also reported ``encode.chroma_subsampling`` and ``encode.encoders``."""
    p = tmp_path / "png.toml"
    p.write_text('[encode]\nformat = "png"\nencoders = "jpegli"\nchroma_subsampling = "420"\n')
    with pytest.raises(ConfigError) as e:
        load_spec(p)
    assert "encode.format" in e.value.message
    assert "chroma_subsampling" not in e.value.message and "encoders" not in e.value.message


def test_bundled_specs_are_found_by_name_or_their_path_from_anywhere(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 23, bug 8: ``--spec pipelines/archive.toml`` worked only from the repository's root, and
    ``--spec archive`` was refused with a hint that did not list the bundled specs."""
    from preprocess.pipeline.spec import bundled_specs, find_spec

    monkeypatch.chdir(tmp_path)
    archive = default_spec_path().parent / "archive.toml"
    for name in ("archive", "archive.toml", "pipelines/archive.toml"):
        assert find_spec(name) == archive, name
        assert load_spec(name) == load_spec(archive), name
    (tmp_path / "archive.toml").write_text('[pipeline]\nname = "mine"\n')  # a file by that name wins
    assert load_spec("archive.toml").pipeline.name == "mine"
    assert {"camera", "archive", "avif", "gpu"} <= set(bundled_specs())
    with pytest.raises(ConfigError) as e:
        load_spec("archiv")
    assert e.value.code == "SPEC_MISSING" and "archive" in e.value.hint and "camera" in e.value.hint
