"""The recommended spec: the sweep's spec with the recommendation's format (its ``[encode]``), size,
adaptive quality ladder, target and gate view, written as TOML that ``preprocess run --spec`` takes as is:
``recommended.toml`` for the decision (the fewest bytes across formats and sizes), and
``recommended-FORMAT.toml`` for each format's own best."""

from __future__ import annotations

import json
from collections.abc import Sequence

from preprocess.core.jsonable import Json
from preprocess.pipeline.spec import Spec, parse_spec
from preprocess.tune.grid import Sweep
from preprocess.tune.recommend import Recommendation

DECISION_FILE = "recommended.toml"


def spec_file(rec: Recommendation) -> str:
    """Each format's own recommended spec (``recommended.toml`` is the decision's, a copy of one of them)."""
    return f"recommended-{rec.format}.toml"


def recommended_spec(sweep: Sweep, rec: Recommendation) -> Spec:
    """The adaptive spec of ``rec`` (which must be :attr:`~Recommendation.ok`). Its quality ladder is
    exactly :attr:`Setting.ladder` (rungs that were all measured or searched)."""
    assert rec.setting is not None
    ladder = rec.setting.ladder
    view = gauge_view(rec.gauge)
    combine = sweep.spec.gate.tiles_combine if view == "whole" else rec.gauge.removeprefix("tiles-")
    data = sweep.spec.to_dict()
    data["pipeline"] = {**data["pipeline"], "name": f"{sweep.spec.pipeline.name}-tuned",
                        "description": f"preprocess tune: {rec.format}, {rec.model} {rec.gauge} >= {rec.target:g} "
                                       f"at p{rec.percentile:g}, {len(sweep.images)} sample images"}
    data["encode"] = sweep.codings[rec.codings[0]].encode.to_dict()
    data["resize"] = {**data["resize"], "size": rec.setting.size}
    data["quality"] = {**data["quality"], "mode": "adaptive", "min": ladder.min, "max": ladder.max,
                       "step": ladder.step, "value": ladder.max}
    ref = next(m.ref for m in sweep.models if m.name == rec.model)
    # one model under the one view the recommendation was judged by (the spec's other views and models
    # are not what tune measured its target with)
    data["gate"] = {"model": ref, "threshold": rec.target, "on_fail": "flag", "view": view, "tiles_combine": combine}
    spec = parse_spec(data, source=spec_file(rec))
    assert spec.quality.ladder() == ladder.rungs, (spec.quality.ladder(), ladder.rungs)
    return spec


def _toml_value(v: Json) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are valid TOML
    if isinstance(v, Sequence):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def spec_toml(spec: Spec, header: list[str]) -> str:
    lines = [f"# {h}" for h in header]
    for section, values in spec.to_dict().items():
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def header(sweep: Sweep, rec: Recommendation, spec: Spec) -> list[str]:
    """What the recommended spec's comment lines say: where it came from and what it should cost."""
    a = rec.setting
    assert a is not None
    lines = [f"Made by `preprocess tune` from {sweep.spec_path} on {len(sweep.images)} sample images.",
             f"Stored format: {rec.format} ({', '.join(sweep.codings[c].label for c in rec.codings)}) at {a.size} px.",
             f"Target: {rec.model} {rec.gauge} similarity >= {rec.target:g} at percentile {rec.percentile:g} of "
             "the sample.",
             f"This adaptive spec (q{spec.quality.min}..q{spec.quality.max} step {spec.quality.step}): expected "
             f"{a.total_bytes:,} bytes as stored ({a.total_bytes / rec.source_bytes:.1%} of the sources), "
             f"similarity at the percentile {a.at_percentile:.4f}, {a.below_target} image(s) flagged."]
    if a.single is not None:
        lines.append(f"One quality for all (q{a.single.quality}, {a.single.coding}): {a.single.total_bytes:,} bytes; "
                     f"the ladder stores {a.saving:.1%} less.")
    if a.inexact:
        lines.append(f"{a.inexact} image(s) rest on a rung whose next lower rung was not measured at this target: "
                     "their bytes are an upper bound.")
    if a.ladder.note:
        lines.append(f"Note: {a.ladder.note}.")
    untuned = dropped_checks(sweep.spec, rec.gauge, rec.model)
    if untuned:
        lines.append(f"Not measured by tune, so not checked by this spec: the base spec's {untuned}. Add them to "
                     "[gate] to keep them (then each image may store more bytes than the above).")
    return lines


def gauge_view(gauge: str) -> str:
    """The gate view a tune gauge measures: ``whole``, or ``tiles`` for ``tiles-p10`` and the like."""
    return "whole" if gauge == "whole" else "tiles"


def dropped_checks(base: Spec, gauge: str, model: str) -> str:
    """The base spec's checks that a recommendation judged by ``gauge`` and ``model`` does not keep (tune
    measures one view of one model: the crops view, another model), as words; "" when none."""
    views = [f"{v} >= {t:g}" for v, t in base.gate.views.items() if v != gauge_view(gauge)]
    models = [m for m in base.gate.models if m != model]
    parts = ([f"views {', '.join(views)}"] if views else []) + ([f"models {', '.join(models)}"] if models else [])
    return "; ".join(parts)
