"""A small real filesystem that fills up: a tmpfs mounted for one test, and a filler file that takes
its last byte. ENOSPC then comes from the kernel, as on a full disk (no mock anywhere).

Mounting needs root (CAP_SYS_ADMIN): elsewhere the tests that need it skip and say so. Not used, on
purpose: RLIMIT_FSIZE (a per-file limit: EFBIG and SIGXFSZ, not ENOSPC, and it also hits the lock
and log files), a loop device (needs root as well, and mkfs). ``tests/store/test_full.py`` also has a
check that runs anywhere: /dev/full, whose every write fails with the kernel's ENOSPC.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a ``size`` tmpfs (e.g. ``"8m"``) at ``where`` for the block; skip the test when this
    process cannot mount one."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with a small tmpfs, and mounting one needs root")
    where.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                           capture_output=True, text=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {mount.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Write a file until the kernel says ENOSPC; returns it (delete it to free the space)."""
    filler = disk / "filler.bin"
    block = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (65536, 4096, 1):  # big blocks, then the last pages
            while True:
                try:
                    os.write(fd, block[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def free_bytes(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize
