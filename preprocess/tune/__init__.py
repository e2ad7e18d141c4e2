"""Tuning the compression: measure (format x size x quality x model) over a sample, decide the setting
with the fewest bytes that meets a target, look at what it stores, report it.

- :mod:`.search`: where to measure: each image's crossing of the target (and the presets') with the
  gate's own search, not every rung.
- :mod:`.sweep`, :mod:`.measure`: the measurement (bytes as stored, similarity per view and model).
- :mod:`.grid`: what was measured, and its form in ``report.json`` (``tune --from`` reads it back).
- :mod:`.recommend`: the decision across formats and sizes, the runner-up, each format's best, presets.
- :mod:`.stored`: every sample image as the recommendation stores it: thumbnails, crops, decode speed.
- :mod:`.report`, :mod:`.plots`, :mod:`.recommended`: ``report.html`` (self-contained), ``report.json``,
  ``recommended.toml`` (the decision) and ``recommended-FORMAT.toml`` per format.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from preprocess.tune.grid import Sweep
    from preprocess.tune.recommend import PRESETS, Decision, Recommendation, Setting, Target, decide, recommend
    from preprocess.tune.report import write_report
    from preprocess.tune.stored import StoredSample, store_sample
    from preprocess.tune.sweep import SweepOptions, run_sweep

# name -> its module, imported on first use: `tune --from` needs numpy and the decision, not the models,
# engines or matplotlib
_WHERE = {"Sweep": "grid", "PRESETS": "recommend", "Decision": "recommend", "Recommendation": "recommend",
          "Setting": "recommend", "Target": "recommend", "decide": "recommend", "recommend": "recommend",
          "write_report": "report", "StoredSample": "stored", "store_sample": "stored", "SweepOptions": "sweep",
          "run_sweep": "sweep"}


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'preprocess.tune' has no attribute {name!r}")
    return getattr(import_module(f"preprocess.tune.{_WHERE[name]}"), name)


__all__ = ["PRESETS", "Decision", "Recommendation", "Setting", "StoredSample", "Sweep", "SweepOptions", "Target",
           "decide", "recommend", "run_sweep", "store_sample", "write_report"]
