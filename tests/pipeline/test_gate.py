"""The gate on real photos with the real model: the choice among variants, and what happens when
nothing passes (on_fail), down to the rows the Processor makes of it."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from preprocess.pipeline.codecs import Candidate
from preprocess.pipeline.engines import make_engine
from preprocess.pipeline.engines.base import Engine, Loaded, SourceImage
from preprocess.pipeline.extractor.build import build
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import Measure, Track, decide
from preprocess.pipeline.images import probe
from preprocess.pipeline.process import Processor, plan
from preprocess.pipeline.spec import Spec, parse_spec
from preprocess.sources.files import read_source

MODEL = find_manifest("mobilenetv2-imagenet")


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(build(MODEL), threads=1)


def load(spec: Spec, photos: list[Path]) -> tuple[Engine, Loaded]:
    engine = make_engine("pillow", "cpu", encode=spec.encode, view=MODEL.input, threads=1)
    srcs = []
    for p in photos:
        data = p.read_bytes()
        info = probe(data, max_pixels=10**9)
        srcs.append(SourceImage(p.name, data, hashlib.sha256(data).hexdigest(), info,
                                spec.resize.target(info.width, info.height)))
    return engine, engine.load(srcs)


@pytest.fixture
def three(small_photos: list[Path]) -> list[Path]:
    return [p for p in small_photos if p.name in ("baboon.jpg", "fruits.jpg", "messi5.jpg")]


def test_every_variant_is_searched_and_the_fewest_stored_bytes_win(three: list[Path], extractor: Extractor) -> None:
    spec = parse_spec({"resize": {"size": 320}, "gate": {"views": {"whole": 0.99}},  # one check: its scores in tried
                       "encode": {"encoders": ["jpegli", "libjpeg"], "chroma_subsampling": ["420", "444"]}})
    engine, loaded = load(spec, three)
    try:
        decisions, outcomes = decide(Measure(engine, extractor), loaded, spec)
        for p, d, o in zip(loaded.prepared, decisions, outcomes, strict=True):
            assert d.status == "ok" and d.data is not None and d.candidate is not None
            finals: dict[str, int] = {}
            for v in spec.encode.variants():  # each variant's lowest passing quality, in its stored form
                passing = [int(k.rsplit(" q", 1)[1]) for k, s in d.tried.items()
                           if k.startswith(f"{v.label} q") and s >= spec.gate.threshold]
                assert passing, f"{v.label} was not searched to a pass"
                cand = Candidate(v, min(passing))
                finals[v.label] = len(engine.finish([p], engine.encode([p], [cand]))[0])
                assert o.chosen[Track(v)] == spec.quality.ladder().index(min(passing))
            assert len(d.data) == min(finals.values())
            assert finals[d.candidate.variant.label] == len(d.data)
    finally:
        engine.close()


@pytest.mark.parametrize("on_fail", ["reject", "source", "flag"])
def test_when_nothing_passes_on_fail_decides(three: list[Path], on_fail: str) -> None:
    spec = parse_spec({"resize": {"size": 320}, "gate": {"threshold": 0.99999, "on_fail": on_fail},
                       "quality": {"min": 85, "max": 95, "step": 5}})
    proc = Processor(replace(plan(None, "pillow", "cpu"), spec=spec), job_id="t", lanes=1)
    try:
        res = proc.process([read_source(f, max_bytes=1 << 30) for f in three])
    finally:
        proc.close()
    if on_fail == "reject":
        assert not res.items and len(res.failures) == 3
        for f in res.failures:
            assert f.code == "E_GATE_REJECTED" and "jpegli 4:2:0 q95" in f.message and "0.99999" in f.message
    elif on_fail == "source":
        assert not res.failures and {r.status for r in res.items} == {"source"}
        for r, photo in zip(res.items, three, strict=True):
            assert r.jpeg == photo.read_bytes() and r.quality == 0 and (r.encoder, r.chroma) == ("", "")
    else:
        assert {(r.status, r.quality, r.encoder) for r in res.items} == {("flagged", 95, "jpegli")}
        assert all(r.similarity < 0.99999 for r in res.items)
