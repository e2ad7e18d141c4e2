"""`preprocess tune` on real photos with the real models: the sweep's numbers per format, the
recommendations, the recommended specs in real runs, the stored sample (thumbnails, crops, decode
speed), and the report in a real (headless) browser."""

from __future__ import annotations

import io
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
from preprocess.drivers.run import JobOptions, run_job
from preprocess.pipeline.codecs import sniff
from preprocess.pipeline.process import plan
from preprocess.pipeline.spec import load_spec
from preprocess.tune import (
    Recommendation,
    StoredSample,
    Sweep,
    SweepOptions,
    Target,
    recommend,
    recommend_formats,
    run_sweep,
    store_sample,
    write_report,
)
from preprocess.tune.recommend import Setting, lowest_meeting, pareto, swept_ladder
from tests.drivers.test_run import read_items
from tests.paths import ROOT

CLI = [sys.executable, "-m", "preprocess"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZES = (640, 320)
QUALITIES = (30, 45, 60, 75, 90)
FORMATS = ("jpeg", "avif")
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
    return run_sweep(SweepOptions(sources=[str(sample)], sizes=SIZES, qualities=QUALITIES, formats=FORMATS,
                                  engine="pillow"))


@pytest.fixture(scope="module")
def recs(swept: Sweep) -> list[Recommendation]:
    return recommend_formats(swept, Target(TARGET, PERCENTILE))


@pytest.fixture(scope="module")
def rec(recs: list[Recommendation]) -> Recommendation:
    return recs[0]


@pytest.fixture(scope="module")
def samples(swept: Sweep, recs: list[Recommendation]) -> list[StoredSample | None]:
    return [store_sample(swept, r, repeats=2) for r in recs]


@pytest.fixture(scope="module")
def report(swept: Sweep, recs: list[Recommendation], samples: list[StoredSample | None],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(swept, recs, tmp_path_factory.mktemp("tune-report"), samples)


def test_the_sweep_measures_every_setting_and_skips_bad_files(swept: Sweep) -> None:
    assert len(swept.images) == 6
    assert {Path(s.path).name: s.code for s in swept.skipped} == {"empty.jpg": "E_EMPTY",
                                                                  "truncated.jpg": "E_TRUNCATED"}
    assert swept.sizes == [640, 320] and swept.qualities == list(QUALITIES)
    assert [c.label for c in swept.codings] == ["jpeg jpegli 4:2:0", "avif libavif 4:2:0"]
    assert swept.formats == ["jpeg", "avif"]
    # the spec's own format keeps the spec's [encode]; another takes its format's defaults
    assert swept.codings[0].encode == swept.spec.encode and swept.codings[1].encode.speed == 6
    assert swept.bytes.shape == (2, 2, 5, 6) and (swept.bytes > 0).all()
    # bytes grow with quality, image by image, and with size in total
    assert (np.diff(swept.bytes, axis=2) > 0).all()
    assert (swept.bytes[:, 0].sum(axis=2) > swept.bytes[:, 1].sum(axis=2)).all()
    # stored bytes: progressive JPEG rewritten by mozjpeg (smaller, same pixels); AVIF as encoded
    assert (swept.bytes[0] < swept.encoded_bytes[0]).all()
    assert np.array_equal(swept.bytes[1], swept.encoded_bytes[1])
    assert max(swept.dims[0].max(axis=0)) == 640 and max(swept.dims[1].max(axis=0)) == 320
    (mobilenet,) = swept.models
    assert mobilenet.name == "mobilenetv2-imagenet" and mobilenet.tiles is not None
    for m in swept.models:
        for g in m.gauges():
            sims = m.values(g)
            assert sims.shape == (2, 2, 5, 6) and np.isfinite(sims).all() and (sims <= 1.0001).all()
        # on the whole, higher quality is closer to the source, in every coding
        assert (m.whole[:, :, -1].mean(axis=2) > m.whole[:, :, 0].mean(axis=2)).all()
        assert m.top1.shape == (2, 2, 5)
        assert ((m.top1 >= 0) & (m.top1 <= 1) & (m.topk >= 0) & (m.topk <= 1)).all()
        assert m.k == 4
    assert mobilenet.tiles is not None
    # the worst tile is never better than the 10th percentile, nor that than the mean
    assert (mobilenet.tiles["min"] <= mobilenet.tiles["p10"] + 1e-6).all()
    assert (mobilenet.tiles["p10"] <= mobilenet.tiles["mean"] + 1e-6).all()
    assert {"decode_resize", "encode:jpeg", "encode:avif", "finish", "infer", "tiles"} <= set(swept.timings)


def test_the_recommendation_is_the_lowest_quality_meeting_the_target(swept: Sweep, rec: Recommendation) -> None:
    assert rec.format == "jpeg" and rec.codings == [0]
    assert rec.ok and rec.single is not None and rec.adaptive is not None
    assert rec.size == 640  # the spec's 1280 was not swept: the largest size that meets the target
    si, qi = swept.sizes.index(rec.size), swept.qualities.index(rec.single.quality)
    sims = swept.models[0].whole[0, si]
    assert np.percentile(sims[qi], PERCENTILE) >= TARGET
    assert all(np.percentile(sims[q], PERCENTILE) < TARGET for q in range(qi))
    assert rec.single.total_bytes == swept.bytes[0, si, qi].sum() < swept.source_bytes
    # adaptive: never more bytes than the single quality at the same target, and the target still met
    a = rec.adaptive
    assert a.total_bytes <= rec.single.total_bytes and a.at_percentile >= TARGET
    assert max(a.qualities) <= rec.single.quality and 0 <= a.saving < 1
    assert a.ladder.rungs == [q for q in QUALITIES if q <= rec.single.quality] and a.ladder.note == ""
    for c in a.choices:  # each image at the lowest rung that passes (else the top, flagged)
        passing = [q for k, q in enumerate(QUALITIES) if q in a.ladder.rungs and sims[k, c.index] >= TARGET]
        assert c.quality == (passing[0] if passing else rec.single.quality) and c.passed == bool(passing)
        assert c.bytes == swept.bytes[0, si, QUALITIES.index(c.quality), c.index]
    # worst first: by the similarity of what is stored
    assert [c.similarity for c in a.worst_first()] == sorted(c.similarity for c in a.choices)
    # Pareto front: increasing bytes, increasing similarity
    assert all(x.total_bytes <= y.total_bytes and x.at_percentile < y.at_percentile
               for x, y in itertools.pairwise(rec.pareto))
    # every view has its own verdict
    assert set(rec.by_gauge) == {"mobilenetv2-imagenet whole", "mobilenetv2-imagenet tiles-min",
                                 "mobilenetv2-imagenet tiles-p10", "mobilenetv2-imagenet tiles-mean"}


def test_each_format_gets_its_own_recommendation(swept: Sweep, recs: list[Recommendation]) -> None:
    assert [r.format for r in recs] == ["jpeg", "avif"]
    jpeg, avif = recs
    assert avif.codings == [1] and avif.ok and avif.single is not None and avif.adaptive is not None
    assert avif.single.coding == "avif libavif 4:2:0"
    si = swept.sizes.index(avif.single.size)
    assert avif.single.total_bytes == swept.bytes[1, si, QUALITIES.index(avif.single.quality)].sum()
    assert avif.adaptive.at_percentile >= TARGET
    assert recommend(swept, Target(TARGET, PERCENTILE), "avif").single == avif.single
    # on real photos AVIF stores the same similarity in fewer bytes than JPEG (stack.md: 2.2% vs ~4.5%)
    assert jpeg.adaptive is not None and avif.adaptive.total_bytes < jpeg.adaptive.total_bytes


def test_the_stored_sample_is_every_image_as_stored_worst_first(swept: Sweep, recs: list[Recommendation],
                                                               samples: list[StoredSample | None]) -> None:
    for rec, sample in zip(recs, samples, strict=True):
        assert sample is not None and rec.adaptive is not None and sample.missing == []
        assert [s.choice.index for s in sample.images] == [c.index for c in rec.adaptive.worst_first()]
        for s in sample.images:
            # made again on the CPU: the very bytes the sweep measured (after Engine.finish)
            assert len(s.data) == s.choice.bytes and sniff(s.data) == rec.format
            assert Image.open(io.BytesIO(s.thumbnail)).size[0] <= 240
        with_crops = [s for s in sample.images if s.crop is not None]
        assert [s.choice.index for s in with_crops] == [s.choice.index for s in sample.images[:4]]
        for s in with_crops:
            assert s.crop is not None
            r = s.crop.region
            assert r.x + r.width <= s.width and r.y + r.height <= s.height and min(r.x, r.y) >= 0
            assert r.mean_abs_diff > 0  # where it changed, not a region that did not
            assert Image.open(io.BytesIO(s.crop.stored)).size == (r.width, r.height)
        assert sample.total_bytes == rec.adaptive.total_bytes
        speed = sample.speed
        assert speed is not None and speed.images == 6 and speed.repeats == 2
        assert speed.cpu_seconds > 0 and speed.cpu_ms_per_mp > 0 and speed.images_per_s > 0
        assert speed.megapixels == pytest.approx(sum(s.width * s.height for s in sample.images) / 1e6)
    assert samples[0] is not None and samples[0].speed is not None and "libjpeg-turbo" in samples[0].speed.decoder
    assert samples[1] is not None and samples[1].speed is not None and "dav1d" in samples[1].speed.decoder


def test_the_recommended_specs_meet_the_target_in_real_runs(report: dict[str, Path], recs: list[Recommendation],
                                                            sample: Path, tmp_path: Path) -> None:
    assert set(report) == {"html", "json", "spec", "spec-avif"}
    assert report["spec-avif"].name == "recommended-avif.toml"
    for key, rec in zip(("spec", "spec-avif"), recs, strict=True):
        spec = load_spec(report[key])
        assert rec.single is not None and rec.adaptive is not None
        assert spec.encode.format == rec.format
        assert spec.resize.size == rec.single.size and spec.quality.max == rec.single.quality
        assert spec.quality.ladder() == rec.adaptive.ladder.rungs
        assert spec.quality.mode == "adaptive" and spec.gate.threshold == TARGET and spec.gate.view == "whole"
        store = tmp_path / f"{rec.format}.icechunk"
        summary = run_job(JobOptions(sources=[str(sample)], store=str(store), spec_path=str(report[key]),
                                     engine="pillow"))
        assert summary.stored == 6 and summary.failed == 2
        cols, blobs, _ = read_items(store)
        assert {sniff(b) for b in blobs} == {rec.format}
        assert np.percentile(cols["similarity"], PERCENTILE) >= TARGET
        assert summary.bytes_out == pytest.approx(rec.adaptive.total_bytes, rel=0.15)


def test_a_tile_view_recommendation_runs_as_a_tile_gate(swept: Sweep, sample: Path, tmp_path: Path) -> None:
    # The tile view is much stricter (q100 with 4:2:0 already costs ~0.005 per tile): a lower target.
    rec = recommend(swept, Target(0.93, 10, gauge="tiles-mean"))
    assert rec.ok and rec.single is not None
    files = write_report(swept, [rec], tmp_path / "report", samples=[None])
    spec = load_spec(files["spec"])
    assert (spec.gate.view, spec.gate.tiles_combine) == ("tiles", "mean")
    summary = run_job(JobOptions(sources=[str(sample)], store=str(tmp_path / "t.icechunk"),
                                 spec_path=str(files["spec"]), engine="pillow"))
    cols, _, _ = read_items(tmp_path / "t.icechunk")
    assert summary.stored == 6
    assert np.percentile(cols["similarity"], 10) >= 0.93
    assert summary.bytes_out <= rec.single.total_bytes


def _no_overlap(boxes: list[list[float]]) -> bool:
    """Tick labels of one axis ([x, y, width, height] each) do not overlap."""
    boxes = sorted(boxes)
    return all(a[0] + a[2] <= b[0] + 0.5 for a, b in itertools.pairwise(boxes))


_PAGE_FACTS = """() => {
  const q = (s) => Array.from(document.querySelectorAll(s));
  const galleries = q('.gallery').map(g => ({id: g.id,
      sims: Array.from(g.querySelectorAll('figure')).map(f => parseFloat(f.dataset.similarity)),
      names: Array.from(g.querySelectorAll('figure')).map(f => f.dataset.name),
      decoded: Array.from(g.querySelectorAll('img.thumb')).map(i => i.complete ? i.naturalWidth : 0)}));
  const crops = q('.crops').map(c => ({id: c.id, sets: c.querySelectorAll('figure.crop-set').length,
      decoded: Array.from(c.querySelectorAll('img.crop')).map(i => i.complete ? i.naturalWidth : 0)}));
  const ticks = q('svg.plot g[id^="axes_"]').map(ax => Array.from(ax.querySelectorAll('g[id^="xtick"] text'))
      .map(t => { const r = t.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }));
  const titles = q('svg.plot').map(svg => [svg.id, Array.from(svg.querySelectorAll('title')).map(t => t.textContent)]);
  return {galleries, crops, ticks, titles, formats: document.querySelector('#formats').innerText};
}"""


def test_the_report_opens_in_headless_chromium(report: dict[str, Path], samples: list[StoredSample | None],
                                               tmp_path: Path) -> None:
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
        facts = page.evaluate(_PAGE_FACTS)
        decision = page.inner_text("#decision-jpeg")
        skipped = page.inner_text("#skipped")
        bottom = page.evaluate("document.querySelector('#crops-jpeg').getBoundingClientRect().bottom + window.scrollY")
        page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1200, "height": bottom + 10})
        browser.close()
    assert problems == []
    # every sample image of every recommended setting, decoded, worst first; crops of the worst four
    assert [g["id"] for g in facts["galleries"]] == ["gallery-jpeg", "gallery-avif"]
    for g, sample in zip(facts["galleries"], samples, strict=True):
        assert sample is not None
        assert g["names"] == [Path(s.choice.path).name for s in sample.images] and len(g["names"]) == 6
        assert g["sims"] == sorted(g["sims"]) and all(w > 0 for w in g["decoded"])
    assert [(c["id"], c["sets"]) for c in facts["crops"]] == [("crops-jpeg", 4), ("crops-avif", 4)]
    assert all(len(c["decoded"]) == 12 and all(w > 0 for w in c["decoded"]) for c in facts["crops"])
    # the charts are inline SVG whose points say what they are on hover; no crowded tick labels
    titles = dict(facts["titles"])
    assert {"formats-chart", "scatter-jpeg", "pareto-jpeg", "curves-avif"} <= set(titles)
    assert any("messi5.jpg q30" in t for t in titles["scatter-jpeg"])
    assert any(t.startswith("avif libavif 4:2:0 q45 at 640 px") for t in titles["formats-chart"])
    assert any("adaptive" in t for t in titles["formats-chart"])
    assert len(facts["ticks"]) > 10 and all(_no_overlap(axis) for axis in facts["ticks"]), facts["ticks"]
    assert "libjpeg-turbo" in facts["formats"] and "dav1d" in facts["formats"]
    assert "recommended-avif.toml" in facts["formats"]
    assert "640 px" in decision and "q" in decision
    assert "empty.jpg" in skipped and "E_TRUNCATED" in skipped
    img = Image.open(shot)
    assert img.width == 1200 and img.height > 2000
    assert np.asarray(img.convert("L")).std() > 20  # not a blank page
    if os.environ.get("PREPROCESS_SCREENSHOTS"):
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(Path(os.environ["PREPROCESS_SCREENSHOTS"]) / "tune-report.png", optimize=True)


def test_the_report_compares_each_worst_crop_at_100_percent(report: dict[str, Path],
                                                             samples: list[StoredSample | None]) -> None:
    """issue 23: the report gets the web UI's comparer, without a script: the source and the stored crop at
    1:1 in one box, the stored one over the source up to a divider the reader drags, flickering on demand."""
    import base64
    import re

    page = report["html"].read_text()
    boxes = re.findall(r'<div class="compare"><div class="a" style="width:(\d+)px;height:(\d+)px;background-image:'
                       r'url\(data:image/png;base64,([^)]+)\)"><div class="b" style="background-size:\d+px \d+px;'
                       r'background-image:url\(data:image/png;base64,([^)]+)\)">', page)
    crops = [i.crop for s in samples if s is not None for i in s.images if i.crop is not None]
    assert len(boxes) == len(crops) == 8
    for (w, h, a, b), crop in zip(boxes, crops, strict=True):
        assert (int(w), int(h)) == (crop.region.width, crop.region.height)
        assert base64.b64decode(a) == crop.source and base64.b64decode(b) == crop.stored
    assert "resize:horizontal" in page and "@keyframes flick" in page and "<script" not in page


def test_report_json_holds_every_number(report: dict[str, Path], swept: Sweep) -> None:
    data = json.loads(report["json"].read_text())
    assert data["format"] == 2
    assert data["sizes"] == [640, 320] and data["qualities"] == list(QUALITIES)
    assert [c["label"] for c in data["codings"]] == ["jpeg jpegli 4:2:0", "avif libavif 4:2:0"]
    assert data["codings"][1]["encode"]["format"] == "avif"
    assert np.array_equal(np.asarray(data["bytes"]), swept.bytes)
    assert np.array_equal(np.asarray(data["encoded_bytes"]), swept.encoded_bytes)
    assert [m["name"] for m in data["models"]] == ["mobilenetv2-imagenet"]
    assert set(data["models"][0]["similarity"]) == {"whole", "tiles-min", "tiles-p10", "tiles-mean"}
    recs = data["recommendations"]
    assert [r["format"] for r in recs] == ["jpeg", "avif"] and all(r["ok"] for r in recs)
    assert recs[0]["single"]["quality"] in QUALITIES and recs[1]["spec"] == "recommended-avif.toml"
    assert len(recs[0]["adaptive"]["choices"]) == 6 and recs[0]["adaptive"]["ladder"]["note"] == ""
    decode = recs[1]["stored"]["decode"]
    assert decode["cpu_ms_per_mp"] > 0 and decode["images_per_s"] > 0 and "dav1d" in decode["decoder"]
    assert len(data["images"]) == 6 and len(data["skipped"]) == 2


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, sample: Path) -> Path:
    """A camera photo and a small one: enough for fast sweeps."""
    d = tmp_path_factory.mktemp("two")
    camera = next(p for p in sorted(sample.iterdir()) if p.name not in ("messi5.jpg", "fruits.jpg", "astronaut.png",
                                                                          "empty.jpg", "truncated.jpg"))
    for p in (camera, sample / "fruits.jpg"):
        shutil.copy(p, d / p.name)
    return d


@pytest.mark.parametrize(("qualities", "rungs", "left_out"), [
    ((30, 90), [90], "q30"),  # a step of 60 is no spec ladder (quality.step <= 50)
    ((30, 50, 90), [50, 90], "q30"),  # 30, 50, 70, 90 was not swept
    ((30, 50, 70, 90), [30, 50, 70, 90], ""),
])
def test_the_recommended_ladder_is_one_that_was_swept(two: Path, tmp_path: Path, qualities: tuple[int, ...],
                                                     rungs: list[int], left_out: str) -> None:
    sweep = run_sweep(SweepOptions(sources=[str(two)], sizes=(320,), qualities=qualities, tiles=False,
                                   engine="pillow"))
    # a target only the top quality meets: the ladder then ends at q90
    sims = sweep.models[0].whole[0, 0]
    target = float(np.percentile(sims[-1], PERCENTILE))
    assert all(np.percentile(s, PERCENTILE) < target for s in sims[:-1]), "q90 must be the lowest to meet it"
    rec = recommend(sweep, Target(target, PERCENTILE))
    assert rec.adaptive is not None and rec.adaptive.ladder.rungs == rungs
    assert (left_out in rec.adaptive.ladder.note) if left_out else rec.adaptive.ladder.note == ""
    files = write_report(sweep, [rec], tmp_path, samples=[None])
    spec = load_spec(files["spec"])  # a valid spec (quality.step <= 50) ...
    assert spec.quality.ladder() == rungs and set(spec.quality.ladder()) <= set(qualities)  # ... that was swept
    text = files["spec"].read_text()
    assert ("left out" in text) == bool(left_out)
    if left_out:
        assert "left out" in files["html"].read_text()


def test_ladder_helper() -> None:
    assert swept_ladder([30, 90], 90).rungs == [90]
    assert swept_ladder([30, 50, 90], 90).rungs == [50, 90]
    assert swept_ladder([30, 55, 80, 90], 90).rungs == [30, 55, 80, 90]  # 30..90/25: max closes the ladder
    assert swept_ladder([30, 55, 80, 90], 80).rungs == [30, 55, 80]
    assert swept_ladder(list(range(10, 96, 5)), 85) == swept_ladder(list(range(10, 86, 5)), 85)
    full = swept_ladder(list(range(10, 96, 5)), 85)
    assert (full.min, full.max, full.step, full.note) == (10, 85, 5, "")
    assert swept_ladder([5, 7, 10, 20, 30, 40], 40).rungs == [10, 20, 30, 40]


def test_the_cli_says_clearly_when_there_is_nothing_to_do(tmp_path: Path, two: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([*CLI, "tune", str(empty), "--report", str(tmp_path / "r0")], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2 and "SAMPLE_EMPTY" in proc.stderr and "no image files" in proc.stderr
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(tmp_path / "r0"), "--formats", "jpeg,bmp"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2 and "TUNE_FORMAT" in proc.stderr and "'bmp'" in proc.stderr
    out = tmp_path / "r1"
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(out), "--sizes", "320", "--qualities", "10,20",
                           "--target", "0.9999", "--no-tiles", "--engine", "pillow"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "TARGET_UNREACHABLE" in proc.stderr and "the best is" in proc.stderr
    assert (out / "report.html").is_file() and not (out / "recommended.toml").exists()
    assert "no-recommendation" in (out / "report.html").read_text()


def test_the_cli_compares_formats(tmp_path: Path, two: Path) -> None:
    out = tmp_path / "r"
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(out), "--sizes", "320", "--qualities", "30,60,90",
                           "--target", "0.95", "--no-tiles", "--engine", "pillow", "--formats", "webp,jxl",
                           "--decode-repeats", "1", "--json"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["format"] for r in data["recommendations"]] == ["webp", "jxl"]
    assert all(r["stored"]["decode"]["repeats"] == 1 for r in data["recommendations"])
    assert load_spec(out / "recommended.toml").encode.format == "webp"
    assert load_spec(out / "recommended-jxl.toml").encode.format == "jxl"
    assert data["files"]["spec-jxl"] == str(out / "recommended-jxl.toml")


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


def test_another_model_judges_the_same_candidates(two: Path) -> None:
    sweep = run_sweep(SweepOptions(sources=[str(two)], sizes=(320,), qualities=(30, 90), compare=("dinov2-small",),
                                   engine="pillow"))
    mobilenet, dino = sweep.models
    assert (mobilenet.name, dino.name) == ("mobilenetv2-imagenet", "dinov2-small")
    assert mobilenet.tiles is not None and dino.tiles is None  # tiles for the gate model only by default
    assert dino.whole.shape == mobilenet.whole.shape == (1, 1, 2, 2)
    # DINOv2 is far less compression-sensitive than MobileNetV2 (stack.md)
    assert dino.whole[0, 0, 0].mean() > mobilenet.whole[0, 0, 0].mean()
    rec = recommend(sweep, Target(0.98, PERCENTILE))
    assert set(rec.by_gauge) == {"mobilenetv2-imagenet whole", "mobilenetv2-imagenet tiles-min",
                                 "mobilenetv2-imagenet tiles-p10", "mobilenetv2-imagenet tiles-mean",
                                 "dinov2-small whole"}
    assert rec.by_gauge["dinov2-small whole"][320] == 30


def test_judging_by_another_models_manifest_writes_a_spec_that_finds_it(two: Path, tmp_path: Path) -> None:
    manifest = ROOT / "models" / "dinov2-small.toml"
    sweep = run_sweep(SweepOptions(sources=[str(two)], gate_model=str(manifest), sizes=(320,), qualities=(60, 90),
                                   tiles=False, engine="pillow"))
    assert [m.name for m in sweep.models] == ["dinov2-small"] and sweep.models[0].ref == str(manifest)
    rec = recommend(sweep, Target(0.99, 1))
    assert rec.ok and rec.model == "dinov2-small"
    spec = load_spec(write_report(sweep, [rec], tmp_path / "r", samples=[None])["spec"])
    assert spec.gate.model == str(manifest)
    assert plan(str(tmp_path / "r" / "recommended.toml"), engine="pillow").model == "dinov2-small"
