"""The quality search on its own (pure: a similarity curve stands in for encode + model).

The real gate runs this same ``Search`` over measured similarities (tests/drivers/test_run.py checks
those end to end); here curves of every shape check the search's invariants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocess.pipeline.gate import DEFICIT_SLOPE, DIP, SETTLE, Search
from preprocess.pipeline.spec import Quality

LADDER = Quality(min=30, max=95, step=5).ladder()  # 30, 35, ..., 95: the grid the curves below were measured on
T = 0.99


def run(curve: list[float], guess: int | None, ladder: list[int] = LADDER) -> tuple[Search, list[int]]:
    s = Search(lo=0, hi=len(ladder) - 1)
    probed: list[int] = []
    while (r := s.next_probe(guess, ladder, T)) is not None:
        assert r not in probed, f"rung {r} probed twice"
        probed.append(r)
        s.update(r, curve[r], T, ladder)
    return s, probed


curves = st.lists(st.floats(0.9, 1.0), min_size=len(LADDER), max_size=len(LADDER))
guesses = st.one_of(st.none(), st.integers(0, len(LADDER) - 1))


@settings(max_examples=400, deadline=None)
@given(curves, guesses)
def test_any_curve_ends_at_a_measured_boundary(curve: list[float], guess: int | None) -> None:
    s, probed = run(curve, guess)
    assert len(probed) <= len(LADDER)
    if s.best is None:
        assert all(curve[r] < T for r in probed)
        return
    assert curve[s.best] >= T  # what is stored was measured to pass ...
    assert s.best == 0 or (s.best - 1 in probed and curve[s.best - 1] < T)  # ... and the rung below to fail
    assert s.best == min(r for r in probed if curve[r] >= T)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 0.02), min_size=len(LADDER), max_size=len(LADDER)).map(sorted), guesses)
def test_a_monotone_curve_gets_its_lowest_passing_rung(gaps: list[float], guess: int | None) -> None:
    curve = [1.0 - g for g in reversed(gaps)]  # similarity rises with quality
    s, _ = run(curve, guess)
    passing = [r for r, v in enumerate(curve) if v >= T]
    assert s.best == (min(passing) if passing else None)


@given(st.floats(0.9, 0.9999), guesses)
def test_a_curve_that_follows_the_prior_takes_at_most_three_probes(at_30: float, guess: int | None) -> None:
    # log10(1 - s) falls by DEFICIT_SLOPE per quality point: the model the search extrapolates with
    curve = [1 - 10 ** (math.log10(1 - at_30) - DEFICIT_SLOPE * (q - 30)) for q in LADDER]
    s, probed = run(curve, guess)
    assert len(probed) <= 3 + (guess is not None)
    passing = [r for r, v in enumerate(curve) if v >= T]
    assert s.best == (min(passing) if passing else None)


# Measured curves of the bundled photos: similarity x 10^4 at q30, 35, ..., 95 (MobileNetV2, long side
# 1280, 4:2:0), from the pillow engine. Real curves are noisy and not monotone.
MEASURED_E4 = {
    "camera/Autumn.jpg": [9885, 9901, 9928, 9940, 9952, 9965, 9966, 9981, 9978, 9977, 9987, 9991, 9993, 9994],
    "camera/BytheWater.jpg": [9965, 9977, 9989, 9990, 9991, 9992, 9994, 9995, 9997, 9998, 9998, 9997, 9999, 9999],
    "camera/ColdRipple.jpg": [9912, 9948, 9952, 9978, 9982, 9987, 9984, 9987, 9993, 9996, 9996, 9996, 9998, 9998],
    "camera/ColorfulCups.jpg": [9823, 9861, 9916, 9928, 9952, 9967, 9973, 9983, 9987, 9991, 9996, 9996, 9999, 10000],
    "camera/DarkestHour.jpg": [9285, 9461, 9710, 9718, 9759, 9806, 9798, 9801, 9809, 9830, 9897, 9933, 9978, 9992],
    "camera/EveningGlow.jpg": [9946, 9972, 9975, 9974, 9982, 9987, 9986, 9993, 9994, 9996, 9997, 9997, 9998, 9999],
    "camera/FallenLeaf.jpg": [9915, 9936, 9940, 9969, 9976, 9969, 9983, 9989, 9988, 9991, 9994, 9996, 9998, 9998],
    "camera/Grey.jpg": [9957, 9969, 9977, 9984, 9990, 9990, 9992, 9995, 9996, 9998, 9999, 9999, 10000, 10000],
    "camera/Kite.jpg": [9926, 9933, 9953, 9956, 9963, 9975, 9970, 9978, 9978, 9987, 9986, 9990, 9995, 9997],
    "camera/OneStandsOut.jpg": [9960, 9970, 9983, 9980, 9985, 9988, 9990, 9992, 9994, 9995, 9994, 9998, 9997, 9999],
    "camera/Path.jpg": [9948, 9969, 9984, 9950, 9988, 9985, 9987, 9991, 9992, 9993, 9997, 9996, 9997, 9998],
    "camera/summer_1am.jpg": [9778, 9824, 9849, 9849, 9843, 9880, 9881, 9892, 9920, 9944, 9976, 9985, 9995, 9998],
    "opencv/aero3.jpg": [9824, 9859, 9866, 9844, 9895, 9917, 9913, 9962, 9971, 10000, 9980, 9991, 9993, 9996],
    "opencv/apple.jpg": [9717, 9690, 9869, 9901, 9905, 9895, 9921, 9939, 9952, 9960, 9974, 10000, 9994, 9996],
    "opencv/baboon.jpg": [9935, 9937, 9962, 9960, 9967, 9974, 9981, 9981, 9986, 9992, 9993, 9993, 9997, 9998],
    "opencv/building.jpg": [9973, 9977, 9971, 9983, 9985, 9980, 9988, 9994, 9995, 10000, 9997, 9998, 9999, 9999],
    "opencv/butterfly.jpg": [9917, 9949, 9953, 9960, 9929, 9937, 9965, 9981, 9991, 9998, 9996, 9995, 9998, 9998],
    "opencv/fruits.jpg": [9735, 9785, 9877, 9899, 9920, 9931, 9942, 9958, 9975, 9984, 9982, 9988, 9995, 9997],
    "opencv/graf1.png": [9960, 9967, 9978, 9978, 9980, 9984, 9989, 9990, 9992, 9994, 9995, 9997, 9998, 9998],
    "opencv/home.jpg": [9906, 9918, 9925, 9936, 9925, 9951, 9964, 9980, 9992, 10000, 9992, 9996, 9997, 9998],
    "opencv/leuvenA.jpg": [9731, 9827, 9865, 9879, 9907, 9915, 9922, 9945, 9948, 9964, 9979, 9990, 9994, 9996],
    "opencv/leuvenB.jpg": [9788, 9817, 9860, 9872, 9902, 9924, 9932, 9950, 9973, 9974, 9984, 9991, 9995, 9996],
    "opencv/messi5.jpg": [9931, 9942, 9952, 9951, 9966, 9969, 9977, 9980, 9986, 9989, 9991, 9994, 9993, 9998],
    "opencv/orange.jpg": [9799, 9840, 9885, 9906, 9893, 9902, 9911, 9914, 9933, 9939, 9971, 10000, 9992, 9996],
    "skimage/astronaut.png": [9923, 9939, 9961, 9965, 9962, 9974, 9970, 9977, 9979, 9988, 9993, 9995, 9995, 9998],
    "skimage/chelsea.png": [9739, 9813, 9851, 9884, 9891, 9905, 9910, 9937, 9949, 9965, 9979, 9985, 9991, 9996],
    "skimage/coffee.png": [9824, 9860, 9898, 9938, 9928, 9949, 9948, 9973, 9975, 9977, 9988, 9989, 9994, 9997],
    "skimage/hubble.jpg": [9953, 9933, 9914, 9970, 9962, 9968, 9971, 9989, 9987, 9986, 9987, 9992, 9996, 9999],
    "skimage/motorcycle_left.png": [9916, 9933, 9931, 9941, 9965, 9972, 9971, 9975, 9980, 9986, 9987, 9992, 9995, 9998],
    "skimage/rocket.jpg": [9754, 9801, 9861, 9854, 9918, 9938, 9937, 9948, 9956, 9970, 9983, 9992, 9992, 9997],
}
MEASURED = {name: [v / 1e4 for v in curve] for name, curve in MEASURED_E4.items()}


def bisection(curve: list[float], guess: int | None) -> tuple[int | None, int]:
    """The search this one replaced: the guess, then midpoints."""
    s = Search(lo=0, hi=len(LADDER) - 1)
    n = 0
    while s.lo <= s.hi:
        r = guess if guess is not None and not s.tried and s.lo <= guess <= s.hi else (s.lo + s.hi) // 2
        s.update(r, curve[r], T, LADDER)
        n += 1
    return s.best, n


def test_on_measured_curves_it_takes_fewer_probes_than_bisection() -> None:
    for guess in (None, 0, 2, 5):
        ours = [len(run(c, guess)[1]) for c in MEASURED.values()]
        theirs = [bisection(c, guess)[1] for c in MEASURED.values()]
        assert sum(ours) < 0.9 * sum(theirs), (guess, sum(ours), sum(theirs))
        same = sum(run(c, guess)[0].best == bisection(c, guess)[0] for c in MEASURED.values())
        assert same >= len(MEASURED) - 2  # where a curve is not monotone the two may stop at different dips


# -- the rules added with the finer ladder: settling, flattening, learned slopes, per-variant priors ----


def test_a_pass_just_above_the_threshold_settles_the_search() -> None:
    ladder = list(range(5, 96, 2))
    s = Search(lo=0, hi=len(ladder) - 1)
    s.update(10, T + SETTLE / 2, T, ladder)  # passes, but only just
    assert s.next_probe(None, ladder, T, settle=SETTLE) is None  # the rung below would fail: done
    assert s.next_probe(None, ladder, T, settle=0.0) is not None  # without settling it looks below
    s2 = Search(lo=0, hi=len(ladder) - 1)
    s2.update(10, T + 3 * SETTLE, T, ladder)  # a clear pass keeps looking below
    assert s2.next_probe(None, ladder, T, settle=SETTLE) is not None


def test_failures_on_a_flattening_curve_take_longer_strides() -> None:
    """Two failures 4+ points apart whose deficit fell less than the prior slope says: the next probe
    extrapolates with their (flatter) secant, so it lands further up instead of creeping."""
    ladder = list(range(5, 96, 2))
    s = Search(lo=0, hi=len(ladder) - 1)
    s.update(ladder.index(15), 0.960, T, ladder)
    s.update(ladder.index(33), 0.970, T, ladder)  # 18 points up, the deficit fell only a little
    prior = Search(lo=s.lo, hi=s.hi, tried={33: 0.970})  # the same failure, seen alone
    assert s.next_probe(None, ladder, T) > prior.next_probe(None, ladder, T)  # type: ignore[operator]


def test_a_search_measures_its_slope_over_every_rung() -> None:
    s = Search(lo=0, hi=10, tried={20: 0.99, 30: 0.999, 40: 0.9999})  # one decade per 10 points
    assert s.slope() == pytest.approx(0.1)
    assert Search(lo=0, hi=10, tried={20: 0.99}).slope() is None  # one rung: no slope
    assert Search(lo=0, hi=10, tried={20: 0.99, 22: 0.999}).slope() is None  # too close to tell


def test_priors_are_per_variant_medians_over_a_window() -> None:
    from preprocess.pipeline.codecs import Variant
    from preprocess.pipeline.gate import GateStats, Outcome, Track
    from preprocess.pipeline.spec import parse_spec

    spec = parse_spec({"encode": {"encoders": ["jpegli", "libjpeg"]}})
    jpegli, libjpeg = (Track(v) for v in spec.encode.variants())
    stats = GateStats(spec, window=3)
    assert stats.guess() is None and stats.priors() == {}
    stats.record([Outcome({jpegli: r, libjpeg: 2 * r}, {jpegli: 0.01 * r}) for r in (1, 2, 3, 10)])
    priors = stats.priors()
    assert priors[jpegli].guess == 3 and priors[libjpeg].guess == 6  # medians of the last 3 (2, 3, 10)
    assert priors[jpegli].slope == pytest.approx(0.03) and priors[libjpeg].slope == DEFICIT_SLOPE
    assert stats.guess() == 3  # the primary's
    assert Variant("jpeg", "jpegli", "420") == jpegli.variant


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_the_first_guess_is_where_the_nearest_alike_images_crossed() -> None:
    """A fleet's cameras send the same scenes again: the first probe for an image is the median rung of
    the (up to NEIGHBOURS) earlier images whose sources embed within NEIGHBOUR of it; an image like
    none of them starts at the median of all."""
    from preprocess.pipeline.gate import NEIGHBOUR, NEIGHBOURS, GateStats, Outcome, Track
    from preprocess.pipeline.spec import Spec

    spec = Spec()
    (v,) = (Track(x) for x in spec.encode.variants())
    dark, bright, other = _unit([1, 0, 0]), _unit([0, 1, 0]), _unit([0, 0, 1])
    stats = GateStats(spec)
    assert stats.priors().get(v) is None
    near_dark = [_unit([1, 0.05 * k, 0]) for k in range(NEIGHBOURS + 2)]  # all alike, nearest first
    stats.record([Outcome({v: 30 + k}, reference=e) for k, e in enumerate(near_dark)])
    stats.record([Outcome({v: r}, reference=bright) for r in (2, 3, 4)])
    prior = stats.priors()[v]
    rungs = [2, 3, 4, *range(30, 30 + NEIGHBOURS + 2)]
    assert prior.guess == int(np.median(rungs))  # the median over all, rounded down
    assert prior.first(dark) == int(np.median(range(30, 30 + NEIGHBOURS)))  # the nearest only, not 35, 36
    assert prior.first(dark) != prior.guess
    assert prior.first(_unit([0.1, 1, 0])) == 3
    assert float(other @ dark) < NEIGHBOUR and prior.first(other) == prior.guess


def test_seeded_embeddings_guide_the_first_batch() -> None:
    """A job seeds its stats with the branch's stored rows (qualities and embeddings): its first
    images already start where stored images like them crossed."""
    from preprocess.pipeline.gate import GateStats, Track
    from preprocess.pipeline.spec import Spec

    spec = Spec()
    (v,) = (Track(x) for x in spec.encode.variants())
    ladder = spec.quality.ladder()
    stats = GateStats(spec)
    stats.seed([ladder[3], ladder[4], ladder[40], ladder[41], ladder[42]],
               np.stack([_unit([1, 0]), _unit([1, 0.1]), _unit([0, 1]), _unit([0.1, 1]), _unit([0.05, 1])]))
    prior = stats.priors()[v]
    assert prior.first(_unit([1, 0.02])) == 3  # the median of rungs 3 and 4, as an int
    assert prior.first(_unit([0, 1])) == 41
    stats2 = GateStats(spec)
    stats2.seed([ladder[3], ladder[40]])  # no embeddings (another model's rows): the median only
    assert stats2.priors()[v].first(_unit([1, 0])) == stats2.priors()[v].guess


def test_seeded_rows_are_credited_to_the_variant_that_made_them() -> None:
    """A spec searching jpegli and libjpeg 4:4:4: a stored row made by libjpeg-turbo 4:4:4 (or nvJPEG
    on the GPU) teaches libjpeg 4:4:4's first guess, not jpegli's; a row no variant of the spec makes
    (another chroma) teaches nothing."""
    from preprocess.pipeline.gate import GateStats, Track
    from preprocess.pipeline.spec import parse_spec

    spec = parse_spec({"encode": {"encoders": ["jpegli", "libjpeg"], "chroma_subsampling": ["420", "444"]}})
    variants = spec.encode.variants()
    jpegli = Track(next(v for v in variants if v.encoder == "jpegli"))
    lib444 = Track(next(v for v in variants if v.encoder == "libjpeg" and v.chroma == "444"))
    ladder = spec.quality.ladder()
    stats = GateStats(spec)
    stats.seed([ladder[5], ladder[30], ladder[31], ladder[40]], np.stack([_unit([1, 0])] * 4),
               [("jpegli", "420"), ("libjpeg-turbo", "444"), ("nvjpeg", "444"), ("libjpeg-turbo", "422")])
    priors = stats.priors()
    assert priors[jpegli].guess == 5 and priors[lib444].guess == 30
    rungs = priors[lib444].rungs
    assert rungs is not None and sorted(rungs) == [30, 31]
    assert sum(len(p.rungs) for p in priors.values() if p.rungs is not None) == 3


def run_pruning(curve: list[float], sizes: list[int], guess: int | None, dip: float) -> tuple[Search, list[int]]:
    """The search as the gate drives it: a rung whose bytes are at least a pass's is pruned, not measured."""
    s, asked, bound = Search(lo=0, hi=len(LADDER) - 1), list[int](), None
    while (r := s.next_probe(guess, LADDER, T, dip=dip, settle=SETTLE)) is not None:
        assert len(asked) < 4 * len(LADDER), f"the search does not end: {asked}"
        asked.append(r)
        if bound is not None and sizes[r] >= bound:
            s.prune(r)
            continue
        if s.update(r, curve[r], T, LADDER):
            bound = min(bound or sizes[r], sizes[r])
    return s, asked


@settings(max_examples=300, deadline=None)
@given(curves, st.lists(st.integers(100, 105), min_size=len(LADDER), max_size=len(LADDER)), guesses,
       st.sampled_from([0.0, 0.05, 0.5]))
def test_a_search_that_prunes_rungs_ends_and_never_asks_twice(curve: list[float], sizes: list[int],
                                                             guess: int | None, dip: float) -> None:
    """A flat image (a grey wall, a lens cap) encodes to about the same bytes at every quality: once a rung
    passed, every lower one was pruned, and confirming the pass asked for the same pruned rung for ever
    (`run` and `watch` hung; a hostile-input sweep, 2026-12-06)."""
    s, asked = run_pruning(curve, sizes, guess, dip)
    assert len(asked) == len(set(asked)), asked
    flat = [0.999999] * len(LADDER)
    s, asked = run_pruning(flat, [120] * len(LADDER), len(LADDER) // 2, DIP)
    assert s.best == len(LADDER) // 2 and len(asked) <= 3
