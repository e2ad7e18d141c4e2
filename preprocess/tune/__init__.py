"""Tuning the compression: sweep (size x quality x model) over a sample, recommend a setting, report it.

- :mod:`.sweep`: the measurement (bytes, similarity per view and model, neighbour agreement).
- :mod:`.recommend`: single quality per size, the adaptive setting, the Pareto front.
- :mod:`.report` and :mod:`.plots`: ``report.html`` (self-contained), ``report.json``, ``recommended.toml``.
"""

from preprocess.tune.recommend import Recommendation, recommend
from preprocess.tune.report import write_report
from preprocess.tune.sweep import Sweep, SweepOptions, run_sweep

__all__ = ["Recommendation", "Sweep", "SweepOptions", "recommend", "run_sweep", "write_report"]
