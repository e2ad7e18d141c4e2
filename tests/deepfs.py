"""A folder no walk can list, made as root can make it: folders under ``top`` whose whole path is over
PATH_MAX (4096 bytes), each name short (a folder without read permission is listable by root)."""

from __future__ import annotations

import os
from pathlib import Path

LEVELS = 20  # 20 names of 243 bytes: the path passes 4096 bytes about 16 levels down


def deep_folders(top: Path, *, file: tuple[str, bytes] | None = None) -> None:
    """Make the folders under ``top`` (made if missing); ``file`` (name, bytes) is written in the deepest."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY)
    try:
        for i in range(LEVELS):
            name = f"d{i:02d}" + "x" * 240
            os.mkdir(name, dir_fd=fd)
            fd, old = os.open(name, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        if file is not None:
            with os.fdopen(os.open(file[0], os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
                f.write(file[1])
    finally:
        os.close(fd)


def unlistable_in(top: Path) -> str:
    """The folder under ``top`` that a walk cannot list."""
    found: list[str] = []
    for _ in os.walk(top, onerror=lambda e: found.append(str(e.filename))):
        pass
    return found[0]
