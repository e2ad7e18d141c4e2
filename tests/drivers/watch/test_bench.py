"""The latency measurement scripts/bench calls: a real daemon, real files, a reader's view."""

from __future__ import annotations

from pathlib import Path

import pytest

from preprocess.drivers.watch.bench import close_to_commit_latency, percentile
from tests.drivers.watch.harness import small_jpegs


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile(values, 100) == 100
    assert percentile([3.0], 95) == 3.0


def test_close_to_commit_latency_of_a_real_daemon(tmp_path: Path, camera_photos: list[Path]) -> None:
    report = close_to_commit_latency(small_jpegs(camera_photos, 4), workdir=tmp_path, engine="pillow", quiet=0.3,
                                     commit_interval=0.3, gap=0.2)
    assert len(report.samples) == 4
    # at least the quiet period; well under the timeout on any machine
    assert min(report.samples) >= 0.3 and report.max < 60
    assert report.median <= report.p95 <= report.max
    assert report.settings["files"] == 4


def test_the_images_must_be_distinct(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        close_to_commit_latency([b"same", b"same"], workdir=tmp_path)
