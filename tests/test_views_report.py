"""The oracle's arithmetic in scripts/views_report.py (what issue 21's measurements rest on), on made-up
curves: the fewest bytes that pass every view, the best a search that trusts a monotone curve can store,
and where a curve dips. No photo and no model: the numbers are the test's."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from views_report import Image, Pt, Rule, cost, rule


def _image(curve: Sequence[tuple[int, int, float, float]], *, small: Sequence[tuple[int, int, float]] = ()) -> Image:
    """(quality, bytes, whole, worst crop) at 1280 px; (quality, bytes, whole) at 640 px."""
    pts = [Pt("jpegli", 1280, q, b, w, None, (c, 0.999, 0.999, 0.999, 0.999)) for q, b, w, c in curve]
    pts += [Pt("jpegli", 640, q, b, w, None, ()) for q, b, w in small]
    return Image("a.jpg", "held-out", 100_000, 1280, tuple(pts))


def _best(im: Image, passes: Rule, *, any_side: bool = False) -> Pt:
    p = im.best("jpegli", passes, any_side=any_side)
    assert p is not None
    return p


# q25 passes, q27 fails, q29+ pass: a pass below a fail, as on the fixed camera's frames
DIP = [(21, 900, 0.985, 0.95), (23, 950, 0.988, 0.95), (25, 1000, 0.9905, 0.96), (27, 1050, 0.989, 0.96),
       (29, 1100, 0.991, 0.965), (31, 1150, 0.992, 0.975), (33, 1200, 0.993, 0.98)]


def test_the_oracle_takes_the_fewest_bytes_that_pass_every_view() -> None:
    im = _image(DIP)
    assert _best(im, rule()).quality == 25
    assert _best(im, rule(crops=0.97)).quality == 31
    assert im.best("jpegli", rule(crops=0.999)) is None
    assert im.best("jpegli", rule(dinov2=0.98)) is None  # DINOv2 not measured: not a pass


def test_a_dip_is_found_and_priced() -> None:
    im = _image(DIP)
    assert im.dips("jpegli", rule()) == ([25], [27])
    safe = im.monotone_best("jpegli", rule())
    assert safe is not None and safe.quality == 29
    assert im.dips("jpegli", rule(crops=0.97)) == ([], [])


def test_the_size_search_spans_every_long_side() -> None:
    im = _image(DIP, small=[(41, 700, 0.9902), (45, 760, 0.995)])
    assert _best(im, rule(), any_side=True).side == 640
    assert _best(im, rule()).side == 1280
    c = cost([im], "jpegli", rule(), any_side=True)
    assert c.pooled == 700 / 100_000 and c.none == 0
    assert cost([im], "jpegli", rule(crops=0.999)).none == 1  # counted at the top quality's bytes
