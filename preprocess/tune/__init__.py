"""Tuning the compression: sweep (format x size x quality x model) over a sample, recommend a setting
per format, look at what it stores, report it.

- :mod:`.sweep`: the measurement (bytes as stored, similarity per view and model, neighbour agreement).
- :mod:`.recommend`: per format, single quality per size, the adaptive setting and its ladder, the Pareto front.
- :mod:`.stored`: every sample image as the recommendation stores it: thumbnails, crops, decode speed.
- :mod:`.report`, :mod:`.plots`, :mod:`.recommended`: ``report.html`` (self-contained), ``report.json``,
  ``recommended.toml`` (and ``recommended-FORMAT.toml`` per other format).
"""

from preprocess.tune.recommend import Recommendation, Target, recommend, recommend_formats
from preprocess.tune.report import write_report
from preprocess.tune.stored import StoredSample, store_sample
from preprocess.tune.sweep import Sweep, SweepOptions, run_sweep

__all__ = ["Recommendation", "StoredSample", "Sweep", "SweepOptions", "Target", "recommend", "recommend_formats",
           "run_sweep", "store_sample", "write_report"]
