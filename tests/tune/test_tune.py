"""`preprocess tune` on real photos with the real models: the sweep's numbers, the recommendation,
the recommended spec in a real run, and the report in a real (headless) browser."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from preprocess.cli.tune import parse_qualities
from preprocess.job import JobOptions, run_job
from preprocess.process import plan
from preprocess.spec import load_spec
from preprocess.tune import Recommendation, Sweep, SweepOptions, recommend, run_sweep, write_report
from preprocess.tune.recommend import Setting, lowest_meeting, pareto
from tests.test_job import read_items

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "preprocess"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SIZES = (640, 320)
QUALITIES = (30, 45, 60, 75, 90)
TARGET, PERCENTILE = 0.99, 1.0


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, camera_photos: list[Path], small_photos: list[Path]) -> Path:
    """6 real photos (3 camera 2560x1600 with EXIF, a face, fruit, a PNG) and 2 bad files."""
    d = tmp_path_factory.mktemp("tune-sample")
    names = {"messi5.jpg", "fruits.jpg", "astronaut.png"}
    for p in camera_photos[:3] + [p for p in small_photos if p.name in names]:
        shutil.copy(p, d / p.name)
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes((d / camera_photos[0].name).read_bytes()[:5000])
    return d


@pytest.fixture(scope="module")
def swept(sample: Path) -> Sweep:
    return run_sweep(SweepOptions(sources=[str(sample)], sizes=SIZES, qualities=QUALITIES,
                                  compare=("dinov2-small",), engine="pillow"))


@pytest.fixture(scope="module")
def rec(swept: Sweep) -> Recommendation:
    return recommend(swept, target=TARGET, percentile=PERCENTILE)


@pytest.fixture(scope="module")
def report(swept: Sweep, rec: Recommendation, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(swept, rec, tmp_path_factory.mktemp("tune-report"))


def test_the_sweep_measures_every_setting_and_skips_bad_files(swept: Sweep) -> None:
    assert len(swept.images) == 6
    assert {Path(s.path).name: s.code for s in swept.skipped} == {"empty.jpg": "E_EMPTY",
                                                                  "truncated.jpg": "E_TRUNCATED"}
    assert swept.sizes == [640, 320] and swept.qualities == list(QUALITIES)
    assert swept.bytes.shape == (2, 5, 6) and (swept.bytes > 0).all()
    # bytes grow with quality, image by image, and with size in total
    assert (np.diff(swept.bytes, axis=1) > 0).all()
    assert (swept.bytes[0].sum(axis=1) > swept.bytes[1].sum(axis=1)).all()
    assert max(swept.dims[0].max(axis=0)) == 640 and max(swept.dims[1].max(axis=0)) == 320
    mobilenet, dino = swept.models
    assert (mobilenet.name, dino.name) == ("mobilenetv2-imagenet", "dinov2-small")
    assert mobilenet.tiles is not None and dino.tiles is None  # tiles for the gate model only by default
    for m in swept.models:
        for g in m.gauges():
            sims = m.values(g)
            assert sims.shape == (2, 5, 6) and np.isfinite(sims).all() and (sims <= 1.0001).all()
        # on the whole, higher quality is closer to the source
        assert (m.whole[:, -1].mean(axis=1) > m.whole[:, 0].mean(axis=1)).all()
        assert ((m.top1 >= 0) & (m.top1 <= 1) & (m.topk >= 0) & (m.topk <= 1)).all()
        assert m.k == 4
    assert mobilenet.tiles is not None
    # the worst tile is never better than the 10th percentile, nor that than the mean
    assert (mobilenet.tiles["min"] <= mobilenet.tiles["p10"] + 1e-6).all()
    assert (mobilenet.tiles["p10"] <= mobilenet.tiles["mean"] + 1e-6).all()
    # DINOv2 is far less compression-sensitive than MobileNetV2 (stack.md)
    assert dino.whole[0, 0].mean() > mobilenet.whole[0, 0].mean()
    assert {"decode_resize", "encode", "infer", "tiles"} <= set(swept.timings)


def test_the_recommendation_is_the_lowest_quality_meeting_the_target(swept: Sweep, rec: Recommendation) -> None:
    assert rec.ok and rec.single is not None and rec.adaptive is not None
    assert rec.size == 640  # the spec's 1280 was not swept: the largest size that meets the target
    si, qi = swept.sizes.index(rec.size), swept.qualities.index(rec.single.quality)
    sims = swept.models[0].whole[si]
    assert np.percentile(sims[qi], PERCENTILE) >= TARGET
    assert all(np.percentile(sims[q], PERCENTILE) < TARGET for q in range(qi))
    assert rec.single.total_bytes == swept.bytes[si, qi].sum() < swept.source_bytes
    # adaptive: never more bytes than the single quality at the same target, and the target still met
    assert rec.adaptive.total_bytes <= rec.single.total_bytes
    assert rec.adaptive.at_percentile >= TARGET
    assert max(rec.adaptive.qualities) <= rec.single.quality
    assert 0 <= rec.adaptive.saving < 1
    # the worst images are the lowest-similarity ones at the chosen setting
    assert [w.similarity for w in rec.worst] == sorted(sims[qi])[: len(rec.worst)]
    # Pareto front: increasing bytes, increasing similarity, and nothing off it dominates it
    front = rec.pareto
    assert all(a.total_bytes <= b.total_bytes and a.at_percentile < b.at_percentile
               for a, b in itertools.pairwise(front))
    # every model and view has its own verdict
    assert set(rec.by_gauge) == {"mobilenetv2-imagenet whole", "mobilenetv2-imagenet tiles-min",
                                 "mobilenetv2-imagenet tiles-p10", "mobilenetv2-imagenet tiles-mean",
                                 "dinov2-small whole"}
    dino_q = rec.by_gauge["dinov2-small whole"][640]
    assert dino_q is not None and dino_q <= rec.single.quality


def test_the_recommended_spec_meets_the_target_in_a_real_run(report: dict[str, Path], rec: Recommendation,
                                                             sample: Path, tmp_path: Path) -> None:
    spec = load_spec(report["spec"])
    assert rec.single is not None and rec.adaptive is not None
    assert spec.resize.size == rec.single.size and spec.quality.max == rec.single.quality
    assert spec.quality.mode == "adaptive" and spec.gate.threshold == TARGET and spec.gate.view == "whole"
    summary = run_job(JobOptions(sources=[str(sample)], store=str(tmp_path / "s.icechunk"),
                                 spec_path=str(report["spec"]), engine="pillow"))
    assert summary.stored == 6 and summary.failed == 2
    cols, _, _ = read_items(tmp_path / "s.icechunk")
    assert np.percentile(cols["similarity"], PERCENTILE) >= TARGET
    assert summary.bytes_out <= rec.single.total_bytes
    assert summary.bytes_out == pytest.approx(rec.adaptive.total_bytes, rel=0.15)


def test_a_tile_view_recommendation_runs_as_a_tile_gate(swept: Sweep, sample: Path, tmp_path: Path) -> None:
    # The tile view is much stricter (q100 with 4:2:0 already costs ~0.005 per tile): a lower target.
    rec = recommend(swept, target=0.93, percentile=10, gauge="tiles-mean")
    assert rec.ok and rec.single is not None
    files = write_report(swept, rec, tmp_path / "report")
    spec = load_spec(files["spec"])
    assert (spec.gate.view, spec.gate.tiles_combine) == ("tiles", "mean")
    summary = run_job(JobOptions(sources=[str(sample)], store=str(tmp_path / "t.icechunk"),
                                 spec_path=str(files["spec"]), engine="pillow"))
    cols, _, _ = read_items(tmp_path / "t.icechunk")
    assert summary.stored == 6
    assert np.percentile(cols["similarity"], 10) >= 0.93
    assert summary.bytes_out <= rec.single.total_bytes


def test_the_report_opens_in_headless_chromium(report: dict[str, Path], tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's chromium is missing ({CHROMIUM}): run scripts/_setup, which installs it "
                    "(or: apt-get update && apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(report["html"].as_uri())
        plots = page.evaluate("Array.from(document.querySelectorAll('img.plot'))"
                              ".map(i => [i.id, i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0])")
        decision = page.inner_text("#decision")
        skipped = page.inner_text("#skipped")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == []
    assert {name for name, width in plots if width > 300} == {"curves", "pareto", "scatter", "views", "neighbours",
                                                              "crops"}
    assert "640 px" in decision and "q" in decision
    assert "empty.jpg" in skipped and "E_TRUNCATED" in skipped
    img = Image.open(shot)
    assert img.width == 1200 and img.height > 3000
    assert np.asarray(img.convert("L")).std() > 20  # not a blank page
    if os.environ.get("PREPROCESS_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["PREPROCESS_SCREENSHOTS"]) / "tune-report.png")


def test_report_json_holds_every_number(report: dict[str, Path], swept: Sweep) -> None:
    data = json.loads(report["json"].read_text())
    assert data["sizes"] == [640, 320] and data["qualities"] == list(QUALITIES)
    assert np.array_equal(np.asarray(data["bytes"]), swept.bytes)
    assert [m["name"] for m in data["models"]] == ["mobilenetv2-imagenet", "dinov2-small"]
    assert set(data["models"][0]["similarity"]) == {"whole", "tiles-min", "tiles-p10", "tiles-mean"}
    assert data["recommendation"]["ok"] and data["recommendation"]["single"]["quality"] in QUALITIES
    assert len(data["images"]) == 6 and len(data["skipped"]) == 2


def test_the_cli_says_clearly_when_there_is_nothing_to_do(tmp_path: Path, sample: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([*CLI, "tune", str(empty), "--report", str(tmp_path / "r0")], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2 and "SAMPLE_EMPTY" in proc.stderr and "no image files" in proc.stderr
    two = tmp_path / "two"
    two.mkdir()
    for name in ("messi5.jpg", "fruits.jpg"):
        shutil.copy(sample / name, two / name)
    out = tmp_path / "r1"
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(out), "--sizes", "320", "--qualities", "10,20",
                           "--target", "0.9999", "--no-tiles", "--engine", "pillow"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "TARGET_UNREACHABLE" in proc.stderr and "the best is" in proc.stderr
    assert (out / "report.html").is_file() and not (out / "recommended.toml").exists()
    assert "no-recommendation" in (out / "report.html").read_text()


def test_grid_parsing_and_recommendation_helpers() -> None:
    assert parse_qualities("10..95/5") == list(range(10, 96, 5))
    assert parse_qualities("30..90/25") == [30, 55, 80, 90]
    assert parse_qualities("30, 50,90") == [30, 50, 90]
    sims = np.array([[[0.95, 0.97], [0.99, 0.995], [0.98, 0.999]]])  # 1 size, 3 qualities, 2 images
    assert lowest_meeting(sims, 0.991, 0) == [None]
    assert lowest_meeting(sims, 0.98, 0) == [1]

    def pt(b: int, s: float) -> Setting:
        return Setting(640, 50, b, 1.0, s, s, s, s, s, s)

    front = pareto([pt(10, 0.9), pt(20, 0.85), pt(30, 0.95), pt(30, 0.94), pt(5, 0.8)])
    assert [(p.total_bytes, p.at_percentile) for p in front] == [(5, 0.8), (10, 0.9), (30, 0.95)]


def test_judging_by_another_models_manifest_writes_a_spec_that_finds_it(sample: Path, tmp_path: Path) -> None:
    manifest = ROOT / "models" / "dinov2-small.toml"
    two = tmp_path / "two"
    two.mkdir()
    for name in ("messi5.jpg", "fruits.jpg"):
        shutil.copy(sample / name, two / name)
    sweep = run_sweep(SweepOptions(sources=[str(two)], gate_model=str(manifest), sizes=(320,), qualities=(60, 90),
                                   tiles=False, engine="pillow"))
    assert [m.name for m in sweep.models] == ["dinov2-small"] and sweep.models[0].ref == str(manifest)
    rec = recommend(sweep, target=0.99, percentile=1)
    assert rec.ok and rec.model == "dinov2-small"
    spec = load_spec(write_report(sweep, rec, tmp_path / "r")["spec"])
    assert spec.gate.model == str(manifest)
    assert plan(str(tmp_path / "r" / "recommended.toml"), engine="pillow").model == "dinov2-small"
