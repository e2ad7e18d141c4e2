"""The order a staged engine looks at a candidate's checks (:mod:`preprocess.pipeline.gate.stages`)."""

from __future__ import annotations

import pytest

from preprocess.pipeline.gate.stages import WHOLE, Check, CheckOrder, margin


def test_margin_is_decades_of_the_deficit_above_the_threshold() -> None:
    assert margin(0.999, 0.99) == pytest.approx(1.0)
    assert margin(0.9, 0.99) == pytest.approx(-1.0)
    assert margin(0.99, 0.99) == pytest.approx(0.0, abs=1e-9)


def test_before_any_measure_the_regions_come_first_then_the_whole_view() -> None:
    order = CheckOrder().checks(0, models=1, boxes=3, whole=True)
    assert order == [Check(0, 0), Check(0, 1), Check(0, 2), Check(0, WHOLE)]
    assert CheckOrder().checks(0, models=1, boxes=0, whole=True) == [Check(0, WHOLE)]
    assert [c.model for c in CheckOrder().checks(0, models=2, boxes=1, whole=True)] == [0, 0, 1, 1]


def test_the_check_with_the_smallest_margin_comes_first_and_unknown_ones_sit_at_zero() -> None:
    order = CheckOrder()
    order.learn(0, {Check(0, 0): 0.3, Check(0, 1): -0.02, Check(0, WHOLE): 0.5})
    # crop 2 was never measured: after the failure, before the passes
    assert order.checks(0, models=1, boxes=3, whole=True) == [Check(0, 1), Check(0, 2), Check(0, 0), Check(0, WHOLE)]
    order.learn(0, {Check(0, WHOLE): -0.1})  # a later candidate failed its whole view first
    assert order.checks(0, models=1, boxes=3, whole=True)[0] == Check(0, WHOLE)
    assert order.checks(1, models=1, boxes=3, whole=True)[0] == Check(0, 0)  # each image its own
