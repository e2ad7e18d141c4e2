"""The recommended spec: the sweep's spec with the recommendation's format (its ``[encode]``), size,
adaptive quality ladder, target and gate views, written as TOML that ``preprocess run --spec`` takes as is:
``recommended.toml`` for the decision (the fewest bytes across formats and sizes), and
``recommended-FORMAT.toml`` for each format's own best."""

from __future__ import annotations

from preprocess.pipeline.gatespec import JSON
from preprocess.pipeline.spec import Spec, parse_spec
from preprocess.rows.formats import FORMATS
from preprocess.rows.spec_toml import dumps
from preprocess.tune.grid import Sweep, gate_checks, model_ref, scaled_checks, score_name
from preprocess.tune.recommend import Recommendation

DECISION_FILE = "recommended.toml"


def spec_file(rec: Recommendation | str) -> str:
    """Each format's own recommended spec (``recommended.toml`` is the decision's, a copy of one of them)."""
    return f"recommended-{rec if isinstance(rec, str) else rec.format}.toml"


SPEC_FILES = tuple(spec_file(f) for f in FORMATS)  # every format's, whatever a report measured


def recommended_spec(sweep: Sweep, rec: Recommendation) -> Spec:
    """The adaptive spec of ``rec`` (which must be :attr:`~Recommendation.ok`). Its quality ladder is
    exactly :attr:`Setting.ladder` (rungs that were all measured or searched)."""
    assert rec.setting is not None
    ladder = rec.setting.ladder
    combine = rec.gauge.removeprefix("tiles-") if rec.gauge.startswith("tiles-") else sweep.spec.gate.tiles_combine
    data = sweep.spec.to_dict()
    data["pipeline"] = {**data["pipeline"], "name": f"{sweep.spec.pipeline.name}-tuned",
                        "description": f"preprocess tune: {rec.format}, {rec.model} "
                                       f"{judged(sweep.spec, rec.gauge, rec.target)} at p{rec.percentile:g}, "
                                       f"{len(sweep.images)} sample images"}
    data["encode"] = sweep.codings[rec.codings[0]].encode.to_dict()
    data["resize"] = {**data["resize"], "size": rec.setting.size}
    data["quality"] = {**data["quality"], "mode": "adaptive", "min": ladder.min, "max": ladder.max,
                       "step": ladder.step, "value": ladder.max}
    # the model(s) and views the recommendation was judged by (the spec's other views, and its other models
    # when one was asked for, are not what tune measured its target with)
    views: dict[str, JSON] = dict(judged_views(sweep.spec, rec.gauge, rec.target))
    models: list[JSON] = list(sweep.model(rec.model).refs)
    gate: dict[str, JSON] = {"models": models, "views": views, "on_fail": "flag", "tiles_combine": combine}
    if "crops" in views:  # the boxes the crops view was measured with
        gate["crops"] = {"grids": list(sweep.spec.gate.crops.grids), "centre": sweep.spec.gate.crops.centre}
    data["gate"] = gate
    spec = parse_spec(data, source=spec_file(rec))
    assert spec.quality.ladder() == ladder.rungs, (spec.quality.ladder(), ladder.rungs)
    return spec


def spec_toml(spec: Spec, header: list[str]) -> str:
    return dumps(spec.to_dict(), header)


def header(sweep: Sweep, rec: Recommendation, spec: Spec) -> list[str]:
    """What the recommended spec's comment lines say: where it came from and what it should cost."""
    a = rec.setting
    assert a is not None
    lines = [f"Made by `preprocess tune` from {sweep.spec_path} on {len(sweep.images)} sample images.",
             f"Stored format: {rec.format} ({', '.join(sweep.codings[c].label for c in rec.codings)}) at {a.size} px.",
             f"Target: {rec.model} {judged(sweep.spec, rec.gauge, rec.target)} at percentile {rec.percentile:g} "
             "of the sample.",
             f"This adaptive spec (q{spec.quality.min}..q{spec.quality.max} step {spec.quality.step}): expected "
             f"{a.total_bytes:,} bytes as stored ({a.total_bytes / rec.source_bytes:.1%} of the sources), "
             f"{score_name(rec.gauge)} at the percentile {a.at_percentile:.4f}, {a.below_target} image(s) flagged."]
    if a.single is not None:
        lines.append(f"One quality for all (q{a.single.quality}, {a.single.coding}): {a.single.total_bytes:,} bytes; "
                     f"the ladder stores {a.saving:.1%} less.")
    if a.inexact:
        lines.append(f"{a.inexact} image(s) rest on a rung whose next lower rung was not measured at this target: "
                     "their bytes are an upper bound.")
    if a.ladder.note:
        lines.append(f"Note: {a.ladder.note}.")
    untuned = not_checked(sweep, rec.gauge, rec.model)
    if untuned:
        lines.append(f"Not judged by tune, so not checked by this spec: the base spec's {untuned}. Add them to "
                     "[gate] to keep them (then each image may store more bytes than the above).")
    return lines


def judged_views(base: Spec, gauge: str, target: float) -> dict[str, float]:
    """The gate views (and thresholds) a recommendation judged by ``gauge`` at ``target`` checks: ``gate``
    the whole view at ``target`` and the crops at the base spec's threshold moved as far
    (:func:`~preprocess.tune.grid.scaled_checks`); any other gauge its one view at ``target``."""
    checks = gate_checks(base)
    if gauge == "gate" and checks is not None:
        whole, crops = scaled_checks(checks, target)
        return {"whole": whole, "crops": crops}
    return {"tiles" if gauge.startswith("tiles-") else gauge: target}


def judged(base: Spec, gauge: str, target: float) -> str:
    """What a target judges, in words: ``whole >= 0.99 and crops >= 0.975``, ``tiles-p10 >= 0.85``."""
    views = judged_views(base, gauge, target)
    if gauge.startswith("tiles-"):
        return f"{gauge} >= {target:g}"
    return " and ".join(f"{v} >= {t:g}" for v, t in views.items())


def not_checked(sweep: Sweep, gauge: str, model: str) -> str:
    """:func:`dropped_checks` of a recommendation judged by ``gauge`` and ``model`` (a name, or the gate
    models' joint name) from ``sweep``."""
    gate, recorded = sweep.spec.gate.models, [m.ref for m in sweep.models[:sweep.gate_models]]
    # each gate entry as the sweep recorded it (a relative manifest path was resolved where tune measured)
    refs = dict(zip(gate, recorded, strict=True)) if len(gate) == len(recorded) else {}
    return dropped_checks(sweep.spec, gauge, sweep.model(model).refs, refs)


def dropped_checks(base: Spec, gauge: str, judged_by: list[str], refs: dict[str, str] | None = None) -> str:
    """The base spec's checks that a recommendation judged by ``gauge`` and the models ``judged_by`` (their
    refs: the spec's gate models unless one was asked for) does not keep (tune judges by the whole view and
    the crops, or one view), as words; "" when none. ``refs``: a gate entry's ref when not
    :func:`~preprocess.tune.grid.model_ref`'s."""
    kept = judged_views(base, gauge, base.gate.threshold)
    views = [f"{v} >= {t:g}" for v, t in base.gate.views.items() if v not in kept]
    models = [m for m in base.gate.models if (refs or {}).get(m, model_ref(m)) not in judged_by]
    parts = ([f"views {', '.join(views)}"] if views else []) + ([f"models {', '.join(models)}"] if models else [])
    return "; ".join(parts)
