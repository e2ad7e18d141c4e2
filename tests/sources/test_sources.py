"""Reading local sources safely (issue 16, items 1 and 2): no read blocks, nothing is read outside the
input folders through a symlink unless asked, and a refused link records nothing about its target.
Every input here is generated in a tmp folder (FIFOs, links to /etc/passwd, links out of the root)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from preprocess.core.errors import InputError
from preprocess.sources.files import list_sources, local_roots, read_source
from tests.deepfs import deep_folders
from tests.paths import ROOT
from tests.plain import column, open_root

CLI = [sys.executable, "-m", "preprocess"]
PASSWD = Path("/etc/passwd")


def _read(path: Path, root: Path, **kw: bool) -> InputError | bytes:
    """read_source in a thread with a deadline: a blocking read fails the test instead of hanging it."""
    out: list[InputError | bytes] = []

    def go() -> None:
        try:
            out.append(read_source(path, max_bytes=1 << 26, roots=local_roots([root]), **kw).data)
        except InputError as exc:
            out.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(10)
    assert out, f"reading {path} blocked"
    return out[0]


def test_a_symlink_to_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    fifo = root / "p.fifo"
    os.mkfifo(fifo)
    (root / "y.jpg").symlink_to(fifo)  # inside the root: followed, then refused as not a regular file
    got = _read(root / "y.jpg", root)
    assert isinstance(got, InputError) and got.code == "E_NOT_FILE" and "FIFO" in got.message
    assert got.hint


def test_a_broken_link_says_where_it_leads(tmp_path: Path) -> None:
    """A newcomer's walkthrough (session 7): a link to nothing was "cannot read: No such file or directory",
    hint "check the file's permissions"."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "dang.jpg").symlink_to("missing.jpg")
    got = _read(root / "dang.jpg", root)
    assert isinstance(got, InputError) and got.code == "E_UNREADABLE"
    assert got.message == "a broken link: it leads to missing.jpg, which is not there", got.message
    assert "what it leads to exists" in got.hint


def test_links_out_of_the_root_are_refused_unless_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "in", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (outside / "photo.jpg").write_bytes(b"\xff\xd8\xff outside")
    (root / "zz-inside.jpg").write_bytes(b"\xff\xd8\xff inside")
    (root / "sub").mkdir()
    (root / "sub" / "in-link.jpg").symlink_to(root / "zz-inside.jpg")
    (root / "out.jpg").symlink_to(outside / "photo.jpg")
    (root / "p.jpg").symlink_to(PASSWD)
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "again").symlink_to(root / "sub", target_is_directory=True)  # inside: left to the folder itself
    listed = {p.name for p in list_sources([root])}
    # a link to a folder outside is listed itself (a failure row, E_SYMLINK_OUTSIDE: it was silently ignored)
    assert listed == {"zz-inside.jpg", "in-link.jpg", "out.jpg", "p.jpg", "dirlink"}
    got = _read(root / "dirlink", root)
    assert isinstance(got, InputError) and got.code == "E_SYMLINK_OUTSIDE"
    followed = {str(p.relative_to(root)) for p in list_sources([root], follow_symlinks=True)}
    assert followed == {"zz-inside.jpg", "sub/in-link.jpg", "out.jpg", "p.jpg", "dirlink/photo.jpg"}
    assert _read(root / "sub" / "in-link.jpg", root) == b"\xff\xd8\xff inside"
    for name in ("out.jpg", "p.jpg", "dirlink/photo.jpg"):
        got = _read(root / name, root)
        assert isinstance(got, InputError) and got.code == "E_SYMLINK_OUTSIDE", name
        assert str(root / name) == got.path and "--follow-symlinks" in got.hint
    assert _read(root / "out.jpg", root, follow_symlinks=True) == b"\xff\xd8\xff outside"
    # a file named as a root is confined to its folder (`run in/*.jpg` is no way around the rule)
    got = _read(root / "p.jpg", root / "p.jpg")
    assert isinstance(got, InputError) and got.code == "E_SYMLINK_OUTSIDE"
    # without roots: the file's own folder
    with pytest.raises(InputError) as no_roots:
        read_source(root / "out.jpg", max_bytes=1 << 20)
    assert no_roots.value.code == "E_SYMLINK_OUTSIDE"


def _store_columns(store: Path) -> tuple[dict[str, list[str]], dict[str, list[object]]]:
    root = open_root(store)
    items = {k: [str(v) for v in column(root, f"items/{k}")] for k in ("source_path", "source_sha256")}
    failures = {k: list(column(root, f"failures/{k}")) for k in ("source_path", "code", "source_sha256",
                                                                  "source_bytes", "message")}
    return items, failures


def _run(root: Path, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "run", str(root), "--store", str(store), "--engine", "pillow", "--json", *extra],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_run_refuses_fifos_and_outside_links_and_follows_only_when_asked(tmp_path: Path,
                                                                        small_photos: list[Path]) -> None:
    """The red-team's reproduction: a FIFO link hung `run` forever (holding the writer lock), and
    `ln -s /etc/passwd in/p.jpg` recorded the sha256 and size of /etc/passwd."""
    root, outside = tmp_path / "in", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    photo, other = small_photos[0], small_photos[1]
    (root / photo.name).write_bytes(photo.read_bytes())
    (outside / other.name).write_bytes(other.read_bytes())
    os.mkfifo(root / "p.fifo")  # not an image name: not listed itself
    os.mkfifo(tmp_path / "q.fifo")
    (root / "y.jpg").symlink_to(root / "p.fifo")
    (root / "z.jpg").symlink_to(tmp_path / "q.fifo")
    (root / "p.jpg").symlink_to(PASSWD)
    (root / "o.jpg").symlink_to(outside / other.name)
    (root / "i.jpg").symlink_to(root / photo.name)  # inside: same content, deduped, not a failure
    store = tmp_path / "s.icechunk"
    proc = subprocess.run([*CLI, "run", str(root), "--store", str(store), "--engine", "pillow", "--json"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    items, failures = _store_columns(store)
    assert items["source_path"] == [str(root / photo.name)] or items["source_path"] == [str(root / "i.jpg")]
    by_path = {Path(str(p)).name: i for i, p in enumerate(failures["source_path"])}
    assert set(by_path) == {"y.jpg", "z.jpg", "p.jpg", "o.jpg"}
    assert failures["code"][by_path["y.jpg"]] == "E_NOT_FILE"
    for name in ("z.jpg", "p.jpg", "o.jpg"):
        assert failures["code"][by_path[name]] == "E_SYMLINK_OUTSIDE"
    passwd_sha = hashlib.sha256(PASSWD.read_bytes()).hexdigest()
    for i in by_path.values():  # nothing about a refused target is recorded
        assert failures["source_sha256"][i] == "" and int(str(failures["source_bytes"][i])) == 0
    assert passwd_sha not in items["source_sha256"]

    followed = tmp_path / "f.icechunk"
    proc = subprocess.run([*CLI, "run", str(root), "--store", str(followed), "--engine", "pillow", "--json",
                           "--follow-symlinks"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr  # FIFOs are still refused; /etc/passwd is read: not an image
    items, failures = _store_columns(followed)
    assert hashlib.sha256(other.read_bytes()).hexdigest() in items["source_sha256"]
    codes = {Path(str(p)).name: c for p, c in zip(failures["source_path"], failures["code"], strict=True)}
    assert codes == {"y.jpg": "E_NOT_FILE", "z.jpg": "E_NOT_FILE", "p.jpg": "E_NOT_IMAGE"}


def test_source_paths_are_recorded_by_one_rule_however_typed(tmp_path: Path, small_photos: list[Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: the same folder typed relative, with ./ or a trailing slash, absolute, or through a
    symlinked folder records the same absolute paths (under the root's resolved folder); a link inside
    the root keeps its own name, and a link out of it is still refused."""
    real = tmp_path / "data" / "photos"
    real.mkdir(parents=True)
    for p in small_photos[:2]:
        (real / p.name).write_bytes(p.read_bytes())
    (real / "zz-inside.jpg").symlink_to(real / small_photos[0].name)
    (real / "out.jpg").symlink_to(PASSWD)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    expected = sorted(os.path.join(os.path.realpath(real), n) for n in (*(p.name for p in small_photos[:2]),
                                                                         "zz-inside.jpg", "out.jpg"))
    typings = ("data/photos", "./data/photos/", "data//photos", str(real), "link", "./link/", str(tmp_path / "link"))
    for typed in typings:
        assert [str(p) for p in list_sources([typed])] == expected, typed
    one = small_photos[0].name
    assert [str(p) for p in list_sources([f"link/{one}"])] == [os.path.join(os.path.realpath(real), one)]
    from preprocess.drivers.run import JobOptions, run_job

    summary = run_job(JobOptions(sources=["./link/"], store="s.icechunk", engine="pillow"))
    items, failures = _store_columns(tmp_path / "s.icechunk")
    stored = [e for e in expected if not e.endswith(("zz-inside.jpg", "out.jpg"))]
    assert sorted(map(str, items["source_path"])) == stored
    assert [Path(str(p)).name for p in failures["source_path"]] == ["out.jpg"]
    assert failures["code"] == ["E_SYMLINK_OUTSIDE"] and summary.skipped == 1  # zz-inside.jpg: the same content


def test_a_folder_that_cannot_be_listed_is_a_failure_not_nothing(tmp_path: Path) -> None:
    """A folder whose path is over the system's limit (or that may not be read) was skipped without a word:
    `2 found, 2 stored` for a folder of three images (a hostile-input sweep, 2026-12-06)."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "top.jpg").write_bytes(b"\xff\xd8\xff top")
    deep_folders(root, file=("deep.jpg", b"\xff\xd8\xff deep"))
    listed = list_sources([root])
    assert len(listed) == 2 and root / "top.jpg" in listed
    (deep,) = (p for p in listed if p.name != "top.jpg")
    got = _read(deep, root)
    assert isinstance(got, InputError) and got.code == "E_UNREADABLE" and got.path == str(deep)


def test_every_name_a_decoded_format_goes_by_is_listed(tmp_path: Path) -> None:
    """A .pnm, .pbm or .jfif file (formats that decode) was left out of the listing without a word (a hostile-input
    audit, session 8); each decodes and is stored."""
    from PIL import Image

    from preprocess.pipeline.images import decode_rgb

    im = Image.new("RGB", (64, 48), (200, 30, 30))
    for name, fmt in (("a.jfif", "JPEG"), ("b.pnm", "PPM"), ("d.dib", "BMP")):
        im.save(tmp_path / name, fmt)
    im.convert("1").save(tmp_path / "c.pbm", "PPM")
    listed = [p.name for p in list_sources([str(tmp_path)])]
    assert listed == ["a.jfif", "b.pnm", "c.pbm", "d.dib"]
    assert all(decode_rgb((tmp_path / n).read_bytes()).size == (64, 48) for n in listed)
