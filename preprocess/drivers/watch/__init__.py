"""The watch-folder daemon: new camera files become committed dataset rows, continuously.

- :mod:`~preprocess.drivers.watch.queue`: the bounded queue with the quiet period (never read a file
  still being written).
- :mod:`~preprocess.drivers.watch.detect`: inotify / polling events plus full rescans.
- :mod:`~preprocess.drivers.watch.daemon`: batch -> Processor -> DatasetWriter -> commit policy, signals.
- :mod:`~preprocess.drivers.watch.server`: ``/healthz``, ``/readyz``, ``/metrics``;
  :mod:`~preprocess.drivers.watch.logs`.
- :mod:`~preprocess.drivers.watch.bench`: close-to-commit latency of a real daemon, for ``scripts/bench``.
"""

from preprocess.drivers.watch.daemon import WatchDaemon, run_watch
from preprocess.drivers.watch.options import WatchOptions, parse_address, parse_duration

__all__ = ["WatchDaemon", "WatchOptions", "parse_address", "parse_duration", "run_watch"]
