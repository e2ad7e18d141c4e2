"""The watch daemon: files dropped into a folder become committed dataset rows, continuously.

One loop in the main thread owns the engine and the only writer of the branch:

    quiet files (FileQueue) -> batch -> read + hash -> dedupe -> Processor -> DatasetWriter
                                                                     -> commit (count | interval)

- Dedupe is by content (``sha256:fingerprint``), against the branch and everything taken since
  start, so copies, renames and restarts never add a second row.
- A commit carries the same provenance as ``run`` (kind "watch"). Nothing is visible before it;
  a killed daemon loses only uncommitted work, which the start-up rescan finds again.
- SIGTERM/SIGINT: stop taking files, finish the batch in flight, commit, exit 0. A second signal
  exits at once (what was not committed is redone at the next start).
- A failed commit (conflict, storage) is not fatal: the writer is reopened and the window's files
  are taken again (still deduped by content).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from preprocess import errors
from preprocess.errors import ConflictError, DeviceError, InternalError, PreprocessError, StorageError, input_error
from preprocess.job import commit_metadata, dedupe, read_files, write_result
from preprocess.process import BatchResult, Failed, Processor, plan
from preprocess.sources import SourceFile, local_roots
from preprocess.store import DatasetWriter, open_repo
from preprocess.store.storage import StoreLock, lock_repo
from preprocess.watch.detect import Detector
from preprocess.watch.metrics import Metrics
from preprocess.watch.options import WatchOptions
from preprocess.watch.queue import FileQueue, Ready, Stat
from preprocess.watch.server import StatusServer
from preprocess.watch.window import Outcome, Taken, Window, move_settled

log = logging.getLogger("preprocess.watch")

TICK = 0.05  # the loop's idle sleep (s)
MAX_ENGINE_ERRORS = 3  # consecutive batches failing as a whole: the engine is broken, not the files


class WatchDaemon:
    def __init__(self, opts: WatchOptions) -> None:
        opts.check()
        self.opts = opts
        self.metrics = Metrics()
        self.job_id = uuid.uuid4().hex
        self.queue = FileQueue(opts.queue_size, opts.quiet)
        self.metrics.queue_capacity.set(opts.queue_size)
        self._stop = threading.Event()
        self._signals = 0
        self._state = "starting"
        self._heartbeat = time.monotonic()
        self._commits = 0
        self._engine_errors = 0
        self._seen = self._refused = self._scans = 0
        self.server: StatusServer | None = None
        self.detector: Detector | None = None

    # -- probes ----------------------------------------------------------------------------------

    def live(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self._heartbeat
        watching = self.detector is None or self._state != "running" or self.detector.alive
        ok = (self._state == "starting" or age < self.opts.liveness_timeout) and watching
        return ok, {"state": self._state, "loop_age_s": round(age, 3), "watching": watching}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self._state == "running" and self.live()[0]
        return ok, {"state": self._state, "queued": len(self.queue)}

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting now, uncommitted files are redone at the next start",
                        extra={"fields": {"signal": signal.Signals(signum).name}})
            os._exit(130)
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        self._set_state("stopping")
        self._stop.set()

    def _set_state(self, state: str) -> None:
        self._state = state
        self.metrics.ready.set(1 if state == "running" else 0)

    def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code (0 after a clean stop)."""
        o = self.opts
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if o.metrics is not None:
            self.server = StatusServer(*o.metrics, live=self.live, ready=self.ready, metrics=self.metrics.render)
            self.server.start()
            host, port = self.server.address
            log.info("listening", extra={"fields": {"host": host, "port": port,
                                                    "endpoints": ["/healthz", "/readyz", "/metrics"]}})
        lock: StoreLock | None = None
        processor: Processor | None = None
        try:
            repo = open_repo(o.store, create=True)
            # The store's writer lock, held for the daemon's life (across writer reopens): a second
            # daemon or a `run` on this dataset fails fast (STORE_LOCKED) or waits --wait seconds.
            lock = lock_repo(repo, wait=o.wait, purpose=f"watch daemon on {os.path.abspath(o.folder)}")
            self.plan = plan(o.spec_path, o.engine, o.device)
            self.writer = DatasetWriter(repo, o.branch)
            self._load_keys()
            processor = self.processor = Processor(self.plan, job_id=self.job_id)
            self.window = self._new_window()
            exclude = (o.move_to,) if o.move_to else ()
            self.detector = Detector(o.folder, self.queue, poll=o.poll, poll_interval=o.poll_interval,
                                     rescan_interval=o.rescan_interval, exclude=exclude,
                                     on_lost_events=self.metrics.lost_events.inc)
            self.detector.start()
            self._set_state("running")
            log.info("watching", extra={"fields": {
                "folder": os.path.abspath(o.folder), "store": o.store, "branch": o.branch, "mode": self.detector.mode,
                "fs": self.detector.fs_type, "engine": self.plan.engine, "device": self.plan.device,
                "fingerprint": self.plan.fingerprint, "stored": len(self.known), "job_id": self.job_id}})
            self._loop()
            self._shutdown()
        finally:
            if self.detector is not None:
                self.detector.stop()
            if processor is not None:
                processor.close()
            if hasattr(self, "writer"):
                self.writer.close()
            if lock is not None:
                lock.release()
            if self.server is not None:
                self.server.stop()
        log.info("stopped", extra={"fields": {"commits": self._commits}})
        return errors.EXIT_OK

    def _load_keys(self) -> None:
        self.known = self.writer.existing_keys()
        self.known_failures = self.writer.existing_failures()

    def _new_window(self) -> Window:
        return Window.new(self.plan, job_id=self.job_id, branch=self.opts.branch, store=self.opts.store)

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        o, q = self.opts, self.queue
        settle_every = max(0.05, min(0.25, o.quiet / 4))
        next_settle = 0.0
        batch_size = self.plan.spec.batch.size
        while not self._stop.is_set():
            now = self._heartbeat = time.monotonic()
            if now >= next_settle:
                q.settle()
                next_settle = now + settle_every
            if q.take_overflow():
                assert self.detector is not None
                self.detector.request_rescan()
            ready = q.ready
            took = False
            if ready and (ready >= batch_size or q.oldest_ready_age() >= o.batch_wait):
                self._guarded(partial(self._batch, q.take(batch_size)))
                took = True
            reason = self.window.due(every=o.commit_every, interval=o.commit_interval)
            if reason:
                self._guarded(partial(self._commit, reason))
            self._gauges()
            if not took:
                self._stop.wait(TICK)

    def _shutdown(self) -> None:
        dropped = self.queue.drop_ready()
        if self.detector is not None:
            self.detector.stop()
        log.info("draining", extra={"fields": {"in_flight": len(self.window.files), "left_for_next_start": dropped}})
        self._guarded(partial(self._commit, "shutdown"), recover=False)

    def _guarded(self, step: Callable[[], None], *, recover: bool = True) -> None:
        """Run a batch or commit step; a storage failure or conflict loses only the open window."""
        try:
            step()
        except (ConflictError, StorageError) as exc:
            self.metrics.commit_errors.inc()
            log.error("store error: the open window is redone", extra={"fields": {
                "code": exc.code, "error": exc.one_line(), "files": len(self.window.files)}})
            for f in self.window.files:
                self.queue.forget(f.path)
            self.window = self._new_window()
            if recover:
                self._reopen()

    def _reopen(self) -> None:
        """Open a fresh writer on the branch (retrying with backoff), re-read its keys, rescan."""
        self._set_state("recovering")
        self.writer.close()
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.writer = DatasetWriter(open_repo(self.opts.store, create=False), self.opts.branch)
                self._load_keys()
                break
            except PreprocessError as exc:
                log.error("cannot reopen the store", extra={"fields": {"error": exc.one_line(), "retry_s": delay}})
                self._heartbeat = time.monotonic()
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
        assert self.detector is not None
        self.detector.request_rescan()
        if not self._stop.is_set():
            self._set_state("running")

    # -- one batch -------------------------------------------------------------------------------

    def _batch(self, ready: list[Ready]) -> None:
        t0 = time.perf_counter()
        self._gauges()
        self.metrics.processing.set(len(ready))
        try:
            self._read_and_process(ready, t0)
        finally:
            self.metrics.processing.set(0)

    def _read_and_process(self, ready: list[Ready], t0: float) -> None:
        files = read_files([Path(r.path) for r in ready], self.plan.spec.limits.max_file_bytes,
                           roots=local_roots([self.opts.folder]), follow_symlinks=self.opts.follow_symlinks)
        taken: dict[str, Ready] = {}
        batch: list[SourceFile | Failed] = []
        for r, f in zip(ready, files, strict=True):
            if Stat.of(r.path) != r.stat or (isinstance(f, SourceFile) and f.size != r.stat.size):
                self.queue.forget(r.path)  # written to while we read it: take it again when quiet
                self.queue.offer(r.path)
                self.metrics.requeued.inc()
                continue
            taken[r.path] = r
            batch.append(f)
        if not batch:
            return
        self.window.listed.extend((f.path, f.sha256) for f in batch if isinstance(f, SourceFile))
        todo, skipped = dedupe(batch, self.known, self.plan.fingerprint)
        result = self._process(todo)
        before = self.writer.counts
        write_result(self.writer, result, self.known_failures)
        after = self.writer.counts
        self.window.rows += (after.items_added - before.items_added) + (after.failures_added - before.failures_added)
        self.window.tally.add(result)
        outcomes: dict[str, Outcome] = {f.path: "duplicate" for f in skipped}
        outcomes.update({row.source_path: "failed" for row in result.failures})
        outcomes.update({row.source_path: "stored" for row in result.items})
        for path, outcome in outcomes.items():
            self.window.add(Taken(path, taken[path].stat, outcome))
        self._count(result, len(skipped))
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        log.info("batch", extra={"fields": {"files": len(batch), "stored": len(result.items),
                                            "failed": len(result.failures), "duplicate": len(skipped),
                                            "seconds": round(time.perf_counter() - t0, 3)}})
        for fr in result.failures:
            log.warning("failure", extra={"fields": {"path": fr.source_path, "code": fr.code, "message": fr.message}})

    def _process(self, todo: list[SourceFile | Failed]) -> BatchResult:
        """Process a batch; if it raises, process file by file so one bad file costs only itself."""
        try:
            result = self.processor.process(todo)
            self._engine_errors = 0
            return result
        except DeviceError:  # the GPU failed, not the files: stop, leaving the open window uncommitted
            raise
        except Exception:
            log.exception("batch failed as a whole; retrying file by file")
        out = BatchResult()
        raised = 0
        for f in todo:
            try:
                one = self.processor.process([f])
            except DeviceError:
                raise
            except Exception as exc:
                raised += 1
                sha, size = (f.sha256, f.size) if isinstance(f, SourceFile) else ("", 0)
                out.failures.append(self.processor.failure(f.path, sha, size, input_error(
                    errors.ENGINE_FAILED, f"processing failed: {type(exc).__name__}: {exc}", f.path)))
                continue
            out.extend(one)
        self._engine_errors = self._engine_errors + 1 if raised == len(todo) else 0
        if self._engine_errors >= MAX_ENGINE_ERRORS:
            raise InternalError(f"the engine failed on every file of {MAX_ENGINE_ERRORS} batches in a row",
                                code="WATCH_ENGINE")
        return out

    def _count(self, result: BatchResult, duplicates: int) -> None:
        m = self.metrics
        m.duplicates.inc(duplicates)
        for row in result.items:
            m.processed.inc()
            m.bytes_in.inc(row.source_bytes)
            m.bytes_out.inc(row.bytes)
            m.similarity.observe(row.similarity)
            if row.quality:
                m.quality.observe(row.quality)
        for fr in result.failures:
            m.failed.labels(code=fr.code).inc()

    # -- committing ------------------------------------------------------------------------------

    def _commit(self, reason: str) -> None:
        w, o = self.window, self.opts
        if not w.files:
            return
        w.tally.close()
        s = w.summary
        self._commits += 1
        extra = {"watch": {"reason": reason, "sequence": self._commits, "commit_every": o.commit_every,
                           "commit_interval_s": o.commit_interval, "quiet_s": o.quiet,
                           "mode": self.detector.mode if self.detector else "", "folder": os.path.abspath(o.folder)}}
        meta = commit_metadata("watch", self.plan, self.processor, s, roots=[o.folder], branch=o.branch,
                               listed=w.listed, parent=self.writer.base_snapshot, started_at=w.started_at,
                               extra=extra)
        message = o.message or f"preprocess watch: {s.stored} stored, {s.failed} failed"
        t0 = time.perf_counter()
        snapshot = self.writer.commit(message, meta)
        seconds = time.perf_counter() - t0
        committed_at = time.time()
        m = self.metrics
        if snapshot is not None:
            m.commits.labels(reason=reason).inc()
            m.commit_seconds.observe(seconds)
            m.last_commit.set(committed_at)
            for f in w.files:
                if f.outcome != "duplicate":
                    m.close_to_commit.observe(max(0.0, committed_at - f.closed_at))
        else:
            self._commits -= 1
        log.info("commit" if snapshot else "settled", extra={"fields": {
            "snapshot": snapshot, "reason": reason, "files": len(w.files), "stored": s.stored, "failed": s.failed,
            "duplicate": s.skipped, "seconds": round(seconds, 4)}})
        self.window = self._new_window()
        if o.move_to:
            try:
                for src, _ in move_settled(w.files, o.folder, o.move_to):
                    self.queue.discard(src)
            except OSError as exc:
                log.error("cannot move committed files", extra={"fields": {"error": str(exc)}})

    def _gauges(self) -> None:
        m, q = self.metrics, self.queue
        m.queued.set(len(q))
        m.queue_peak.set(q.peak)
        m.in_flight.set(len(self.window.files))
        if q.seen > self._seen:
            m.seen.inc(q.seen - self._seen)
            self._seen = q.seen
        if q.refused > self._refused:
            m.refused.inc(q.refused - self._refused)
            self._refused = q.refused
        if self.detector is not None and self.detector.scans > self._scans:
            m.scans.inc(self.detector.scans - self._scans)
            self._scans = self.detector.scans


def run_watch(opts: WatchOptions) -> int:
    return WatchDaemon(opts).run()
