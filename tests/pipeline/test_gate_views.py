"""The gate checks what is stored (issue 21): the gate score over several checks, the search on curves that
are not monotone (synthetic, with Hypothesis), and on real photos with the real models: crops at the stored
resolution, two networks batched per model, and the size in the search."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocess.core.timing import Laps
from preprocess.pipeline.batches import Embeddings, ModelBatch
from preprocess.pipeline.codecs import Candidate
from preprocess.pipeline.engines import crop_boxes
from preprocess.pipeline.engines.base import Engine, Loaded, SourceImage
from preprocess.pipeline.engines.pillow import PillowEngine
from preprocess.pipeline.extractor.build import build
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import DIP, Measure, Search, decide, gate_score, view_columns
from preprocess.pipeline.gate.measure import Rounds
from preprocess.pipeline.images import probe
from preprocess.pipeline.spec import Spec, ViewName, parse_spec

MODEL = find_manifest("mobilenetv2-imagenet")
LADDER = list(range(5, 96, 2))
T = 0.99


# --- the gate score --------------------------------------------------------------------------------------

sims = st.floats(0.5, 1.0)
views: list[ViewName] = ["whole", "crops", "tiles"]


thresholds_ = st.one_of(st.floats(0.9, 0.999), st.just(1.0))  # 1.0: "identical" (it once passed everything)


@given(st.lists(st.tuples(st.sampled_from(views), sims, thresholds_), min_size=1, max_size=3,
                unique_by=lambda c: c[0]), st.integers(1, 3), thresholds_)
def test_the_gate_score_passes_exactly_when_every_check_does(checks: list[tuple[ViewName, float, float]],
                                                              models: int, scale: float) -> None:
    thresholds = {v: t for v, _, t in checks}
    per_model = {f"m{k}": {v: s - 0.001 * k for v, s, _ in checks} for k in range(models)}
    every = all(s >= thresholds[v] for per_view in per_model.values() for v, s in per_view.items())
    assert (gate_score(per_model, thresholds, scale) >= scale) == every


@given(sims, st.floats(0.9, 0.999))
def test_one_check_scores_its_own_similarity(s: float, t: float) -> None:
    assert gate_score({"m": {"whole": s}}, {"whole": t}, t) == s


def test_a_threshold_of_one_still_fails_the_other_checks() -> None:
    """whole >= 1.0 (identical pixels) beside crops: the carry to a threshold with no deficit gave 1.0 to
    every candidate, so a spec asking for identical pixels stored the worst quality as a pass."""
    assert gate_score({"m": {"whole": 1.0, "crops": 0.5}}, {"whole": 1.0, "crops": 0.975}, 1.0) < 1.0
    assert gate_score({"m": {"whole": 0.9999, "crops": 0.99}}, {"whole": 1.0, "crops": 0.975}, 1.0) < 1.0
    assert gate_score({"m": {"whole": 1.0, "crops": 0.99}}, {"whole": 1.0, "crops": 0.975}, 1.0) == 1.0


def test_the_worst_check_decides_the_score() -> None:
    """whole 0.995 (half the deficit its 0.99 allows) and crops 0.96 (a third more than its 0.97 allows):
    the crops decide, carried over to the whole's scale."""
    got = gate_score({"m": {"whole": 0.995, "crops": 0.96}}, {"whole": 0.99, "crops": 0.97}, 0.99)
    assert got == pytest.approx(1 - 0.01 * (0.04 / 0.03), rel=1e-6) and got < 0.99


def test_view_columns() -> None:
    cols = view_columns({"a": {"whole": 0.995, "crops": 0.975}, "b": {"whole": 0.999, "crops": 0.971}}, (0, 0, 8, 8))
    assert cols["similarity_whole"] == 0.995 and cols["similarity_crops"] == 0.971
    assert math.isnan(cols["similarity_tiles"]) and cols["crop_box"] == "0,0,8,8"
    assert json.loads(cols["checks"]) == {"a": {"whole": 0.995, "crops": 0.975}, "b": {"whole": 0.999, "crops": 0.971}}
    empty = view_columns({}, None)
    assert empty["checks"] == "" and empty["crop_box"] == "" and math.isnan(empty["similarity_whole"])


# --- curves that are not monotone --------------------------------------------------------------------------


def run(curve: list[float], guess: int | None, dip: float) -> tuple[Search, list[int]]:
    s = Search(lo=0, hi=len(LADDER) - 1)
    probed: list[int] = []
    while (r := s.next_probe(guess, LADDER, T, dip=dip)) is not None:
        assert r not in probed, f"rung {r} probed twice"
        probed.append(r)
        s.update(r, curve[r], T, LADDER)
    return s, probed


def shallow(s: float) -> bool:
    return math.log10(1 - s) - math.log10(1 - T) < DIP


guesses = st.one_of(st.none(), st.integers(0, len(LADDER) - 1))
passes = st.floats(T, 1.0)
near = st.floats(1 - (1 - T) * 10 ** (DIP * 0.99), T, exclude_max=True)  # a failure within DIP of T
deep = st.floats(0.8, 1 - (1 - T) * 10 ** (DIP * 1.01))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(passes, near, deep), min_size=len(LADDER), max_size=len(LADDER)), guesses)
def test_any_curve_stores_a_measured_pass_on_a_measured_boundary(curve: list[float], guess: int | None) -> None:
    s, probed = run(curve, guess, DIP)
    if s.best is None:
        assert all(curve[r] < T for r in probed)
        return
    assert curve[s.best] >= T and s.best == min(r for r in probed if curve[r] >= T)
    assert s.best == 0 or (s.best - 1 in probed and curve[s.best - 1] < T)
    # below the stored rung, the search stopped only at a deep failure, or at the bottom
    below = [r for r in range(s.best) if r in probed]
    assert not below or any(not shallow(curve[r]) for r in below) or min(below) == 0 or \
        all(r in probed for r in range(s.best))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(passes, near), min_size=len(LADDER), max_size=len(LADDER)), guesses)
def test_where_every_failure_is_shallow_the_lowest_pass_is_found(curve: list[float], guess: int | None) -> None:
    """Passes and failures near the threshold in any order (a curve full of dips) up to a passing top
    rung: the search finds the lowest passing rung, wherever its first probes land. (Where nothing is
    found to pass, nothing is confirmed: on_fail decides.)"""
    curve = [*curve[:-1], max(curve[-1], T)]
    s, _ = run(curve, guess, DIP)
    passing = [r for r, v in enumerate(curve) if v >= T]
    assert s.best == (min(passing) if passing else None)


def test_the_fixed_camera_frame_is_stored_at_its_lowest_pass() -> None:
    """A curve shaped like issue 21's CCTV frame: passes q25, fails q27 and q37-39 (shallow failures, within
    DIP decades of the threshold's deficit), passes from q41. A monotone search that starts near q41 stops
    there; confirming each pass against the shallow failures below it goes down to q25."""
    shallow = 1 - (1 - T) * 10 ** (DIP / 2)  # a failure within DIP decades of the threshold's deficit

    def sim(q: int) -> float:
        if q < 25:
            return 0.97 - 0.001 * (25 - q)  # a deep failure
        return shallow if q in (27, 37, 39) else 0.991

    curve = [sim(q) for q in LADDER]
    guess = LADDER.index(41)
    monotone, _ = run(curve, guess, 0.0)
    confirmed, probed = run(curve, guess, DIP)
    assert monotone.best is not None and LADDER[monotone.best] == 41
    assert confirmed.best is not None and LADDER[confirmed.best] == 25
    assert LADDER.index(23) in probed  # the deep failure below it was measured: the search ends there


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 0.03), min_size=len(LADDER), max_size=len(LADDER)).map(sorted), guesses)
def test_a_monotone_curve_still_gets_its_lowest_pass(gaps: list[float], guess: int | None) -> None:
    curve = [1.0 - g for g in reversed(gaps)]
    s, _ = run(curve, guess, DIP)
    passing = [r for r, v in enumerate(curve) if v >= T]
    assert s.best == (min(passing) if passing else None)


# --- real photos, real models ------------------------------------------------------------------------------


class Counting:
    """A test double around the real extractor, only to count its model calls and rows."""

    def __init__(self, inner: Extractor) -> None:
        self.inner, self.calls, self.rows = inner, 0, 0

    def embed(self, batch: ModelBatch) -> Embeddings:
        self.calls += 1
        self.rows += len(batch)
        return self.inner.embed(batch)


class OneBatch(PillowEngine):
    """The pillow engine looking at each round's candidates in one batch, every check at once: the real engine
    with its ``staged`` switch off, as the DALI engine has it (the GPU path, which this machine cannot run)."""

    staged: ClassVar[bool] = False


def load(spec: Spec, photos: list[Path], *, staged: bool = True) -> tuple[Engine, Loaded, list[SourceImage]]:
    engine = (PillowEngine if staged else OneBatch)(spec.encode, MODEL.input, threads=1)
    srcs = []
    for p in photos:
        data = p.read_bytes()
        info = probe(data, max_pixels=10**9)
        srcs.append(SourceImage(p.name, data, hashlib.sha256(data).hexdigest(), info,
                                spec.resize.target(info.width, info.height)))
    return engine, engine.load(srcs), srcs


@pytest.fixture(scope="module")
def mobilenet() -> Extractor:
    return Extractor(build(MODEL), threads=1)


@pytest.fixture
def three(small_photos: list[Path]) -> list[Path]:
    return [p for p in small_photos if p.name in ("baboon.jpg", "fruits.jpg", "messi5.jpg")]


def test_crops_are_checked_at_the_stored_resolution(three: list[Path], mobilenet: Extractor) -> None:
    spec = parse_spec({"resize": {"size": 384}, "gate": {"views": {"whole": 0.99, "crops": 0.97}}})
    whole_only = parse_spec({"resize": {"size": 384}, "gate": {"views": {"whole": 0.99}}})
    engine, loaded, _ = load(spec, three)
    try:
        decisions, _ = decide(Measure(engine, mobilenet), loaded, spec)
        plain, _ = decide(Measure(engine, mobilenet), loaded, whole_only)
    finally:
        engine.close()
    for p, d, w in zip(loaded.prepared, decisions, plain, strict=True):
        assert d.status == "ok" and d.data is not None
        checks = d.checks["mobilenetv2-imagenet"]
        assert checks["whole"] >= 0.99 and checks["crops"] >= 0.97 and d.similarity == checks["whole"]
        assert d.worst_crop in crop_boxes(p.width, p.height)
        assert len(d.data) >= len(w.data or b"")  # checking more never stores fewer bytes
    assert sum(len(d.data or b"") for d in decisions) > sum(len(w.data or b"") for w in plain)


def test_every_model_checks_every_view_in_one_call_per_model_per_round(three: list[Path],
                                                                        mobilenet: Extractor) -> None:
    spec = parse_spec({"resize": {"size": 320}, "gate": {"models": ["mobilenetv2-imagenet", "dinov2-small"],
                                                          "views": {"whole": 0.99, "crops": 0.97}}})
    dino = Extractor(build(find_manifest("dinov2-small")), threads=1)
    first, second = Counting(mobilenet), Counting(dino)
    engine, loaded, _ = load(spec, three, staged=False)
    try:
        decisions, _ = decide(Measure(engine, first, (second,)), loaded, spec)
    finally:
        engine.close()
    for d in decisions:
        assert d.status == "ok"
        assert set(d.checks) == {"mobilenetv2-imagenet", "dinov2-small"}
        assert all(v["whole"] >= 0.99 and v["crops"] >= 0.97 for v in d.checks.values())
    probes = sum(d.probes for d in decisions)
    rounds = max(d.probes for d in decisions)
    # per model: the sources, their crops, then one call per round for every candidate's whole view + crops
    assert first.calls == second.calls == 2 + rounds and first.rows == second.rows
    assert first.rows == len(three) * (1 + 5) + probes * (1 + 5)


def test_a_staged_engine_turns_a_candidate_down_at_its_first_failing_check(three: list[Path],
                                                                          mobilenet: Extractor) -> None:
    """Check by check (the pillow engine): every candidate of the ladder passes or fails exactly as under every
    check at once; a pass is measured under every check, the same values; a failure stops at a failing check,
    so it scores at or above its full score (never a pass), in fewer rows."""
    spec = parse_spec({"resize": {"size": 320}, "gate": {"views": {"whole": 0.99, "crops": 0.97}}})
    engine, loaded, _ = load(spec, three)
    counted = Counting(mobilenet)
    rounds = Rounds(Measure(engine, counted), loaded, spec, Laps(None))
    assert rounds.staged
    p = loaded.prepared[0]
    rows = []
    try:
        for q in range(10, 96, 5):
            (enc,) = engine.encode([p], [Candidate(spec.encode.variants()[0], q)])
            before = counted.rows
            (staged,) = rounds.score([enc], [0], [p])
            rows.append(counted.rows - before)
            (full,) = rounds.score([enc], [0], [p], full=True)
            passed = full.similarity >= T
            assert (staged.similarity >= T) == passed and staged.complete == (rows[-1] == 6)
            if passed:
                assert staged.checks == full.checks and staged.worst_crop == full.worst_crop
                assert staged.embedding is not None and rows[-1] == 6
            else:
                assert full.similarity <= staged.similarity < T and rows[-1] <= 6
    finally:
        engine.close()
    assert min(rows) == 1 and max(rows) == 6  # the lowest qualities fail at their first check


def test_staged_and_one_batch_decisions_store_what_passes_every_check(three: list[Path],
                                                                      mobilenet: Extractor) -> None:
    """The same search either way: every stored candidate passes every check, measured in full, and the staged
    engine needs fewer model rows for it."""
    spec = parse_spec({"resize": {"size": 320}, "gate": {"views": {"whole": 0.99, "crops": 0.97}}})
    got = {}
    for staged in (True, False):
        counted = Counting(mobilenet)
        engine, loaded, _ = load(spec, three, staged=staged)
        try:
            decisions, _ = decide(Measure(engine, counted), loaded, spec)
        finally:
            engine.close()
        for d in decisions:
            checks = d.checks["mobilenetv2-imagenet"]
            assert d.status == "ok" and set(checks) == {"whole", "crops"}
            assert checks["whole"] >= 0.99 and checks["crops"] >= 0.97
        got[staged] = counted.rows
    assert got[True] < got[False]


def test_a_flagged_candidate_is_recorded_under_every_check(three: list[Path], mobilenet: Extractor) -> None:
    """Nothing passes (a threshold no JPEG reaches): the top rung is stored flagged, and its row records every
    check, not the one it was turned down at."""
    spec = parse_spec({"resize": {"size": 320}, "quality": {"min": 85},
                       "gate": {"views": {"whole": 0.99, "crops": 0.99999}}})
    engine, loaded, _ = load(spec, three[:1])
    try:
        (d,), _ = decide(Measure(engine, mobilenet), loaded, spec)
    finally:
        engine.close()
    assert d.status == "flagged" and d.quality == 95
    assert set(d.checks["mobilenetv2-imagenet"]) == {"whole", "crops"} and d.worst_crop is not None


def test_the_size_search_stores_the_fewest_bytes_that_pass(small_photos: list[Path], mobilenet: Extractor) -> None:
    photos = [p for p in small_photos if p.name in ("baboon.jpg", "leuvenA.jpg")]
    spec = parse_spec({"resize": {"size": 640, "sizes": [448, 320, 224]}})
    fixed = parse_spec({"resize": {"size": 640}, "gate": {"views": {"whole": 0.99}}})  # the size search's check
    engine, loaded, srcs = load(spec, photos)
    try:
        sized, outcomes = decide(Measure(engine, mobilenet), loaded, spec, sources=srcs)
        plain, _ = decide(Measure(engine, mobilenet), loaded, fixed)
    finally:
        engine.close()
    for d, w, o in zip(sized, plain, outcomes, strict=True):
        assert d.status == "ok" and d.data is not None and w.data is not None
        assert len(d.data) <= len(w.data)  # the spec's own size is one of the sizes searched
        assert d.checks["mobilenetv2-imagenet"]["whole"] >= 0.99
        stored = d.size or (loaded.prepared[0].width, loaded.prepared[0].height)
        assert max(stored) in (640, 448, 320, 224) and (d.size is None) == (o.side in (0, 640))
        assert any(" 448px " in k or " 320px " in k or " 224px " in k for k in d.tried)
    assert any(d.size is not None for d in sized)  # somewhere a smaller size won
