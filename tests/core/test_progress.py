"""Progress as plain lines (issue 22): what a log or CI shows while `tune` or `run` works."""

from __future__ import annotations

from preprocess.core.progress import LineProgress


def test_lines_say_count_rate_and_time_left_at_most_every_few_seconds() -> None:
    now = [100.0]
    lines: list[str] = []
    p = LineProgress(lines.append, "tune: measuring", every=5.0, clock=lambda: now[0])
    p.start(20)
    for _ in range(10):  # 10 images in 10 s: one line after 5 s, one after 10 s
        now[0] += 1.0
        p.advance(1)
    now[0] += 10.0
    p.advance(10)  # the last one is not a progress line: finish says it
    p.finish()
    assert lines == ["tune: measuring: 0/20 images",
                     "tune: measuring: 5/20 images (25%), 1.0 images/s, ETA 15 s",
                     "tune: measuring: 10/20 images (50%), 1.0 images/s, ETA 10 s",
                     "tune: measuring: 20/20 images in 20 s (1.0 images/s)"]


def test_long_runs_say_minutes_and_an_unknown_rate_says_so() -> None:
    now = [0.0]
    lines: list[str] = []
    p = LineProgress(lines.append, "processing", every=0.0, clock=lambda: now[0])
    p.start(1000)
    now[0] += 30.0
    p.advance(0)
    now[0] += 30.0
    p.advance(100)
    assert lines[1] == "processing: 0/1000 images (0%), 0.0 images/s, ETA ?"
    assert lines[2] == "processing: 100/1000 images (10%), 1.7 images/s, ETA ?"  # one point: no rate yet
    now[0] += 30.0
    p.advance(100)
    assert lines[3] == "processing: 200/1000 images (20%), 2.2 images/s, ETA 4:00"


def test_the_time_left_leaves_out_the_start_up() -> None:
    """tune said "ETA 4:56" after its first search (the model loaded, the first batch measured together, 25 s)
    and finished 17 s later: the time left is from the rate since the first step."""
    now = [0.0]
    lines: list[str] = []
    p = LineProgress(lines.append, "tune: measuring", unit="searches", every=0.0, clock=lambda: now[0])
    p.start(12)
    now[0] = 25.0
    p.advance(1)
    now[0] = 30.0
    p.advance(3)
    assert lines[1:] == ["tune: measuring: 1/12 searches (8%), 0.0 searches/s, ETA ?",
                         "tune: measuring: 4/12 searches (33%), 0.1 searches/s, ETA 13 s"]
