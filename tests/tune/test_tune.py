"""`preprocess tune` on real photos with the real models: the search measures the rungs that decide, the
decision is the fewest bytes across formats and sizes (a second format can win), presets, a decision
again from a saved report, the recommended specs in real runs, the stored sample (thumbnails, crops,
decode speed), and the report in a real (headless) browser."""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from preprocess.cli.tune import parse_qualities
from preprocess.drivers.run import JobOptions, run_job
from preprocess.pipeline import gate
from preprocess.pipeline.codecs import sniff
from preprocess.pipeline.spec import default_spec_path, load_spec
from preprocess.tune import Decision, StoredSample, Sweep, SweepOptions, Target, decide, run_sweep, store_sample
from preprocess.tune.grid import ENCODE_CPU, from_json, to_json
from preprocess.tune.recommend import PRESETS, SETTLE, Point, lowest_meeting, pareto, setting
from preprocess.tune.recommended import dropped_checks
from preprocess.tune.report import write_report
from tests.drivers.test_run import read_items
from tests.paths import ROOT

CLI = [sys.executable, "-m", "preprocess"]
SIZES = (640, 320)
FORMATS = ("jpeg", "avif")
TARGET, PERCENTILE = 0.99, 1.0
LADDER = load_spec(default_spec_path()).quality.ladder()


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
def searched(sample: Path) -> Sweep:
    """The default measurement (the search over the spec's ladder), JPEG listed first, two sizes."""
    return run_sweep(SweepOptions(sources=[str(sample)], sizes=SIZES, formats=FORMATS, engine="pillow",
                                  band=[p.similarity for p in PRESETS.values()]))


@pytest.fixture(scope="module")
def decision(searched: Sweep) -> Decision:
    return decide(searched, Target(TARGET, PERCENTILE))


@pytest.fixture(scope="module")
def samples(searched: Sweep, decision: Decision) -> list[StoredSample | None]:
    return [store_sample(searched, r, repeats=2) for r in decision.recs]


@pytest.fixture(scope="module")
def report(searched: Sweep, decision: Decision, samples: list[StoredSample | None],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(searched, decision, tmp_path_factory.mktemp("tune-report"), samples)


def _boundary(row: np.ndarray, qi: int, target: float) -> bool:
    """Where the gate's search ends for ``target``: a measured pass whose next lower rung failed (or the
    ladder's first rung, or a pass within the settle margin)."""
    return bool(row[qi] >= target and (qi == 0 or row[qi - 1] < target or row[qi] < target + SETTLE))


def test_the_search_measures_the_rungs_that_decide_and_skips_bad_files(searched: Sweep) -> None:
    assert len(searched.images) == 6 and searched.mode == "search"
    assert {Path(s.path).name: s.code for s in searched.skipped} == {"empty.jpg": "E_EMPTY",
                                                                     "truncated.jpg": "E_TRUNCATED"}
    assert searched.sizes == [640, 320] and searched.qualities == LADDER  # the spec's ladder: q5..q95 step 2
    assert [c.label for c in searched.codings] == ["jpeg jpegli 4:2:0", "avif libavif 4:2:0"]
    assert searched.codings[0].encode == searched.spec.encode and searched.codings[1].encode.speed == 6
    assert searched.band[0] == TARGET and sorted(searched.band) == [0.95, 0.98, 0.99, 0.995]
    measured = searched.measured()
    per_search = measured.sum(axis=2)  # [coding, size, image]: rungs measured
    assert (per_search >= 2).all() and per_search.mean() < len(LADDER) / 3  # far fewer than every rung
    assert ((searched.bytes > 0) == measured).all()  # bytes where measured, nothing elsewhere
    # stored bytes: progressive JPEG rewritten by mozjpeg (smaller, same pixels); AVIF as encoded
    assert (searched.bytes[0][measured[0]] < searched.encoded_bytes[0][measured[0]]).all()
    assert np.array_equal(searched.bytes[1], searched.encoded_bytes[1])
    whole = searched.models[0].whole
    for ci, si, i in itertools.product(range(2), range(2), range(6)):
        row = whole[ci, si, :, i]
        for t in searched.band:  # every band target ends where the gate's search would
            passing = [qi for qi in range(len(LADDER)) if row[qi] >= t]
            ends = (not passing and np.isfinite(row[-1])) or any(_boundary(row, qi, t) for qi in passing)
            assert ends, (ci, si, i, t)
    assert {"decode_resize", "encode:jpeg", "encode:avif", "finish:jpeg", "view_infer"} <= set(searched.timings)
    assert gate.SETTLE == SETTLE  # recommend keeps its own copy (it must not import the store's schema)


def test_the_decision_is_the_fewest_bytes_across_formats_and_sizes(searched: Sweep, decision: Decision) -> None:
    """JPEG is listed first; AVIF stores the same similarity in fewer bytes (stack.md) and wins."""
    m = searched.models[0]
    every = [setting(searched, m, f, si, Target(TARGET, PERCENTILE)) for f in FORMATS for si in range(2)]
    meeting = sorted((s for s in every if s.meets), key=lambda s: s.total_bytes)
    assert len(meeting) >= 2
    best, runner = decision.best, decision.runner_up
    assert best is not None and runner is not None
    assert (best.format, best.size, best.total_bytes) == (meeting[0].format, meeting[0].size, meeting[0].total_bytes)
    assert best.format == "avif" and runner.format == "jpeg"  # the runner-up: the other format's best
    assert decision.extra_cost is not None and decision.extra_cost > 0
    assert decision.extra_cost == pytest.approx(runner.total_bytes / best.total_bytes - 1)
    assert best.at_percentile >= TARGET and best.inexact == 0
    jpeg, avif = decision.recs
    assert avif.setting is best and jpeg.setting is not None and jpeg.setting.total_bytes == runner.total_bytes
    for c in best.choices:  # each image at the lowest rung that passes (a measured boundary)
        row = m.whole[c.coding, searched.sizes.index(best.size), :, c.index]
        qi = LADDER.index(c.quality)
        assert c.passed and _boundary(row, qi, TARGET) and not (row[:qi] >= TARGET).any()
        assert c.bytes == searched.bytes[c.coding, searched.sizes.index(best.size), qi, c.index]
    assert [c.similarity for c in best.worst_first()] == sorted(c.similarity for c in best.choices)
    pinned = decide(searched, Target(TARGET, PERCENTILE, size=640))
    assert pinned.best is not None and pinned.best.size == 640


def test_each_formats_encode_cost_is_measured_and_shown_beside_its_bytes(searched: Sweep, decision: Decision) -> None:
    """tune chose AVIF on bytes alone and said nothing of its encode cost (about 10x JPEG's on a CPU: a fleet's
    throughput). Each format's CPU time per stored megapixel is measured over every candidate the sweep
    encoded, shown per format, and the runner-up line says how much faster it encodes; JSON and saved report
    keep it (a report from before has none, and shows none)."""
    from preprocess.cli.tune import _rows

    measured = searched.measured()
    costs = {f: searched.encode_cost(f) for f in FORMATS}
    for ci, f in enumerate(FORMATS):
        c = costs[f]
        assert c is not None and c.encodes == int(measured[ci].sum()) > 0 and c.cpu_seconds > 0
        assert c.megapixels == pytest.approx((measured[ci] * searched.pixels()[:, None, :]).sum() / 1e6)
    jpeg, avif = costs["jpeg"], costs["avif"]
    assert jpeg is not None and avif is not None and avif.cpu_ms_per_mp > 2 * jpeg.cpu_ms_per_mp
    rows = dict(_rows(searched, decision, [None, None], {}))
    assert "encodes" in rows["runner-up"] and "faster than avif" in rows["runner-up"], rows["runner-up"]
    assert "ms/MP of CPU time" in rows["  encode"]
    again = from_json(json.loads(json.dumps(to_json(searched))), "r.json")
    assert again.encode_cost("avif") == avif
    again.timings = {k: v for k, v in again.timings.items() if not k.startswith(ENCODE_CPU)}  # an older report
    assert again.encode_cost("avif") is None and "encodes" not in dict(_rows(again, decision, [None, None], {}))[
        "runner-up"]


def test_presets_and_targets_outside_the_band(searched: Sweep, decision: Decision) -> None:
    assert set(decision.presets) == set(PRESETS) == {"archive", "train", "index", "preview"}
    for name, s in decision.presets.items():
        assert s is not None and s.inexact == 0 and s.at_percentile >= PRESETS[name].similarity  # bracketed
    archive, index = decision.presets["archive"], decision.presets["index"]
    assert archive is not None and index is not None and decision.best is not None
    assert archive.total_bytes >= decision.best.total_bytes >= index.total_bytes
    # a target between the band's: each choice is the lowest measured pass, an upper bound where not exact
    between = decide(searched, Target(0.985, PERCENTILE))
    assert between.best is not None and between.best.total_bytes <= decision.best.total_bytes


def test_a_saved_report_decides_the_same_and_answers_what_ifs(report: dict[str, Path], searched: Sweep,
                                                              decision: Decision, tmp_path: Path) -> None:
    again = from_json(json.loads(report["json"].read_text()), str(report["json"]))
    for m, n in zip(searched.models, again.models, strict=True):
        assert np.array_equal(np.isnan(m.whole), np.isnan(n.whole))
        assert np.allclose(np.nan_to_num(m.whole), np.nan_to_num(n.whole), atol=1e-6)
    assert np.array_equal(again.bytes, searched.bytes) and again.band == searched.band
    same = decide(again, Target(TARGET, PERCENTILE))
    assert same.best is not None and decision.best is not None
    assert (same.best.format, same.best.size, same.best.total_bytes) == (
        decision.best.format, decision.best.size, decision.best.total_bytes)
    proc = subprocess.run([*CLI, "tune", "--from", str(report["json"].parent), "--preset", "index", "--json",
                           "--report", str(tmp_path / "again")], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["target"]["similarity"] == 0.98 and data["target"]["percentile"] == 5.0
    saved = json.loads(report["json"].read_text())["presets"]["index"]["setting"]
    assert data["decision"]["at_percentile"] == pytest.approx(saved.pop("at_percentile"), abs=2e-6)  # rounded to 1e-6
    assert {k: v for k, v in data["decision"].items() if k != "at_percentile"} == saved
    assert load_spec(tmp_path / "again" / "recommended.toml").gate.threshold == 0.98
    crops = dict(load_spec(default_spec_path()).gate.views.items())["crops"]  # judged by the whole view only:
    assert data["not_checked"] == f"views crops >= {crops:g}"  # said in the JSON, and loudly in the text
    text = subprocess.run([*CLI, "tune", "--from", str(report["json"].parent), "--preset", "index"],
                          capture_output=True, text=True, cwd=ROOT, check=False, env={**os.environ, "COLUMNS": "200"})
    assert text.returncode == 0 and f"warning: tune judged by mobilenetv2-imagenet whole only; the base spec also " \
        f"checks views crops >= {crops:g}" in " ".join(text.stderr.split()), text.stderr
    assert "spec's [gate] to keep them" in " ".join(text.stderr.split())  # rich took [gate] for markup
    # without --report nothing is written, and it says so (a newcomer stored with the first decision's spec);
    # the title says the seconds were the measuring run's (it took 1 s); --report into the folder it reads is
    # refused (it replaced the report.html with every picture)
    assert "nothing written: add --report DIR" in " ".join(text.stderr.split())
    assert "from a saved report measured in" in " ".join(text.stdout.split())
    before = report["html"].read_bytes()
    mine = subprocess.run([*CLI, "tune", "--from", str(report["json"]), "--preset", "index", "--report",
                           str(report["json"].parent)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert mine.returncode == 2 and "error[CLI_USAGE]" in mine.stderr and report["html"].read_bytes() == before
    far = subprocess.run([*CLI, "tune", "--from", str(report["json"]), "--target", "0.99999"], capture_output=True,
                         text=True, cwd=ROOT, check=False, env={**os.environ, "COLUMNS": "200"})
    said = " ".join(far.stderr.split())  # a target above the band: "the best is" was only where the search stopped
    assert far.returncode == 2 and "TARGET_UNREACHABLE" in said and "--what-if 0.99999" in said, far.stderr
    for args, code in ((["--from", str(tmp_path)], "TUNE_REPORT"),
                       (["--from", str(report["json"]), "--preset", "index", "--target", "0.9"], "CLI_USAGE"),
                       (["--from", str(report["json"]), "--preset", "best"], "TUNE_TARGET"),
                       (["--from", str(report["json"]), "--view", "tiles"], "TUNE_VIEW"),
                       (["--from", str(report["json"]), "--view", "bogus"], "not a view tune measures")):
        bad = subprocess.run([*CLI, "tune", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        assert bad.returncode == 2 and code in bad.stderr and bad.stderr.count("\n") <= 3, (args, bad.stderr)


def test_judged_by_the_gate_a_recommendation_checks_what_run_checks(searched: Sweep, sample: Path,
                                                                    tmp_path: Path) -> None:
    """The default spec's gate checks the whole view and the crops; tune judged by the whole view alone
    and promised about half the bytes `run` then stored (a newcomer's walkthrough: 312.7 KB against 596.4
    KB). Now the crops are measured beside the whole view, the ``gate`` gauge judges both as the gate
    does, the recommended spec keeps both thresholds (moved with the target) and `run` stores what tune
    said."""
    m = searched.models[0]
    assert m.crops is not None and m.worst_crop is not None and {"crops", "gate"} <= set(m.gauges())
    measured = np.isfinite(m.whole)
    assert np.array_equal(np.isfinite(m.crops), measured)
    both = (m.whole >= TARGET) & (m.crops >= 0.975)
    assert np.array_equal((m.values("gate") >= TARGET)[measured], both[measured])  # passes when both pass
    assert dropped_checks(searched.spec, "gate", [m.ref]) == ""
    assert dropped_checks(searched.spec, "whole", [m.ref]) == "views crops >= 0.975"
    gated = run_sweep(SweepOptions(sources=[str(sample)], formats=["jpeg"], engine="pillow", gauge="gate",
                                   band=[0.985]))  # the spec's 1280 px, the search led by the gate's score
    d = decide(gated, Target(0.985, PERCENTILE, gauge="gate"))
    rec = d.recs[0]
    assert rec.setting is not None, d.message
    files = write_report(gated, d, tmp_path / "report", html_too=False)
    spec = load_spec(files["spec-jpeg"])
    assert dict(spec.gate.views.items()) == {"whole": 0.985, "crops": 0.9625}  # the crops moved as far
    assert "Not measured by tune" not in files["spec-jpeg"].read_text()
    summary = run_job(JobOptions(sources=[str(sample)], store=str(tmp_path / "s.icechunk"),
                                 spec_path=str(files["spec-jpeg"]), engine="pillow"))
    cols, _, _ = read_items(tmp_path / "s.icechunk")
    assert summary.stored == 6 and (cols["similarity_crops"] >= 0.9625).all()
    assert summary.bytes_out == pytest.approx(rec.setting.total_bytes, rel=0.1)


def test_the_recommended_specs_meet_the_target_in_real_runs(report: dict[str, Path], decision: Decision,
                                                            sample: Path, tmp_path: Path) -> None:
    assert set(report) == {"html", "json", "spec", "spec-jpeg", "spec-avif"}
    assert report["spec"].read_text() == report["spec-avif"].read_text()  # recommended.toml: the decision
    crops = dict(load_spec(default_spec_path()).gate.views.items())["crops"]  # tune judges by the whole view only:
    assert f"not checked by this spec: the base spec's views crops >= {crops:g}" in report["spec"].read_text()
    for rec in decision.recs:
        spec, s = load_spec(report[f"spec-{rec.format}"]), rec.setting
        assert s is not None and spec.encode.format == rec.format and spec.resize.size == s.size
        assert spec.quality.ladder() == s.ladder.rungs == LADDER
        assert spec.quality.mode == "adaptive" and spec.gate.threshold == TARGET and spec.gate.view == "whole"
        store = tmp_path / f"{rec.format}.icechunk"
        summary = run_job(JobOptions(sources=[str(sample)], store=str(store),
                                     spec_path=str(report[f"spec-{rec.format}"]), engine="pillow"))
        assert summary.stored == 6 and summary.failed == 2
        cols, blobs, _ = read_items(store)
        assert {sniff(b) for b in blobs} == {rec.format}
        assert np.percentile(cols["similarity"], PERCENTILE) >= TARGET
        assert summary.bytes_out == pytest.approx(s.total_bytes, rel=0.15)


def test_the_stored_sample_is_every_image_as_stored_worst_first(searched: Sweep, decision: Decision,
                                                               samples: list[StoredSample | None]) -> None:
    for rec, sample in zip(decision.recs, samples, strict=True):
        assert sample is not None and rec.setting is not None and sample.missing == []
        assert [s.choice.index for s in sample.images] == [c.index for c in rec.setting.worst_first()]
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
            assert Image.open(io.BytesIO(s.crop.stored)).size == (r.width, r.height)
        assert sample.total_bytes == rec.setting.total_bytes
        views = {v for v, _ in searched.spec.gate.views.items()}  # every image judged by the spec's every view
        assert all(set(s.checks[searched.spec.gate.model]) == views for s in sample.images)
        assert all((s.worst_crop is not None) == ("crops" in views) for s in sample.images)
        speed = sample.speed
        assert speed is not None and speed.images == 6 and speed.repeats == 2 and speed.cpu_ms_per_mp > 0
    assert samples[0] is not None and samples[0].speed is not None and "libjpeg-turbo" in samples[0].speed.decoder
    assert samples[1] is not None and samples[1].speed is not None and "dav1d" in samples[1].speed.decoder


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
  return {galleries, crops, ticks, titles, formats: document.querySelector('#formats').innerText,
          presets: document.querySelector('#presets').innerText};
}"""
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _no_overlap(boxes: list[list[float]]) -> bool:
    """Tick labels of one axis ([x, y, width, height] each) do not overlap."""
    boxes = sorted(boxes)
    return all(a[0] + a[2] <= b[0] + 0.5 for a, b in itertools.pairwise(boxes))


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
        decided = page.inner_text("#decision")
        skipped = page.inner_text("#skipped")
        bottom = page.evaluate("document.querySelector('#crops-jpeg').getBoundingClientRect().bottom + window.scrollY")
        page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1200, "height": bottom + 10})
        browser.close()
    assert problems == []
    assert [g["id"] for g in facts["galleries"]] == ["gallery-jpeg", "gallery-avif"]
    for g, sample in zip(facts["galleries"], samples, strict=True):
        assert sample is not None
        assert g["names"] == [Path(s.choice.path).name for s in sample.images] and len(g["names"]) == 6
        assert g["sims"] == sorted(g["sims"]) and all(w > 0 for w in g["decoded"])
    assert [(c["id"], c["sets"]) for c in facts["crops"]] == [("crops-jpeg", 4), ("crops-avif", 4)]
    assert all(len(c["decoded"]) == 12 and all(w > 0 for w in c["decoded"]) for c in facts["crops"])
    titles = dict(facts["titles"])  # inline SVG whose points say what they are on hover
    assert {"formats-chart", "scatter-jpeg", "scatter-avif"} <= set(titles)
    assert any(t.startswith("decision: avif at") for t in titles["formats-chart"])
    assert any(t.startswith("runner-up: jpeg at") for t in titles["formats-chart"])
    assert any("messi5.jpg q" in t for t in titles["scatter-jpeg"])
    assert len(facts["ticks"]) >= 3 and all(_no_overlap(axis) for axis in facts["ticks"]), facts["ticks"]
    assert "libjpeg-turbo" in facts["formats"] and "dav1d" in facts["formats"]
    assert "recommended-avif.toml" in facts["formats"] and "archive" in facts["presets"]
    assert "avif at" in decided and "runner-up" in decided and "jpeg at" in decided
    assert "empty.jpg" in skipped and "E_TRUNCATED" in skipped
    img = Image.open(shot)
    assert img.width == 1200 and img.height > 1500
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


def test_report_json_holds_every_number(report: dict[str, Path], searched: Sweep) -> None:
    data = json.loads(report["json"].read_text())
    assert data["format"] == 3 and data["mode"] == "search" and data["band"] == searched.band
    assert data["sizes"] == [640, 320] and data["qualities"] == LADDER
    assert [c["label"] for c in data["codings"]] == ["jpeg jpegli 4:2:0", "avif libavif 4:2:0"]
    assert np.array_equal(np.asarray(data["bytes"]), searched.bytes)
    sims = np.asarray(data["models"][0]["similarity"]["whole"], dtype=float)  # null: not measured
    assert np.array_equal(np.isnan(sims), ~searched.measured())
    assert data["decision"]["format"] == "avif" and data["runner_up"]["format"] == "jpeg" and data["extra_cost"] > 0
    assert set(data["presets"]) == set(PRESETS) and data["recommended_spec"] == "recommended.toml"
    recs = data["recommendations"]
    assert [r["format"] for r in recs] == ["jpeg", "avif"] and all(r["ok"] for r in recs)
    assert len(recs[1]["setting"]["choices"]) == 6 and recs[1]["spec"] == "recommended-avif.toml"
    assert recs[0]["neighbours"]["k"] == 4 and 0 <= recs[0]["neighbours"]["top1"] <= 1
    decode = recs[1]["stored"]["decode"]
    assert decode["cpu_ms_per_mp"] > 0 and "dav1d" in decode["decoder"]
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


@pytest.fixture(scope="module")
def every(two: Path) -> Sweep:
    """Every quality of a coarse ladder for every image, with the tile view."""
    return run_sweep(SweepOptions(sources=[str(two)], sizes=(640,), qualities=parse_qualities("10..90/10"),
                                  tiles=True, every_quality=True, engine="pillow"))


def test_every_quality_measures_full_curves_and_the_search_ends_on_them(every: Sweep, two: Path) -> None:
    assert every.mode == "every-quality" and every.measured().all()
    (m,) = every.models
    assert m.tiles is not None and m.worst_tile is not None and (m.worst_tile >= 0).all()
    assert (m.tiles["min"] <= m.tiles["p10"] + 1e-6).all() and (m.tiles["p10"] <= m.tiles["mean"] + 1e-6).all()
    assert (np.diff(every.bytes, axis=2) > 0).all()  # bytes grow with quality, image by image
    d = decide(every, Target(0.98, PERCENTILE))  # at 640 px the camera photo needs q80 for 0.98
    s = d.best
    assert s is not None and s.single is not None  # one quality for all exists with every rung measured
    assert s.ladder.max == s.single.quality and s.total_bytes <= s.single.total_bytes and 0 <= s.saving < 1
    assert set(d.recs[0].gauges) == {f"mobilenetv2-imagenet {g}" for g in ("whole", "crops", "gate", "tiles-min",
                                                                           "tiles-p10", "tiles-mean")}
    # the search on the same grid ends at a boundary of the full curves (same encoder, same model)
    found = run_sweep(SweepOptions(sources=[str(two)], sizes=(640,), qualities=every.qualities, target=0.98,
                                   engine="pillow"))
    for i in range(2):
        row, full = found.models[0].whole[0, 0, :, i], m.whole[0, 0, :, i]
        assert np.allclose(row[np.isfinite(row)], full[np.isfinite(row)], atol=1e-4)
        chosen = min(qi for qi in range(len(row)) if row[qi] >= 0.98)
        assert _boundary(full, chosen, 0.98)


def test_a_tile_view_recommendation_runs_as_a_tile_gate(every: Sweep, two: Path, tmp_path: Path) -> None:
    # The tile view is much stricter (q100 with 4:2:0 already costs ~0.005 per tile): a lower target.
    d = decide(every, Target(0.93, 10, gauge="tiles-mean"))
    assert d.best is not None
    files = write_report(every, d, tmp_path / "report")
    spec = load_spec(files["spec"])
    assert (spec.gate.view, spec.gate.tiles_combine) == ("tiles", "mean")
    summary = run_job(JobOptions(sources=[str(two)], store=str(tmp_path / "t.icechunk"), spec_path=str(files["spec"]),
                                 engine="pillow"))
    cols, _, _ = read_items(tmp_path / "t.icechunk")
    assert summary.stored == 2 and np.percentile(cols["similarity"], 10) >= 0.93


@pytest.mark.parametrize(("qualities", "rungs", "left_out"), [
    ((30, 90), [90], "q30"),  # a step of 60 is no spec ladder (quality.step <= 50)
    ((30, 50, 90), [50, 90], "q30"),  # 30, 50, 70, 90 was not swept
    ((30, 50, 70, 90), [30, 50, 70, 90], ""),
])
def test_the_recommended_ladder_is_one_that_was_swept(two: Path, tmp_path: Path, qualities: tuple[int, ...],
                                                     rungs: list[int], left_out: str) -> None:
    sweep = run_sweep(SweepOptions(sources=[str(two)], sizes=(320,), qualities=qualities, every_quality=True,
                                   engine="pillow"))
    # a target only the top quality meets: the ladder then ends at q90 (the worst image's similarity at q90,
    # so that every image passes there and the adaptive setting meets it whatever lower rungs the others take)
    sims = sweep.models[0].whole[0, 0]
    target = float(sims[-1].min())
    assert all(np.percentile(s, PERCENTILE) < target for s in sims[:-1]), "q90 must be the lowest to meet it"
    d = decide(sweep, Target(target, PERCENTILE))
    assert d.best is not None and d.best.ladder.rungs == rungs
    assert (left_out in d.best.ladder.note) if left_out else d.best.ladder.note == ""
    (tmp_path / "recommended-avif.toml").write_text("# an earlier report's, into this folder\n")
    (tmp_path / "notes.txt").write_text("the user's\n")
    (tmp_path / "recommended-final.toml").write_text("# the user's, not a format's\n")
    files = write_report(sweep, d, tmp_path)
    # a newcomer's walkthrough (session 7): a jpeg-only report into a folder that held a jpeg+avif one left
    # its recommended-avif.toml, which report.json no longer named; only this report's specs are there now
    assert sorted(p.name for p in tmp_path.glob("recommended*.toml")) == [
        "recommended-final.toml", "recommended-jpeg.toml", "recommended.toml"]
    assert (tmp_path / "notes.txt").exists()
    spec = load_spec(files["spec"])  # a valid spec (quality.step <= 50) ...
    assert spec.quality.ladder() == rungs and set(spec.quality.ladder()) <= set(qualities)  # ... that was swept
    assert ("left out" in files["spec"].read_text()) == bool(left_out)


def test_helpers() -> None:
    from preprocess.tune.recommend import swept_ladder

    assert swept_ladder([30, 90], 90).rungs == [90]
    assert swept_ladder([30, 55, 80, 90], 90).rungs == [30, 55, 80, 90]  # 30..90/25: max closes the ladder
    full = swept_ladder(list(range(10, 96, 5)), 85)
    assert (full.min, full.max, full.step, full.note) == (10, 85, 5, "")
    assert swept_ladder([5, 7, 10, 20, 30, 40], 40).rungs == [10, 20, 30, 40]
    assert parse_qualities("10..95/5") == list(range(10, 96, 5)) and parse_qualities("30, 50,90") == [30, 50, 90]
    sims = np.array([[[0.95, 0.97], [0.99, 0.995], [0.98, 0.999], [np.nan, 1.0]]], dtype=np.float32)
    assert lowest_meeting(sims, 0.991, 0) == [None]  # the last rung was not measured for every image
    assert lowest_meeting(sims, 0.98, 0) == [1]

    def pt(b: int, s: float) -> Point:
        return Point(640, 50, b, 1.0, s, s, s, s, s, s)

    front = pareto([pt(10, 0.9), pt(20, 0.85), pt(30, 0.95), pt(30, 0.94), pt(5, 0.8)])
    assert [(p.total_bytes, p.at_percentile) for p in front] == [(5, 0.8), (10, 0.9), (30, 0.95)]


def test_the_cli_prints_progress_lines_when_piped_and_says_what_is_wrong(tmp_path: Path, two: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"")  # a zero-byte upload: tune crashed (exit 70) on a batch of none
    deep_report = tmp_path / "deep.json"
    deep_report.write_text("[" * 100_000 + "]" * 100_000)  # a RecursionError's traceback, exit 70, before
    for args, code in (([str(empty), "--report", str(tmp_path / "r0")], "SAMPLE_EMPTY"),
                       ([str(unreadable), "--report", str(tmp_path / "r0")], "SAMPLE_EMPTY"),
                       ([str(two), "--report", str(tmp_path / "r0"), "--formats", "jpeg,bmp"], "TUNE_FORMAT"),
                       ([str(two)], "CLI_USAGE"), ([str(two), "--from", str(tmp_path)], "CLI_USAGE"),
                       (["--from", str(deep_report)], "TUNE_REPORT")):
        proc = subprocess.run([*CLI, "tune", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        assert proc.returncode == 2 and code in proc.stderr, (args, proc.stderr)
    out = tmp_path / "r1"
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(out), "--sizes", "320", "--qualities", "10,20",
                           "--target", "0.9999", "--engine", "pillow", "--decode-repeats", "0"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "TARGET_UNREACHABLE" in proc.stderr and "the best is" in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tune: measuring: ")]  # not a terminal: lines
    assert lines[0] == "tune: measuring: 0/2 images" and lines[-1].startswith("tune: measuring: 2/2 images in ")
    assert (out / "report.html").is_file() and not (out / "recommended.toml").exists()
    assert "no-recommendation" in (out / "report.html").read_text()
    # two sizes: two searches an image, counted as searches, not as images
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(tmp_path / "r2"), "--sizes", "320,224,320",
                           "--qualities", "10,20", "--target", "0.9999", "--engine", "pillow", "--decode-repeats", "0"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tune: measuring")]
    assert lines[0] == "tune: measuring (2 searches an image: format variants x sizes): 0/4 searches", proc.stderr


def test_the_cli_compares_formats(tmp_path: Path, two: Path) -> None:
    out = tmp_path / "r"
    proc = subprocess.run([*CLI, "tune", str(two), "--report", str(out), "--sizes", "320", "--qualities", "30..90/10",
                           "--target", "0.95", "--engine", "pillow", "--formats", "webp,jxl", "--decode-repeats", "1",
                           "--json"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "json-schema.json").read_text())).validate(data)
    assert data["version"] == 1 and data["command"] == "tune"
    assert [r["format"] for r in data["recommendations"]] == ["webp", "jxl"]
    assert all(r["stored"]["decode"]["repeats"] == 1 for r in data["recommendations"])
    best = data["decision"]["format"]
    assert load_spec(out / "recommended.toml").encode.format == best
    assert load_spec(out / "recommended-jxl.toml").encode.format == "jxl"
    assert data["files"]["spec-jxl"] == str(out / "recommended-jxl.toml")


def test_another_model_judges_the_same_candidates(two: Path) -> None:
    sweep = run_sweep(SweepOptions(sources=[str(two)], sizes=(640,), qualities=(30, 90), compare=("dinov2-small",),
                                   every_quality=True, engine="pillow"))
    mobilenet, dino = sweep.models
    assert (mobilenet.name, dino.name) == ("mobilenetv2-imagenet", "dinov2-small")
    assert dino.tiles is None and dino.whole.shape == mobilenet.whole.shape == (1, 1, 2, 2)
    # DINOv2 is far less compression-sensitive than MobileNetV2 (stack.md)
    assert dino.whole[0, 0, 0].mean() > mobilenet.whole[0, 0, 0].mean()
    d = decide(sweep, Target(0.98, PERCENTILE))
    assert set(d.recs[0].gauges) == {"mobilenetv2-imagenet whole", "mobilenetv2-imagenet crops",
                                     "mobilenetv2-imagenet gate", "dinov2-small whole"}  # the gate model's crops
    judged_by_dino = decide(sweep, Target(0.98, PERCENTILE, model="dinov2-small"))
    assert judged_by_dino.best is not None and judged_by_dino.best.choices[0].quality == 30


def test_judging_by_another_models_manifest_writes_a_spec_that_finds_it(two: Path, tmp_path: Path) -> None:
    from preprocess.pipeline.process import plan

    manifest = ROOT / "models" / "dinov2-small.toml"
    sweep = run_sweep(SweepOptions(sources=[str(two)], gate_model=str(manifest), sizes=(320,), qualities=(60, 90),
                                   engine="pillow"))
    assert [m.name for m in sweep.models] == ["dinov2-small"] and sweep.models[0].ref == str(manifest)
    d = decide(sweep, Target(0.99, 1))
    assert d.best is not None and d.recs[0].model == "dinov2-small"
    spec = load_spec(write_report(sweep, d, tmp_path / "r")["spec"])
    assert spec.gate.model == str(manifest)
    assert plan(str(tmp_path / "r" / "recommended.toml"), engine="pillow").model == "dinov2-small"


def test_a_file_name_that_is_not_utf8_is_shown_quoted_in_the_report(tmp_path: Path, two: Path) -> None:
    """A sample named caf\\xe9.jpg (bytes, not UTF-8) ended tune in a traceback while writing report.html
    (its name went into the page and the plots as a lone surrogate) and left an empty report."""
    folder = tmp_path / "odd"
    folder.mkdir()
    first, second = sorted(two.iterdir())[:2]
    shutil.copy(first, folder / first.name)
    shutil.copy(bytes(second), os.fsencode(folder) + b"/caf\xe9.jpg")
    out = tmp_path / "r"
    proc = subprocess.run([*CLI, "tune", str(folder), "--report", str(out), "--sizes", "320", "--qualities", "30,60",
                           "--target", "0.9", "--engine", "pillow", "--decode-repeats", "0"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "caf\\351.jpg" in page and first.name in page
    assert json.loads((out / "report.json").read_text())["images"]


def test_the_gate_gauge_is_the_gates_own_score() -> None:
    """tune's ``gate`` gauge (array-wise, numpy only: ``tune --from`` loads no engine) scores as the gate does."""
    from preprocess.pipeline.gate.measure import gate_score
    from preprocess.tune.grid import gate_values

    rng = np.random.default_rng(7)
    whole = np.concatenate([1 - 10 ** rng.uniform(-7, -0.5, 300), [0.99, 0.985, 1.0, np.nan]]).astype(np.float32)
    crops = np.concatenate([1 - 10 ** rng.uniform(-7, -0.5, 300), [0.975, 0.99, 1.0, 0.9]]).astype(np.float32)
    got = gate_values(whole, crops, (0.99, 0.975))
    for w, c, g in zip(whole, crops, got, strict=True):
        if np.isnan(w):
            assert np.isnan(g)
            continue
        want = gate_score({"m": {"whole": float(w), "crops": float(c)}}, {"whole": 0.99, "crops": 0.975}, 0.99)
        assert g == pytest.approx(want, abs=1e-6) and (g >= np.float32(0.99)) == (w >= 0.99 and c >= 0.975)


@pytest.mark.parametrize("checks", [(0.99, 0.975), (0.95, 0.9), (0.999, 0.99), (1.0, 0.975)])
def test_the_gate_gauge_passes_exactly_when_the_gate_does_at_a_thresholds_float32_step(
        checks: tuple[float, float]) -> None:
    """A crop one float32 step below its threshold failed the gate but scored float32(0.99), which the
    recommendation read as a pass (a review): the gauge's failures stay below every float32 >= the target."""
    from preprocess.pipeline.gate.measure import gate_score
    from preprocess.tune.grid import gate_values

    tw, tc = checks
    near = [np.nextafter(np.float32(t), np.float32(d)) for t in (tw, tc) for d in (0, 2)] + [np.float32(tw),
                                                                                          np.float32(tc)]
    for w in [np.float32(0.99999), *near]:
        for c in near:
            v = gate_values(np.asarray([w], np.float32), np.asarray([c], np.float32), checks)[0]
            passes = gate_score({"m": {"whole": float(w), "crops": float(c)}}, {"whole": tw, "crops": tc}, tw) >= tw
            assert bool(v >= tw) == passes, (w, c, v)


def test_a_gate_target_is_a_gate_score_not_a_similarity(report: dict[str, Path], tmp_path: Path) -> None:
    """Judged by the gate (the whole view and the crops), `tune` printed "similarity 0.9902" and "leuvenB.jpg
    q87 0.9901" where `ls` and `show` say 0.9981 for that image at q87: the number is the gate score (the crops'
    0.9754 on the whole view's scale), which no row stores. It is called a gate score, in the CLI and the spec;
    judged by one view it is that view's similarity, as before."""
    def tune(*args: str) -> str:
        proc = subprocess.run([*CLI, "tune", "--from", str(report["json"].parent), *args], capture_output=True,
                              text=True, cwd=ROOT, check=False, env={**os.environ, "COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr
        return " ".join(proc.stdout.split())

    gate = tune("--view", "gate", "--preset", "preview", "--report", str(tmp_path / "gate"))
    assert "gate score: the worse check on the whole view's scale" in gate, gate
    assert "similarity 0." not in gate and ", gate score 0." in gate and "worst (gate score)" in gate
    assert "# This adaptive spec" in (spec := (tmp_path / "gate" / "recommended.toml").read_text())
    assert "gate score at the percentile 0." in spec and "similarity at the percentile" not in spec
    page = (tmp_path / "gate" / "report.html").read_text()
    assert "gate score at p5" in page  # the decision and each format (the chart says "similarity at p5 (gate)")
    whole = tune("--view", "whole", "--preset", "preview")
    assert "gate score" not in whole and ", similarity 0." in whole and "worst (similarity)" in whole
    unreachable = subprocess.run([*CLI, "tune", "--from", str(report["json"].parent), "--view", "gate",
                                  "--target", "0.999"],
                                 capture_output=True, text=True, cwd=ROOT, check=False)
    assert unreachable.returncode == 2 and "no measured setting reaches gate score >= 0.999" in " ".join(
        unreachable.stderr.split())


def test_a_batch_with_no_readable_file_is_passed_over(tmp_path: Path, two: Path) -> None:
    """The first batch of the sample held only zero-byte files: tune crashed with a traceback (exit 70) before
    it reached the readable ones (a walkthrough, session 8). The batch is skipped and its files listed."""
    d = tmp_path / "sample"
    d.mkdir()
    for name in ("0a.jpg", "0b.jpg"):
        (d / name).write_bytes(b"")
    for p in sorted(two.iterdir()):
        shutil.copy(p, d / p.name)
    spec = tmp_path / "batch2.toml"
    spec.write_text((ROOT / "pipelines" / "camera.toml").read_text().replace("size = 32", "size = 2"))
    sweep = run_sweep(SweepOptions(sources=[str(d)], spec_path=str(spec), sizes=(320,), qualities=(50, 90),
                                   formats=["jpeg"], engine="pillow", gauge="gate"))
    assert [Path(i.path).name for i in sweep.images] == sorted(p.name for p in two.iterdir())
    assert [(Path(k.path).name, k.code) for k in sweep.skipped] == [("0a.jpg", "E_EMPTY"), ("0b.jpg", "E_EMPTY")]
