"""The watch-folder daemon: new camera files become committed dataset rows, continuously.

- :mod:`~preprocess.watch.queue`: the bounded queue with the quiet period (never read a file
  still being written).
- :mod:`~preprocess.watch.detect`: inotify / polling events plus full rescans.
- :mod:`~preprocess.watch.daemon`: batch -> Processor -> DatasetWriter -> commit policy, signals.
- :mod:`~preprocess.watch.server`: ``/healthz``, ``/readyz``, ``/metrics``; :mod:`~preprocess.watch.logs`.
- :mod:`~preprocess.watch.bench`: close-to-commit latency of a real daemon, for ``scripts/bench``.
"""

from preprocess.watch.daemon import WatchDaemon, run_watch
from preprocess.watch.options import WatchOptions, parse_address, parse_duration

__all__ = ["WatchDaemon", "WatchOptions", "parse_address", "parse_duration", "run_watch"]
