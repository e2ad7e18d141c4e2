"""The daemon's parts in isolation: the bounded quiet-period queue, the folder scan, options, logs."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pytest

from preprocess.core.errors import ConfigError
from preprocess.drivers.watch.detect import Detector, Scanning, filesystem_type
from preprocess.drivers.watch.logs import configure
from preprocess.drivers.watch.options import WatchOptions, parse_address, parse_duration
from preprocess.drivers.watch.queue import FileQueue, Stat
from preprocess.drivers.watch.window import NAME_MAX, Outcome, Taken, move_settled, numbered
from tests.deepfs import deep_folders, unlistable_in


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_file_is_ready_only_after_its_quiet_period(tmp_path: Path) -> None:
    clock = Clock()
    q = FileQueue(10, quiet=2.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"x" * 10)
    assert q.offer(str(f))
    q.settle()  # first look: size and mtime recorded
    clock.now += 1.9
    assert q.settle() == 0
    with f.open("ab") as fh:  # the writer reopens and appends: the quiet period starts again
        fh.write(b"y")
    clock.now += 0.5
    assert q.settle() == 0
    clock.now += 1.9
    assert q.settle() == 0
    clock.now += 0.2
    assert q.settle() == 1
    (taken,) = q.take(5)
    assert taken.path == str(f) and taken.stat == Stat.of(str(f)) and taken.stat.size == 11
    # the same version is never taken twice; a new version is
    assert q.offer(str(f))
    q.settle()
    assert len(q) == 0
    f.write_bytes(b"z" * 12)
    q.offer(str(f))
    q.settle()
    clock.now += 2.1
    assert q.settle() == 1


def test_a_file_held_open_waits_until_closed_or_the_hold_limit(tmp_path: Path) -> None:
    clock = Clock()
    q = FileQueue(10, quiet=1.0, open_hold=30.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"partial")
    q.opened(str(f))
    q.offer(str(f))
    q.settle()
    clock.now += 5
    assert q.settle() == 0  # quiet, but a writer still has it open
    q.closed(str(f))
    assert q.settle() == 1
    g = tmp_path / "b.jpg"
    g.write_bytes(b"held forever")
    q.opened(str(g))
    q.offer(str(g))
    q.settle()
    clock.now += 31
    assert q.settle() == 1  # a lost close event cannot stall it forever


def test_the_queue_is_bounded_and_remembers_it_overflowed(tmp_path: Path) -> None:
    clock = Clock()
    q = FileQueue(4, quiet=0.0, clock=clock)
    paths = []
    for i in range(10):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(bytes([i]) * 5)
        paths.append(str(p))
    accepted = [q.offer(p) for p in paths]
    assert accepted == [True] * 4 + [False] * 6
    assert len(q) == 4 and q.peak == 4 and q.refused == 6
    assert not q.take_overflow()  # no room yet
    q.settle()
    q.settle()
    assert len(q.take(2)) == 2
    assert q.take_overflow() and not q.take_overflow()  # once, when there is room


def test_gone_files_leave_the_queue(tmp_path: Path) -> None:
    q = FileQueue(4, quiet=0.0)
    p = tmp_path / "a.jpg"
    p.write_bytes(b"1")
    q.offer(str(p))
    p.unlink()
    q.settle()
    assert len(q) == 0


def test_a_scan_offers_image_files_only_and_stops_when_the_queue_is_full(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "done").mkdir()
    for name in ("a.jpg", "b.PNG", "sub/c.tif", "notes.txt", ".partial.jpg", ".hidden/d.jpg", "done/e.jpg"):
        (tmp_path / name).write_bytes(b"data")
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp_path), q, Scanning(poll=True, rescan_interval=60.0, exclude=(str(tmp_path / "done"),)))
    assert det.scan(str(tmp_path)) == 3
    q.settle()
    q.settle()
    assert sorted(Path(r.path).name for r in q.take(10)) == ["a.jpg", "b.PNG", "c.tif"]
    assert det.scan(str(tmp_path)) == 0  # handled versions are not offered again
    small = FileQueue(1, quiet=0.0)
    det2 = Detector(str(tmp_path), small, Scanning(poll=True, rescan_interval=60.0))
    assert det2.scan(str(tmp_path)) == 1 and small.overflowed


def test_a_store_inside_the_watched_folder_is_never_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store given inside the watched folder (an operator's walkthrough): every commit writes dozens of files
    there, each an event the detector looked at. It is excluded as --move-to is, by its absolute path, whatever
    way it was written; an s3:// store excludes nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cams.icechunk" / "chunks").mkdir(parents=True)
    (tmp_path / "cams.icechunk" / "chunks" / "looks-like.jpg").write_bytes(b"data")
    (tmp_path / "a.jpg").write_bytes(b"data")
    opts = WatchOptions(folder=".", store="cams.icechunk", move_to="done")
    assert opts.never_taken() == ("done", str(tmp_path / "cams.icechunk"))
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp_path), q, Scanning(poll=True, rescan_interval=60.0, exclude=opts.never_taken()))
    assert det.scan(str(tmp_path)) == 1
    assert WatchOptions(folder=".", store="s3://bucket/cams").never_taken() == ()
    assert det.scan(str(tmp_path / "cams.icechunk")) == 0  # a folder made in the store asks for a rescan of it
    for inside in (".", str(tmp_path.parent)):  # the store is the watched folder, or holds it: nothing to watch
        with pytest.raises(ConfigError, match="cannot be the watched folder") as refused:
            WatchOptions(folder=".", store=inside).check()
        assert refused.value.code == "WATCH_OPTION"


def test_filesystem_type_reads_the_longest_mount_point(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n")
    assert filesystem_type(tmp_path / "x", str(mounts)) == "nfs4"
    assert filesystem_type("/usr", str(mounts)) == "ext4"
    q = FileQueue(1, quiet=0.0)
    assert Detector(str(tmp_path), q, Scanning(poll_interval=1, rescan_interval=1)).mode in ("inotify", "polling")


def test_durations_addresses_and_option_checks(tmp_path: Path) -> None:
    assert parse_duration("30s", name="x") == 30.0
    assert parse_duration("500ms", name="x") == 0.5
    assert parse_duration("2m", name="x") == 120.0
    assert parse_duration("1.5", name="x") == 1.5
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("soon", name="--commit-interval")
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("9400") == ("127.0.0.1", 9400)
    assert parse_address("[::1]:9400") == ("::1", 9400)
    assert parse_address("off") is None
    with pytest.raises(ConfigError):
        parse_address("host:port")
    with pytest.raises(ConfigError, match="does not exist"):
        WatchOptions(folder=str(tmp_path / "missing"), store=str(tmp_path / "s")).check()
    with pytest.raises(ConfigError, match="commit-every"):
        WatchOptions(folder=str(tmp_path), store=str(tmp_path / "s"), commit_every=0).check()
    with pytest.raises(ConfigError, match="watched folder itself"):
        WatchOptions(folder=str(tmp_path), store=str(tmp_path / "s"), move_to=str(tmp_path)).check()


def test_json_logs_are_one_object_per_line() -> None:
    buf = io.StringIO()
    log = configure("json", "info", stream=buf)
    log.info("commit", extra={"fields": {"snapshot": "ABC", "files": 3}})
    log.debug("hidden")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = buf.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["event"] == "commit" and first["snapshot"] == "ABC" and first["files"] == 3
    assert first["level"] == "info" and first["logger"] == "preprocess.drivers.watch" and first["ts"].endswith("+00:00")
    assert "ValueError: boom" in json.loads(lines[1])["exception"]
    assert len(lines) == 2
    with pytest.raises(ConfigError):
        configure("xml")
    logging.getLogger("preprocess.drivers.watch").handlers.clear()


def test_a_folder_reached_through_a_link_is_scanned_at_its_real_path(tmp_path: Path) -> None:
    """`watch /data/cam --move-to /mnt/disk/cam/done` where /data is a link to /mnt/disk: the folder and
    its exclusions are compared resolved, so the moved-away files are never taken again."""
    tmp = tmp_path.resolve()
    real = tmp / "disk" / "cam"
    (real / "done").mkdir(parents=True)
    (tmp / "data").symlink_to(tmp / "disk")
    (real / "a.jpg").write_bytes(b"data")
    (real / "done" / "b.jpg").write_bytes(b"data")
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp / "data" / "cam"), q,
                   Scanning(poll=True, rescan_interval=60.0, exclude=(str(real / "done"),)))
    assert det.folder == str(real)
    assert det.scan(det.folder) == 1
    q.settle()
    q.settle()
    assert [Path(r.path) for r in q.take(10)] == [real / "a.jpg"]


def test_a_folder_the_scan_cannot_list_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder the scan could not list (a path over the system's limit here; no permission elsewhere) was
    skipped without a word (a hostile-input sweep, 2026-12-06)."""

    (tmp_path / "a.jpg").write_bytes(b"data")
    deep_folders(tmp_path)
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp_path), q, Scanning(poll=True, rescan_interval=60.0))
    with caplog.at_level(logging.WARNING, logger="preprocess.drivers.watch"):
        assert det.scan(str(tmp_path)) == 2  # a.jpg, and the folder: taken like a file, its read fails
        q.settle()
        q.settle()
        taken = q.take(10)
        assert det.scan(str(tmp_path)) == 0  # handled: not offered again
    said = [r.getMessage() for r in caplog.records if "cannot list the folder" in r.getMessage()]
    assert len(said) == 1 and "not ingested" in said[0]
    (deep,) = (r for r in taken if not r.path.endswith("a.jpg"))
    assert len(deep.path) > 4096 and deep.stat == Stat.of(deep.path)


def test_moving_a_long_name_beside_its_namesake_and_what_cannot_be_moved(tmp_path: Path) -> None:
    """--move-to: a 254-byte name already taken in done/ became a 256-byte one with ".1", over a file name's
    255 bytes; the ENAMETOOLONG stopped every other move of the batch (a hostile-input sweep, 2026-12-07).
    The stem is cut to fit, a file that cannot be moved is reported alone, and a folder that could not be
    listed (taken as a failure row) is never moved."""
    folder, to = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    long_name = "é" * 124 + "xx.jpg"  # 254 bytes
    (to / "done").mkdir(parents=True)
    (to / "done" / long_name).write_bytes(b"an earlier one")
    files = []
    outcomes: list[tuple[str, Outcome]] = [(long_name, "stored"), ("b.jpg", "stored"), ("c.jpg", "failed")]
    for name, outcome in outcomes:
        (folder / name).write_bytes(name.encode())
        st = Stat.of(str(folder / name))
        assert st is not None
        files.append(Taken(str(folder / name), st, outcome))
    deep_folders(folder / "sub")  # a folder the scan cannot list: taken as a failure row, never moved
    deep = unlistable_in(folder / "sub")
    files.append(Taken(deep, Stat.of(deep) or Stat(0, 0), "failed"))
    (to / "failed").write_text("a file where failed/ should be")  # c.jpg cannot be moved
    moves = move_settled(files, str(folder), str(to))
    moved = {Path(a).name: Path(b) for a, b in moves.moved}
    assert sorted(moved) == ["b.jpg", long_name]
    assert len(os.fsencode(moved[long_name].name)) <= NAME_MAX and moved[long_name].name.endswith(".1.jpg")
    assert moved[long_name].read_bytes() == long_name.encode() and moved["b.jpg"] == to / "done" / "b.jpg"
    assert [Path(p).name for p, _ in moves.failed] == ["c.jpg"] and (folder / "c.jpg").exists()
    assert not [p for p, _ in moves.failed if p == deep] and not (to / "failed" / "sub").exists()
    assert numbered("a.jpg", 2) == "a.2.jpg" and len(os.fsencode(numbered("é" * 200 + ".jpg", 12))) <= NAME_MAX
    cut = numbered("é" * 125 + "x.jpg", 1)  # 255 bytes: the cut falls inside an "é"; it is made before it
    assert cut == "é" * 124 + ".1.jpg" and cut.encode("utf-8")


def test_an_event_rescan_offers_no_hidden_gone_or_listable_folder(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A rescan started by a folder event walks that folder alone: an unlistable folder under a hidden one
    was offered (a row for what a full scan never looks at), and a folder gone before its rescan was logged
    as "cannot list ... recorded as E_UNREADABLE" while nothing was recorded (a review)."""
    deep_folders(tmp_path / ".cache")
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp_path), q, Scanning(poll=True, rescan_interval=60.0))
    with caplog.at_level(logging.WARNING, logger="preprocess.drivers.watch"):
        assert det.scan(str(tmp_path / ".cache")) == 0
        assert det.scan(str(tmp_path / "gone")) == 0
        assert det.scan(str(tmp_path)) == 0
    assert not [r for r in caplog.records if "cannot list" in r.getMessage()]


@pytest.mark.parametrize("follow", [False, True])
def test_a_scan_takes_what_run_lists_links_to_folders_included(tmp_path: Path, follow: bool) -> None:
    """watch walked its own way: a link to a folder outside was skipped without a row (run records
    E_SYMLINK_OUTSIDE), and --follow-symlinks never walked into one (run does). Both now share one walk, so
    a scan offers exactly what `run` lists; a link made while watching is looked at at once."""
    from watchdog.events import FileCreatedEvent

    from preprocess.drivers.watch.detect import _Handler
    from preprocess.sources.files import list_sources

    tmp = tmp_path.resolve()
    folder, outside = tmp / "in", tmp / "outside"
    (folder / "sub").mkdir(parents=True)
    (outside / "dir").mkdir(parents=True)
    for f in (folder / "a.jpg", folder / "sub" / "b.jpg", outside / "c.jpg", outside / "dir" / "d.jpg"):
        f.write_bytes(f.name.encode())
    (folder / "file.jpg").symlink_to(outside / "c.jpg")
    (folder / "out").symlink_to(outside / "dir")
    (folder / "again").symlink_to(folder / "sub")  # inside: left to sub/ itself
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "e.jpg").write_bytes(b"e")
    q = FileQueue(20, quiet=0.0)
    det = Detector(str(folder), q, Scanning(poll=True, rescan_interval=60.0, follow_symlinks=follow))
    listed = sorted(map(str, list_sources([str(folder)], follow_symlinks=follow)))
    assert det.scan(det.folder) == len(listed)
    q.settle()
    q.settle()
    assert sorted(r.path for r in q.take(20)) == listed
    want = ["a.jpg", "file.jpg", "out/d.jpg" if follow else "out", "sub/b.jpg"]
    assert [os.path.relpath(p, folder) for p in listed] == want
    (outside / "late").mkdir()
    (outside / "late" / "f.jpg").write_bytes(b"f")
    (folder / "late").symlink_to(outside / "late")
    _Handler(det).on_any_event(FileCreatedEvent(str(folder / "late")))  # what inotify says of a new link
    assert det._dirs == {str(folder)}  # a rescan of the link's folder is asked for
    assert det.scan(str(folder)) == 1
    q.settle()
    q.settle()
    assert [os.path.relpath(r.path, folder) for r in q.take(20)] == ["late/f.jpg" if follow else "late"]


def test_a_file_replaced_by_other_bytes_of_the_same_size_and_mtime_is_taken_again(tmp_path: Path) -> None:
    """`cp -p` over a file, or rsync's hidden temp file renamed over it, with the same size and mtime (fixed-size
    frames, a preserved or coarse timestamp): watch took it as the version it had handled and never stored the
    new bytes, which `run` stores (a hostile-input audit, session 8). The ctime tells them apart."""
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp_path), q, Scanning(poll=True, rescan_interval=60.0))
    frame = tmp_path / "frame.ppm"
    frame.write_bytes(b"P6\n2 1\n255\n" + bytes(6))
    mtime = frame.stat().st_mtime_ns

    def taken() -> list[str]:
        det.scan(det.folder)
        q.settle()
        q.settle()
        return [Path(r.path).name for r in q.take(10)]

    assert taken() == ["frame.ppm"]
    assert taken() == []  # handled: the same version is not taken twice
    time.sleep(0.02)  # past the kernel's coarse clock tick: the new file's ctime is later
    temp = tmp_path / ".frame.ppm.tmp"  # rsync: a hidden temp file, then a rename over the old one
    temp.write_bytes(b"P6\n2 1\n255\n" + bytes(range(6)))
    os.utime(temp, ns=(mtime, mtime))
    temp.rename(frame)
    assert taken() == ["frame.ppm"]
    time.sleep(0.02)  # cp -p: the same inode rewritten, its mtime put back; its ctime moves
    frame.write_bytes(b"P6\n2 1\n255\n" + bytes(range(10, 16)))
    os.utime(frame, ns=(mtime, mtime))
    assert taken() == ["frame.ppm"]


def test_a_folder_removed_and_made_again_is_watched_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`rm -rf in; mkdir in` (or `mv in in.1; mkdir in`): inotify watched the old folder's inode, its events
    stopped without a word and /healthz said the watcher lived; new files waited for the 5-minute rescan (a
    hostile-input audit, session 8). The loop's check says it, fails `alive` while no folder is there, and
    watches the new folder."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(folder), q, Scanning(rescan_interval=3600.0))
    det.start()
    try:
        det.check_folder()
        assert det.alive
        shutil.rmtree(folder)
        with caplog.at_level(logging.WARNING, logger="preprocess.drivers.watch"):
            det.check_folder()
            assert not det.alive
            folder.mkdir()
            det.check_folder()
        assert det.alive and [r.getMessage().split(":")[0] for r in caplog.records] == [
            "the watched folder is gone", f"the watched folder {folder.resolve()} was replaced"]
        time.sleep(0.5)  # the scan the new watch asked for has run: what is offered now comes from an event
        (folder / "new.jpg").write_bytes(b"data")
        deadline = time.monotonic() + 10
        while not len(q) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(q) == 1
        shutil.rmtree(folder)  # between two checks, and the new folder may get the old one's inode number
        folder.mkdir()
        deadline, rearmed = time.monotonic() + 10, False
        while not rearmed and time.monotonic() < deadline:  # once inotify's emitter has seen its folder go
            time.sleep(0.05)
            rearmed = det.check_folder()
        assert rearmed and det.alive
        time.sleep(0.5)
        (folder / "newer.jpg").write_bytes(b"data")
        deadline, taken = time.monotonic() + 10, []  # new.jpg's delete event took it out of the queue
        while not taken and time.monotonic() < deadline:  # ready once its writer's close event came
            q.settle()
            taken = [Path(r.path).name for r in q.take(10)]
            time.sleep(0.05)
        assert taken == ["newer.jpg"]
    finally:
        det.stop()


def test_the_lock_on_a_folder_made_anew_is_taken_again_or_said_lost(tmp_path: Path) -> None:
    """The daemon's lock (one daemon that moves files per folder) stayed on the removed folder, so a second daemon
    could claim the new one (a review, session 8). `renew` locks the folder now at the path, or says it cannot."""
    import shutil

    from preprocess.core.errors import ConflictError
    from preprocess.drivers.watch.claim import FolderClaim

    folder = tmp_path / "in"
    folder.mkdir()
    mover = FolderClaim(str(folder), moves=True)
    shutil.rmtree(folder)
    folder.mkdir()
    other = FolderClaim(str(folder), moves=False)  # the old lock no longer guards the new folder
    assert not mover.renew()
    other.release()
    assert mover.renew()
    with pytest.raises(ConflictError):
        FolderClaim(str(folder), moves=False)
    mover.release()
    q = FileQueue(10, quiet=0.0)  # the detector asks for the lock when it watches a folder made anew
    det = Detector(str(folder), q, Scanning(poll=True, rescan_interval=3600.0), relock=lambda: False)
    det.start()
    try:
        folder.rename(tmp_path / "in.1")  # renamed and made anew: the new folder has another inode
        folder.mkdir()
        deadline = time.monotonic() + 10
        while not det.lock_lost and time.monotonic() < deadline:
            det.check_folder()
            time.sleep(0.05)
        assert det.lock_lost and not det.alive  # /healthz fails: a restart meets WATCH_FOLDER_BUSY and says why
    finally:
        det.stop()


def test_a_folder_briefly_unlistable_keeps_its_files_handled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rescan that met a share's brief EIO on a subfolder dropped the handled entries of every file in it
    (as if gone): the next rescan read them all again (a session-8 finding). The scan keeps what it could not
    see. os.scandir is replaced for that folder alone: root lists any folder, and EIO cannot be made here."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jpg").write_bytes(b"data")
    q = FileQueue(10, quiet=0.0)
    det = Detector(str(tmp_path), q, Scanning(poll=True, rescan_interval=60.0))
    assert det.scan(str(tmp_path)) == 1
    q.settle()
    q.settle()
    assert [Path(r.path).name for r in q.take(10)] == ["a.jpg"]
    real_scandir = os.scandir

    def share_hiccup(path: str = ".") -> object:
        if os.fspath(path) == str(tmp_path / "sub"):
            raise OSError(5, "Input/output error", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", share_hiccup)
    det.scan(str(tmp_path))  # the folder itself is offered (its read records E_UNREADABLE, as run does)
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert det.scan(str(tmp_path)) == 0  # a.jpg is still handled: not read again
