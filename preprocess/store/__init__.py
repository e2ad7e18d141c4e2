"""The versioned dataset: zarr arrays in an icechunk repository (one commit per job).

- :func:`open_repo` / :func:`open_storage`: where the dataset lives (a local path or ``s3://bucket/prefix``,
  a :class:`~preprocess.sources.location.Location` or the string it is parsed from);
  :mod:`preprocess.store.lock`: the locks of a local store.
- :class:`DatasetWriter`: chunk-aligned appends of rows (:mod:`preprocess.rows.schema`), one commit, over
  its jobs' modules (``append``, ``keys``, ``seed``, ``forks``, ``commit``);
  :func:`check_target`: what a new writer would refuse, checked before anything is created.
- :func:`open_dataset` / :class:`Dataset`: read one branch, tag or snapshot (or id prefix); its rows are the
  typed records of :mod:`preprocess.rows.records`.
- :mod:`preprocess.store.refs`: resolve refs (``REF~N`` too); list, make and delete tags and branches;
  reset, gc.
- :mod:`preprocess.store.history`: log, show, item lineage, item-level diff (public API:
  :mod:`preprocess.history`).
- :mod:`preprocess.store.lookup`: which rows a source path, file or sha256 names.
- :mod:`preprocess.store.export`: a version's images + a CSV/Parquet manifest.
"""

from preprocess.store.lock import StoreLock, lock_repo
from preprocess.store.reader import Dataset, dataset_at, open_dataset
from preprocess.store.refs import Ref, resolve_ref
from preprocess.store.storage import local_path, open_repo, open_storage, probe_writable
from preprocess.store.writer import DatasetWriter, WriterCounts, check_target, open_writer

__all__ = [
    "Dataset",
    "DatasetWriter",
    "Ref",
    "StoreLock",
    "WriterCounts",
    "check_target",
    "dataset_at",
    "local_path",
    "lock_repo",
    "open_dataset",
    "open_repo",
    "open_storage",
    "open_writer",
    "probe_writable",
    "resolve_ref",
]
