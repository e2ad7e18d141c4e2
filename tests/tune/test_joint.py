"""`tune` with a spec whose gate has several models (pipelines/strict.toml: MobileNetV2 and DINOv2-small): the
gate stores a candidate only when every model passes every view, so tune measures every gate model's views,
its search is led by them jointly, and its recommendation is judged, and written, with all of them. Before,
tune measured and judged by the first model only and said so (`not_checked`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from preprocess.tune import Sweep, SweepOptions, Target, decide, run_sweep, store_sample
from preprocess.tune.grid import ModelSweep, from_json, joint, to_json
from preprocess.tune.recommended import dropped_checks, recommended_spec
from tests.paths import ROOT

STRICT = ROOT / "pipelines" / "strict.toml"
MODELS = ["mobilenetv2-imagenet", "dinov2-small"]
CHECKS = (0.99, 0.975)


def _model(name: str, whole: list[float], crops: list[float], worst_crop: list[int]) -> ModelSweep:
    shape = (1, 1, len(whole), 1)
    return ModelSweep(name=name, ref=name, dim=4, weights_sha256="", tiles=None, worst_tile=None,
                      whole=np.asarray(whole, np.float32).reshape(shape),
                      crops=np.asarray(crops, np.float32).reshape(shape),
                      worst_crop=np.asarray(worst_crop, np.int32).reshape(shape), checks=CHECKS)


def test_the_joint_judge_passes_exactly_where_every_model_passes() -> None:
    """Four candidates: both pass; only the second model's crops fail; only the first's whole view fails;
    not measured. The joint gate score is the least of the models' gate scores, and the worst crop is the
    one of the model that saw the worst crop."""
    a = _model("a", [0.995, 0.995, 0.985, np.nan], [0.99, 0.99, 0.99, np.nan], [0, 1, 2, -1])
    b = _model("b", [0.999, 0.999, 0.999, np.nan], [0.98, 0.96, 0.99, np.nan], [3, 4, 0, -1])
    both = joint([a, b])
    assert both.name == "a + b" and both.refs == ["a", "b"] and joint([a]) is a
    gate = both.values("gate")
    least = np.minimum(a.values("gate"), b.values("gate"))
    assert np.array_equal(gate[0, 0, :3], least[0, 0, :3]) and np.isnan(gate[0, 0, 3, 0])
    assert (gate[0, 0, :3, 0] >= CHECKS[0]).tolist() == [True, False, False]
    assert both.worst_crop is not None and both.worst_crop[0, 0, :3, 0].tolist() == [3, 4, 2]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, camera_photos: list[Path], small_photos: list[Path]) -> Sweep:
    d = tmp_path_factory.mktemp("joint")
    for p in (camera_photos[0], next(p for p in small_photos if p.name == "fruits.jpg")):
        shutil.copy(p, d / p.name)
    return run_sweep(SweepOptions(sources=[str(d)], spec_path=str(STRICT), sizes=(640,), qualities=(50, 65, 80, 95),
                                  gauge="gate", band=[CHECKS[0]], engine="pillow"))


def test_every_gate_model_is_measured_and_leads_the_search(strict: Sweep) -> None:
    assert [m.name for m in strict.models] == MODELS and strict.gate_models == 2
    assert all(m.crops is not None and "gate" in m.gauges() for m in strict.models)
    judge = strict.model(None)
    assert judge.name == " + ".join(MODELS) and strict.model(judge.name) is not None
    measured = strict.measured()
    gates = [m.values("gate") for m in strict.models]
    assert np.array_equal(judge.values("gate")[measured], np.minimum(*gates)[measured])
    d = decide(strict, Target(CHECKS[0], 1.0, gauge="gate"))
    rec = d.recs[0]
    assert rec.setting is not None and rec.model == judge.name, d.message
    for c in rec.setting.choices:  # every stored choice passes both models, where the search ended
        at = (c.coding, 0, strict.qualities.index(c.quality), c.index)
        assert c.exact and (not c.passed or all(g[at] >= CHECKS[0] for g in gates)), c


def test_the_recommendation_keeps_every_gate_model(strict: Sweep) -> None:
    d = decide(strict, Target(CHECKS[0], 1.0, gauge="gate"))
    spec = recommended_spec(strict, d.recs[0])
    assert list(spec.gate.models) == MODELS
    assert dropped_checks(strict.spec, "gate", strict.model(d.recs[0].model).refs) == ""
    made = store_sample(strict, d.recs[0], repeats=0)  # the report's sample, checked by both models
    assert made is not None and len(made.images) == 2 and not made.missing
    assert all(set(im.checks) == set(MODELS) for im in made.images), [im.checks for im in made.images]
    one = decide(strict, Target(CHECKS[0], 1.0, model=MODELS[0], gauge="gate")).recs[0]
    assert list(recommended_spec(strict, one).gate.models) == MODELS[:1]
    assert dropped_checks(strict.spec, "gate", strict.model(one.model).refs) == "models dinov2-small"


def test_a_saved_report_judges_by_the_same_models(strict: Sweep) -> None:
    again = from_json(json.loads(json.dumps(to_json(strict))), "report.json")
    assert again.gate_models == 2 and again.model(None).name == strict.model(None).name
    measured = strict.measured()
    assert np.allclose(again.model(None).values("gate")[measured], strict.model(None).values("gate")[measured],
                       atol=2e-6)
    old = to_json(strict)
    del old["gate_models"]  # a report from before: the first model judged alone
    assert from_json(old, "report.json").model(None).name == MODELS[0]


def test_the_search_is_led_by_every_gate_model_not_the_first(tmp_path: Path, strict: Sweep) -> None:
    """The same spec with DINOv2-small first: it is the laxer judge on these photos, so a search led by the
    first model alone stops where MobileNetV2 still fails, and the rung below the choice was never measured
    (an inexact choice, or none at all). Led by both, every choice is where the gate's search ends."""
    spec = tmp_path / "reversed.toml"
    spec.write_text(STRICT.read_text().replace(f'models = ["{MODELS[0]}", "{MODELS[1]}"]',
                                               f'models = ["{MODELS[1]}", "{MODELS[0]}"]'))
    sources = sorted({str(Path(i.path).parent) for i in strict.images})
    reversed_ = run_sweep(SweepOptions(sources=sources, spec_path=str(spec), sizes=(640,), qualities=(50, 65, 80, 95),
                                       gauge="gate", band=[CHECKS[0]], engine="pillow"))
    assert [m.name for m in reversed_.models] == MODELS[::-1]
    rec = decide(reversed_, Target(CHECKS[0], 1.0, gauge="gate")).recs[0]
    assert rec.setting is not None and all(c.exact and c.passed for c in rec.setting.choices), rec.message
    first = decide(strict, Target(CHECKS[0], 1.0, gauge="gate")).recs[0].setting
    assert first is not None and [c.quality for c in rec.setting.choices] == [c.quality for c in first.choices]


def test_a_gate_model_named_twice_is_one_and_a_compared_model_stays_compared(strict: Sweep, tmp_path: Path) -> None:
    """The gate names MobileNetV2 by name and by its manifest's path: measured once, so the compared DINOv2
    is the second model measured, and is not a gate model for all that (it was counted as one)."""
    spec = tmp_path / "twice.toml"
    manifest = ROOT / "models" / f"{MODELS[0]}.toml"
    spec.write_text(STRICT.read_text().replace(f'models = ["{MODELS[0]}", "{MODELS[1]}"]',
                                               f'models = ["{MODELS[0]}", "{manifest}"]'))
    one = sorted({str(Path(i.path).parent) for i in strict.images})
    sweep = run_sweep(SweepOptions(sources=one, spec_path=str(spec), sizes=(320,), qualities=(60, 90),
                                   compare=(MODELS[1],), gauge="gate", band=[CHECKS[0]], engine="pillow"))
    assert [m.name for m in sweep.models] == MODELS and sweep.gate_models == 1
    assert sweep.models[1].crops is None and sweep.model(None).name == MODELS[0]


def test_a_gate_entry_is_matched_as_the_sweep_recorded_it(strict: Sweep) -> None:
    """A spec naming a manifest by a relative path: `tune --from` run in another folder would resolve it
    elsewhere and warn about a model it did judge by. The sweep's recorded ref is what is compared."""
    relative = "models/dinov2-small.toml"
    spec = strict.spec.model_copy(update={"gate": strict.spec.gate.model_copy(
        update={"models": (MODELS[0], relative)})})
    judged = [MODELS[0], "/elsewhere/models/dinov2-small.toml"]
    assert dropped_checks(spec, "gate", judged, {relative: judged[1]}) == ""
    assert dropped_checks(spec, "gate", judged) == f"models {relative}"  # resolved against this folder instead
