"""The watch daemon: files dropped into a folder become committed dataset rows, continuously.

One loop in the main thread owns the engine and the only writer of the branch:

    quiet files (FileQueue) -> batch -> read + hash -> dedupe -> Processor -> DatasetWriter
                                                                     -> commit (count | interval)

- Dedupe is by content (``sha256:fingerprint``), against the branch and everything taken since
  start, so copies, renames and restarts never add a second row.
- A commit carries the same provenance as ``run`` (kind "watch"). Nothing is visible before it;
  a killed daemon loses only uncommitted work, which the start-up rescan finds again.
- SIGTERM/SIGINT/SIGHUP: stop taking files, finish the batch in flight, commit, exit 0. A second signal
  exits at once (what was not committed is redone at the next start).
- Start-up checks everything before it creates, binds or locks anything: options, spec, model,
  engine, the store's location and branch, then the metrics address; a refusal exits 2.
- A failed write or commit (a full disk, a conflict, a storage error) is not fatal: the window's
  files are forgotten (taken again later, still deduped by content), no file is taken while the
  store is retried with a growing wait (:class:`~preprocess.drivers.watch.backoff.Backoff`; ``/readyz`` says
  why it is not ready, metrics count the errors), and the daemon goes on once a probe can write.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from types import FrameType
from typing import Any

from preprocess.core import errors, interrupts
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import (
    ConflictError,
    DeviceError,
    InternalError,
    PreprocessError,
    StorageError,
    input_error,
)
from preprocess.core.timing import Stopwatch
from preprocess.drivers.ingest import Ingest, JobInfo, read_files
from preprocess.drivers.watch.backoff import Backoff
from preprocess.drivers.watch.claim import FolderClaim
from preprocess.drivers.watch.detect import Detector, Scanning
from preprocess.drivers.watch.logs import log_files
from preprocess.drivers.watch.metrics import Metrics
from preprocess.drivers.watch.options import WatchOptions
from preprocess.drivers.watch.queue import FileQueue, Ready, Stat
from preprocess.drivers.watch.server import StatusServer
from preprocess.drivers.watch.window import Outcome, Taken, Window, move_settled
from preprocess.pipeline.process import BatchResult, Failed, Plan, Processor, plan
from preprocess.rows.provenance import WatchInfo
from preprocess.sources.files import SourceFile, local_roots
from preprocess.sources.location import Location
from preprocess.store import DatasetWriter, check_target, open_repo, probe_writable
from preprocess.store.lock import lock_repo

log = logging.getLogger("preprocess.drivers.watch")

TICK = 0.05  # the loop's idle sleep (s)
MAX_ENGINE_ERRORS = 3  # consecutive batches failing as a whole: the engine is broken, not the files


@dataclass
class _Work:
    """What a running daemon works with: the plan, the engine, the branch's ingest (replaced when the
    writer is reopened) and the open commit window."""

    plan: Plan
    processor: Processor
    ingest: Ingest
    window: Window = field(default_factory=Window)
    engine_errors: int = 0  # consecutive batches that failed as a whole
    writing: bool = True  # the writer is open (False from a store failure until a retry reopens it)

    def close_writer(self) -> None:
        self.ingest.close()  # the one in use now: a reopen replaces it
        self.writing = False


class WatchDaemon:
    def __init__(self, opts: WatchOptions) -> None:
        opts.check()
        self.opts = opts
        self.folder = os.path.realpath(opts.folder)  # resolved once: detection, reads, moves, logs, provenance
        self._roots = local_roots([self.folder])
        self.metrics = Metrics()
        self.job_id = uuid.uuid4().hex
        self.queue = FileQueue(opts.queue_size, opts.quiet)
        self.metrics.queue_capacity.set(opts.queue_size)
        self._stop = threading.Event()
        self._signals = 0
        self._state = "starting"
        self._heartbeat = time.monotonic()
        self._commits = 0
        self.backoff = Backoff()
        self.server: StatusServer | None = None
        self.detector: Detector | None = None

    # -- probes ----------------------------------------------------------------------------------

    def live(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self._heartbeat
        watching = self.detector is None or self._state != "running" or self.detector.alive
        ok = (self._state == "starting" or age < self.opts.liveness_timeout) and watching
        return ok, {"state": self._state, "loop_age_s": round(age, 3), "watching": watching}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self._state == "running" and not self.backoff.down and self.live()[0]
        return ok, {"state": self._state, "queued": len(self.queue), "store": self.backoff.detail(time.monotonic())}

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
        self.metrics.ready.set(1 if state == "running" and not self.backoff.down else 0)

    @cached_property
    def store(self) -> Location:
        """The dataset's location, parsed once (first when :meth:`run` checks the target)."""
        return Location.of_store(self.opts.store)

    def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code (0 after a clean stop).

        Until it watches, a signal is the command line's interrupt (:mod:`preprocess.core.interrupts`): it
        stops whatever start-up is doing at once (building the model, waiting ``--wait`` for the store's
        lock, the first scan), and the daemon exits 0 having taken nothing. From then on
        (``install_signals``) the first signal finishes the batch and commits."""
        try:
            return self._run(install_signals)
        except interrupts.Interrupted:
            return self._stopped_starting()
        except Exception:
            if interrupts.pending() is None:  # not a signal that a library turned into its own error
                raise
            return self._stopped_starting()

    def _stopped_starting(self) -> int:
        signum = interrupts.handled()
        log.info("stopped", extra={"fields": {"signal": signum.name if signum else "", "during": "start-up",
                                              "commits": 0}})
        return errors.EXIT_OK

    def _run(self, install_signals: bool) -> int:
        with ExitStack() as cleanup:  # closes in reverse: detector, writer, lock, server, engine
            o = self.opts
            p = plan(o.spec_path, o.engine, o.device)  # spec, model, engine: checked before anything is made
            check_target(self.store, o.branch)  # where the store goes, and its branch
            claim = FolderClaim(self.folder, moves=o.move_to is not None, wait=o.wait)  # WATCH_FOLDER_BUSY
            cleanup.callback(claim.release)
            processor = Processor(p, job_id=self.job_id)
            cleanup.callback(processor.close)
            if self._stop.is_set():  # stopped while starting: nothing to do, nothing created
                return errors.EXIT_OK
            self._serve(cleanup)  # binds the address (METRICS_ADDRESS when it cannot)
            work = self._start(cleanup, p, processor)  # the store's lock (STORE_LOCKED when another holds it)
            self._log_listening()  # only now: a daemon refused the store never said it was listening
            # the first batch's guesses: where the branch's stored images like each new one crossed
            processor.stats.seed_from(work.ingest.writer.recent_choices(p.fingerprint, p.model))
            self.detector = self._detect(claim)
            cleanup.callback(self.detector.stop)
            if install_signals:  # from now on a signal stops the loop: the batch in flight is committed
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a hangup too (no exit 129)
                    signal.signal(signum, self._on_signal)
            self._set_state("running")
            self._log_start(work)
            self._loop(work)
            self._shutdown(work)
        log.info("stopped", extra={"fields": {"commits": self._commits}})
        return errors.EXIT_OK

    def _serve(self, cleanup: ExitStack) -> None:
        if self.opts.metrics is None:
            return
        self.server = StatusServer(*self.opts.metrics, live=self.live, ready=self.ready, metrics=self.metrics.render)
        self.server.start()
        cleanup.callback(self.server.stop)

    def _log_listening(self) -> None:
        if self.server is None:
            return
        host, port = self.server.address
        log.info("listening", extra={"fields": {"host": host, "port": port,
                                                "endpoints": ["/healthz", "/readyz", "/metrics"]}})

    def _start(self, cleanup: ExitStack, p: Plan, processor: Processor) -> _Work:
        """Open (or create) and lock the store, and open the branch's writer."""
        o = self.opts
        repo = open_repo(self.store, create=True)
        # The store's writer lock, held for the daemon's life (across writer reopens): a second
        # daemon or a `run` on this dataset fails fast (STORE_LOCKED) or waits --wait seconds.
        lock = lock_repo(repo, wait=o.wait, purpose=f"watch daemon on {self.folder}")
        if lock is not None:
            cleanup.callback(lock.release)
        work = _Work(p, processor, self._ingest(DatasetWriter(repo, o.branch), p))
        cleanup.callback(work.close_writer)
        return work

    def _ingest(self, writer: DatasetWriter, p: Plan) -> Ingest:
        return Ingest(writer, p, JobInfo(kind="watch", roots=[self.opts.folder], store=self.store,
                                         job_id=self.job_id))

    def _detect(self, claim: FolderClaim) -> Detector:
        o = self.opts
        scanning = Scanning(poll=o.poll, poll_interval=o.poll_interval, rescan_interval=o.rescan_interval,
                            exclude=o.never_taken(), follow_symlinks=o.follow_symlinks)
        detector = Detector(self.folder, self.queue, scanning, self.metrics.lost_events.inc, claim.renew)
        detector.start()
        return detector

    def _log_start(self, work: _Work) -> None:
        o, p, d = self.opts, work.plan, self.detector
        assert d is not None
        log.info("watching", extra={"fields": {
            "folder": self.folder, "store": str(Location.of_store(o.store)), "branch": o.branch, "mode": d.mode,
            "fs": d.fs_type, "engine": p.engine, "device": p.device, "fingerprint": p.fingerprint,
            "stored": len(work.ingest.writer.existing_keys()), "job_id": self.job_id}})
        for line in p.spec.warnings():
            log.warning("spec", extra={"fields": {"warning": line}})

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self, work: _Work) -> None:
        o, q, detector = self.opts, self.queue, self.detector
        assert detector is not None
        settle_every = max(0.05, min(0.25, o.quiet / 4))
        next_settle = 0.0
        while not self._stop.is_set():
            now = self._heartbeat = time.monotonic()
            if now >= next_settle:
                q.settle()
                detector.check_folder()  # the folder removed or renamed and made anew: watch (and lock) the new one
                next_settle = now + settle_every
            if q.take_overflow():
                detector.request_rescan()
            took = self._writable(work, now) and self._step(work)
            self._gauges(work)
            if not took:
                self._stop.wait(TICK)

    def _step(self, work: _Work) -> bool:
        """Take a batch when one is due, commit when the window is due; returns whether it took files."""
        o, q = self.opts, self.queue
        ready = q.ready
        took = False
        if ready and (ready >= work.plan.spec.batch.size or q.oldest_ready_age() >= o.batch_wait):
            self._guarded(work, partial(self._batch, work, q.take(work.plan.spec.batch.size)))
            took = True
        reason = work.window.due(rows=work.ingest.pending_rows, every=o.commit_every, interval=o.commit_interval)
        if reason and work.writing:
            self._guarded(work, partial(self._commit, work, reason))
        return took

    def _shutdown(self, work: _Work) -> None:
        dropped = self.queue.drop_ready()
        if self.detector is not None:
            self.detector.stop()
        log.info("draining", extra={"fields": {"in_flight": len(work.window.files), "left_for_next_start": dropped}})
        self._guarded(work, partial(self._commit, work, "shutdown"))

    def _guarded(self, work: _Work, step: Callable[[], None]) -> None:
        """Run a batch or commit step; a storage failure or conflict loses only the open window."""
        try:
            step()
        except (ConflictError, StorageError) as exc:
            self.metrics.commit_errors.inc()
            for f in work.window.files:
                self.queue.forget(f.path)
            self._store_failed(work, exc, "store error: the open window is redone", files=len(work.window.files))
            work.window = Window()

    def _store_failed(self, work: _Work, exc: PreprocessError, event: str, **fields: Any) -> None:
        """Close the writer (what it held is discarded) and wait before the store is retried."""
        delay = self.backoff.failed(exc, time.monotonic())
        self.metrics.store_errors.labels(code=exc.code).inc()
        log.error(event, extra={"fields": {"code": exc.code, "error": exc.one_line(), **fields,
                                           "retry_in_s": delay}})
        work.close_writer()
        if not self._stop.is_set():
            self._set_state("store_unavailable")
        self._gauges(work)

    def _writable(self, work: _Work, now: float) -> bool:
        """Whether files may be taken: the writer is open, or the store's retry is due and it can
        write again (a probe writes, the writer reopens and re-reads the branch; then a rescan finds
        the files of the failed window)."""
        if work.writing:
            return True
        if not self.backoff.due(now):
            return False
        try:
            probe_writable(self.store)
            writer = DatasetWriter(open_repo(self.store, create=False), self.opts.branch)
        except PreprocessError as exc:
            self._store_failed(work, exc, "store retry failed", failures=self.backoff.failures + 1)
            return False
        work.ingest = self._ingest(writer, work.plan)
        work.writing = True
        self.backoff.reopened()
        assert self.detector is not None
        self.detector.request_rescan()
        log.info("store writable again", extra={"fields": {"failures": self.backoff.failures}})
        if not self._stop.is_set():
            self._set_state("running")
        return True

    # -- one batch -------------------------------------------------------------------------------

    def _batch(self, work: _Work, ready: list[Ready]) -> None:
        took = Stopwatch()
        self._gauges(work)
        self.metrics.processing.set(len(ready))
        try:
            self._read_and_process(work, ready, took)
        except (ConflictError, StorageError):
            for r in ready:  # not in the window yet: taken again with the window's files
                self.queue.forget(r.path)
            raise
        finally:
            self.metrics.processing.set(0)

    def _read_and_process(self, work: _Work, ready: list[Ready], took: Stopwatch) -> None:
        files = read_files([Path(r.path) for r in ready], work.plan.spec.limits.max_file_bytes,
                           roots=self._roots, follow_symlinks=self.opts.follow_symlinks)
        taken = self._unchanged(ready, files)
        if not taken:
            return
        admitted = work.ingest.admit([f for f, _ in taken.values()])
        result = self._process(work, admitted.todo)
        work.ingest.store(result)
        outcomes: dict[str, Outcome] = {f.path: "duplicate" for f in admitted.skipped}
        outcomes.update({row.source_path: "failed" for row in result.failures})
        outcomes.update({row.source_path: "stored" for row in result.items})
        for path, outcome in outcomes.items():
            work.window.add(Taken(path, taken[path][1].stat, outcome))
        self.metrics.count_batch(result.items, result.failures, len(admitted.skipped))
        self.metrics.batch_seconds.observe(took.elapsed())
        log.info("batch", extra={"fields": {"files": len(taken), "stored": len(result.items),
                                            "failed": len(result.failures), "duplicate": len(admitted.skipped),
                                            "seconds": round(took.elapsed(), 3)}})
        for fr in result.failures:
            log.warning("failure", extra={"fields": {"path": fr.source_path, "code": fr.code, "message": fr.message}})
        log_files(log, result, [f.path for f in admitted.skipped])  # --log-level debug: a line per file

    def _unchanged(self, ready: list[Ready], files: list[SourceFile | Failed]) -> dict[str, tuple[SourceFile | Failed,
                                                                                                  Ready]]:
        """The files read as they were when they became ready, by path; one written to while it was
        read goes back to the queue (it is taken again once quiet)."""
        taken: dict[str, tuple[SourceFile | Failed, Ready]] = {}
        for r, f in zip(ready, files, strict=True):
            if Stat.of(r.path) != r.stat or (isinstance(f, SourceFile) and f.size != r.stat.size):
                self.queue.forget(r.path)
                self.queue.offer(r.path)
                self.metrics.requeued.inc()
                continue
            taken[r.path] = (f, r)
        return taken

    def _process(self, work: _Work, todo: list[SourceFile | Failed]) -> BatchResult:
        """Process a batch; if it raises, process file by file so one bad file costs only itself."""
        try:
            result = work.processor.process(todo)
            work.engine_errors = 0
            return result
        except DeviceError:  # the GPU failed, not the files: stop, leaving the open window uncommitted
            raise
        except Exception:
            log.exception("batch failed as a whole; retrying file by file")
        out = BatchResult()
        raised = 0
        for f in todo:
            try:
                one = work.processor.process([f])
            except DeviceError:
                raise
            except Exception as exc:
                raised += 1
                sha, size = (f.sha256, f.size) if isinstance(f, SourceFile) else ("", 0)
                out.failures.append(work.processor.failure(f.path, sha, size, input_error(
                    errors.ENGINE_FAILED, f"processing failed: {type(exc).__name__}: {exc}", f.path)))
                continue
            out.extend(one)
        work.engine_errors = work.engine_errors + 1 if raised == len(todo) else 0
        if work.engine_errors >= MAX_ENGINE_ERRORS:
            raise InternalError(f"the engine failed on every file of {MAX_ENGINE_ERRORS} batches in a row",
                                code=ErrorCode.WATCH_ENGINE)
        return out

    # -- committing ------------------------------------------------------------------------------

    def _commit(self, work: _Work, reason: str) -> None:
        w, o = work.window, self.opts
        if not w.files:
            return
        info = WatchInfo(reason=reason, sequence=self._commits + 1, commit_every=o.commit_every,
                         commit_interval_s=o.commit_interval, quiet_s=o.quiet,
                         mode=self.detector.mode if self.detector else "", folder=self.folder)
        s = work.ingest.commit(o.message, engine=work.processor, watch=info)
        if self.backoff.succeeded():
            log.info("store recovered", extra={"fields": {"snapshot": s.snapshot}})
        seconds = s.timings.get("commit", 0.0)
        if s.snapshot is not None:
            self._commits += 1
            self.metrics.observe_commit(reason, seconds, w.files)
        made = {"snapshot": s.snapshot} if s.snapshot else {}  # "settled": every file was a duplicate, no commit
        log.info("commit" if s.snapshot else "settled", extra={"fields": {
            **made, "reason": reason, "files": len(w.files), "stored": s.stored, "failed": s.failed,
            "duplicate": s.skipped, "seconds": round(seconds, 4)}})
        work.window = Window()
        if o.move_to:
            moves = move_settled(w.files, self.folder, o.move_to)
            for src, _ in moves.moved:
                self.queue.discard(src)
            for src, error in moves.failed:
                log.error("cannot move a committed file", extra={"fields": {"path": src, "error": error}})

    def _gauges(self, work: _Work) -> None:
        m, q = self.metrics, self.queue
        m.queued.set(len(q))
        m.queue_peak.set(q.peak)
        m.in_flight.set(len(work.window.files))
        m.store_writable.set(0 if self.backoff.down else 1)
        m.store_backoff.set(self.backoff.delay if self.backoff.down else 0.0)
        m.count_up(seen=q.seen, refused=q.refused, scans=self.detector.scans if self.detector is not None else 0)


def run_watch(opts: WatchOptions) -> int:
    return WatchDaemon(opts).run()
