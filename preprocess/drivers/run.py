"""The batch job (``preprocess run``): list sources -> read + hash -> ingest -> ONE commit.

Everything that can be checked before touching an image is checked first, and before anything is
created or locked: spec, model, engine (:func:`~preprocess.pipeline.process.plan`), sources (:func:`find_sources`:
none at all is NO_SOURCES), store location and branch (:func:`~preprocess.store.check_target`). A
refused job exits 2 having touched nothing. Each bad source becomes a failure row and the job goes on. Nothing is
visible in the store until the single commit at the end: a killed job leaves the branch at its
last commit, and a rerun skips every (source content, spec fingerprint) already stored. The rules
(dedupe, failures once, provenance, the summary) are :class:`~preprocess.drivers.ingest.Ingest`'s; this
module only feeds it, with reading, processing and storing overlapped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from preprocess.core import interrupts
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.core.progress import Progress, SilentProgress
from preprocess.core.timing import Stopwatch
from preprocess.drivers.ingest import Ingest, JobInfo, Summary, read_files
from preprocess.pipeline.devices import DeviceChoice, EngineChoice
from preprocess.pipeline.process import Failed, PendingBatch, Processor, plan
from preprocess.sources.files import SourceFile, batched, list_sources, local_roots
from preprocess.sources.location import Location, Where
from preprocess.store import open_writer

__all__ = ["JobOptions", "Summary", "find_sources", "run_batches", "run_job"]


@dataclass
class JobOptions:
    sources: Sequence[str]
    store: str
    spec_path: str | None = None
    branch: str = "main"
    message: str = ""
    engine: EngineChoice = "auto"
    device: DeviceChoice = "auto"
    wait: float = 0.0  # seconds to wait for another process writing the same local store
    follow_symlinks: bool = False  # follow symlinks that lead outside the source roots (default: refuse them)


def run_job(opts: JobOptions, progress: Progress | None = None) -> Summary:
    progress = progress or SilentProgress()
    since = Stopwatch()
    p = plan(opts.spec_path, opts.engine, opts.device)
    roots = [Location.of_source(s) for s in opts.sources]  # the locations, parsed once
    paths = find_sources(roots, follow_symlinks=opts.follow_symlinks)
    store = Location.of_store(opts.store)
    with ExitStack() as cleanup:
        ingest = Ingest(open_writer(store, opts.branch, create=True, wait=opts.wait), p,
                        JobInfo(kind="run", roots=roots, store=store), since=since)
        cleanup.callback(ingest.close)
        processor = Processor(p, job_id=ingest.job_id)
        cleanup.callback(processor.close)
        processor.stats.seed_from(ingest.writer.recent_choices(p.fingerprint, p.model))  # the first batch's guesses
        progress.start(len(paths))
        cleanup.callback(progress.finish)
        read = partial(read_files, max_bytes=p.spec.limits.max_file_bytes, roots=local_roots(roots),
                       follow_symlinks=opts.follow_symlinks)
        run_batches(processor, ingest, list(batched(paths, processor.batch_size)), read=read, progress=progress)
        return ingest.commit(opts.message, engine=processor)


def find_sources(roots: Sequence[Where | Location], *, follow_symlinks: bool = False) -> list[Path]:
    """The job's source files (:func:`~preprocess.sources.files.list_sources`); ConfigError NO_SOURCES when
    there are none: a job with nothing to do creates and commits nothing."""
    locations = [Location.of_source(r) for r in roots]
    paths = list_sources(locations, follow_symlinks=follow_symlinks)
    if not paths:
        one = locations[0].text if len(locations) == 1 else None
        raise ConfigError("no image files: nothing to do" if one else
                          f"no image files in {', '.join(loc.text for loc in locations)}: nothing to do",
                          code=ErrorCode.NO_SOURCES, path=one,
                          hint="images are found by their suffix (.jpg, .jpeg, .png, .tif, .webp, .avif, ...); "
                               "hidden files and folders (.name) are skipped; check the path")
    return paths


Reader = Callable[[Sequence[Path]], list[SourceFile | Failed]]


def run_batches(processor: Processor, ingest: Ingest, batches: Sequence[Sequence[Path]], *, read: Reader,
                progress: Progress) -> None:
    """Read (with ``read``, e.g. :func:`~preprocess.drivers.ingest.read_files` with its size limit and symlink
    rules), admit, process and store batch after batch (no commit).

    Three things overlap: a reader thread reads the next batch, the processor's lanes work on
    up to two batches, and this thread stores the older one as soon as it is done.
    """
    queued: deque[PendingBatch] = deque()  # submitted, not yet stored

    def store_oldest() -> None:
        stored = ingest.store(queued.popleft().result())
        progress.advance(0, stored.bytes_in, stored.bytes_out)  # the images counted as their chunks finished

    processor.on_chunk = progress.advance  # the bar moves as each lane finishes a chunk, not per batch
    with ExitStack() as hook, ThreadPoolExecutor(max_workers=1, thread_name_prefix="reader") as reader:
        hook.callback(setattr, processor, "on_chunk", None)
        ahead: Future[list[SourceFile | Failed]] | None = reader.submit(read, batches[0]) if batches else None
        for n in range(len(batches)):
            assert ahead is not None
            interrupts.check()  # a signal a library swallowed still stops the job here
            with ingest.timings.stage("read"):
                files = ahead.result()
            ahead = reader.submit(read, batches[n + 1]) if n + 1 < len(batches) else None
            admitted = ingest.admit(files)
            progress.advance(len(files) - len(admitted.todo))  # already stored: done at once
            queued.append(processor.submit(admitted.todo))
            # Keep the next batch queued on the lanes while storing this one; but while there is no
            # first-probe guess yet (a fresh branch), wait, so the next batch starts from this one's.
            if len(queued) > 1 or processor.stats.guess() is None:
                store_oldest()
        while queued:
            store_oldest()
