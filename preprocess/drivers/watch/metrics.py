"""The daemon's Prometheus metrics (one registry per daemon, served at ``/metrics``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from preprocess.drivers.watch.window import Taken
from preprocess.rows.schema import FailureRow, ItemRow

PREFIX = "preprocess_watch"

SIMILARITY_BUCKETS = (0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.992, 0.994, 0.996, 0.998, 0.999, 1.0)
QUALITY_BUCKETS = tuple(float(q) for q in range(30, 100, 5))
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._totals: dict[str, int] = {}  # what count_up counted so far
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        p = PREFIX
        self.seen = Counter(f"{p}_files_seen", "File versions noticed in the folder (events or rescans).",
                            registry=r)
        self.queued = Gauge(f"{p}_files_queued", "Files waiting for their quiet period or for the engine.",
                            registry=r)
        self.queue_capacity = Gauge(f"{p}_queue_capacity", "The queue's bound (--queue-size).", registry=r)
        self.queue_peak = Gauge(f"{p}_queue_peak", "The most files ever queued at once.", registry=r)
        self.refused = Counter(f"{p}_queue_refused", "Offers refused because the queue was full (the files "
                               "stay in the folder and are found by a later rescan).", registry=r)
        self.processing = Gauge(f"{p}_files_processing", "Files of the batch being processed now.", registry=r)
        self.in_flight = Gauge(f"{p}_files_in_flight", "Files processed and not yet committed.", registry=r)
        self.processed = Counter(f"{p}_files_processed", "Files turned into stored items.", registry=r)
        self.failed = Counter(f"{p}_files_failed", "Files recorded as failures, by code.", ["code"], registry=r)
        self.duplicates = Counter(f"{p}_files_duplicate", "Files whose content was already stored (or taken).",
                                  registry=r)
        self.requeued = Counter(f"{p}_files_requeued", "Files that changed while being read (taken again).",
                                registry=r)
        self.bytes_in = Counter(f"{p}_bytes_in", "Source bytes of stored items.", registry=r)
        self.bytes_out = Counter(f"{p}_bytes_out", "Stored bytes of items.", registry=r)
        self.similarity = Histogram(f"{p}_similarity", "Measured feature similarity of stored items.",
                                    buckets=SIMILARITY_BUCKETS, registry=r)
        self.quality = Histogram(f"{p}_quality", "JPEG quality chosen for stored items (re-encoded only).",
                                 buckets=QUALITY_BUCKETS, registry=r)
        self.batch_seconds = Histogram(f"{p}_batch_seconds", "Time to read and process one batch.",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.commits = Counter(f"{p}_commits", "Commits made, by reason (count, interval, shutdown).",
                               ["reason"], registry=r)
        self.commit_errors = Counter(f"{p}_commit_errors", "Commits that failed (their files are redone).",
                                     registry=r)
        self.store_errors = Counter(f"{p}_store_errors", "Failed writes, commits and retries of the store, by "
                                    "code (STORE_FULL: the disk is full; STORE_IO, COMMIT_CONFLICT, ...).",
                                    ["code"], registry=r)
        self.store_writable = Gauge(f"{p}_store_writable", "0 while the store cannot be written (the daemon "
                                    "takes no files and retries), else 1.", registry=r)
        self.store_backoff = Gauge(f"{p}_store_backoff_seconds", "The wait between retries of a failing store "
                                   "(doubling up to a cap; 0 while the store works).", registry=r)
        self.commit_seconds = Histogram(f"{p}_commit_seconds", "Commit latency (write tail + icechunk commit).",
                                        buckets=SECONDS_BUCKETS, registry=r)
        self.close_to_commit = Histogram(f"{p}_close_to_commit_seconds", "From a file's last write (mtime) to "
                                         "the commit holding its row.", buckets=SECONDS_BUCKETS, registry=r)
        self.last_commit = Gauge(f"{p}_last_commit_timestamp_seconds", "Unix time of the last commit.",
                                 registry=r)
        self.scans = Counter(f"{p}_rescans", "Full rescans of the folder.", registry=r)
        self.lost_events = Counter(f"{p}_lost_events", "Times the OS reported lost events (inotify overflow).",
                                   registry=r)
        self.ready = Gauge(f"{p}_ready", "1 when the daemon takes files (store open, model loaded, watching).",
                           registry=r)

    def count_up(self, **totals: int) -> None:
        """Bring the counters ``seen``, ``refused`` and ``scans`` up to the totals the queue and detector keep."""
        for name, total in totals.items():
            done = self._totals.get(name, 0)
            if total > done:
                getattr(self, name).inc(total - done)
                self._totals[name] = total

    def count_batch(self, items: Sequence[ItemRow], failures: Sequence[FailureRow], duplicates: int) -> None:
        self.duplicates.inc(duplicates)
        for row in items:
            self.processed.inc()
            self.bytes_in.inc(row.source_bytes)
            self.bytes_out.inc(row.bytes)
            self.similarity.observe(row.similarity)
            if row.quality:
                self.quality.observe(row.quality)
        for fr in failures:
            self.failed.labels(code=fr.code).inc()

    def observe_commit(self, reason: str, seconds: float, files: Sequence[Taken]) -> None:
        committed_at = time.time()
        self.commits.labels(reason=reason).inc()
        self.commit_seconds.observe(seconds)
        self.last_commit.set(committed_at)
        for f in files:
            if f.outcome != "duplicate":
                self.close_to_commit.observe(max(0.0, committed_at - f.closed_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)
