"""The tile view of the gate: spec fields (fingerprints of whole-image specs unchanged), tile geometry,
and the gate's search with ``view = "tiles"`` on real photos with the real model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from preprocess.pipeline.codecs import Encoded
from preprocess.pipeline.devices import EngineName
from preprocess.pipeline.engines import make_engine, tile_boxes
from preprocess.pipeline.engines.base import SourceImage
from preprocess.pipeline.extractor.build import build
from preprocess.pipeline.extractor.manifest import find_manifest
from preprocess.pipeline.extractor.session import Extractor
from preprocess.pipeline.gate import Measure, combine_tiles, decide, tile_embeddings
from preprocess.pipeline.images import probe
from preprocess.pipeline.spec import Encode, Gate, Quality, Resize, Spec, load_spec, parse_spec

ONE_VIEW = Path(__file__).parents[1] / "data" / "specs-before-21" / "camera.toml"  # one model, the whole view


def test_whole_image_specs_keep_their_fingerprint() -> None:
    """The tile fields are left out of a whole-view spec's fingerprint (as before they existed)."""
    spec = load_spec(ONE_VIEW)
    assert spec.gate.view == "whole"
    explicit = parse_spec({**spec.to_dict(), "gate": {**spec.gate.to_dict(), "view": "whole", "tiles_combine": "min"}})
    assert explicit.fingerprint("abc") == spec.fingerprint("abc")
    assert "view" not in spec.to_dict()["gate"]


def test_the_tile_view_is_part_of_the_fingerprint() -> None:
    spec = load_spec(ONE_VIEW)
    tiles = parse_spec({**spec.to_dict(), "gate": {**spec.gate.to_dict(), "view": "tiles"}})
    other = parse_spec({**spec.to_dict(), "gate": {**spec.gate.to_dict(), "view": "tiles", "tiles_combine": "min"}})
    assert len({spec.fingerprint("abc"), tiles.fingerprint("abc"), other.fingerprint("abc")}) == 3
    assert parse_spec(tiles.to_dict()) == tiles


@given(w=st.integers(1, 3000), h=st.integers(1, 3000), tw=st.integers(64, 512), th=st.integers(64, 512))
def test_tiles_cover_the_image_inside_its_bounds(w: int, h: int, tw: int, th: int) -> None:
    boxes = tile_boxes(w, h, tw, th)
    assert len(boxes) == max(1, -(-w // tw)) * max(1, -(-h // th))
    covered = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(tw, w) and y1 - y0 == min(th, h)
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_combine_tiles() -> None:
    sims = np.array([0.90] + [0.99 + 0.001 * k for k in range(9)], dtype=np.float32)
    assert combine_tiles(sims, "min") == pytest.approx(0.90)
    assert combine_tiles(sims, "mean") == pytest.approx(float(sims.mean()))
    assert 0.90 < combine_tiles(sims, "p10") < 0.99
    with pytest.raises(ValueError, match="tiles_combine"):
        combine_tiles(sims, "max")


@pytest.mark.parametrize("engine_name", ["pillow", "dali"])
def test_the_gate_searches_on_tiles(engine_name: EngineName, camera_photos: list[Path],
                                    small_photos: list[Path]) -> None:
    manifest = find_manifest("mobilenetv2-imagenet")
    extractor = Extractor(build(manifest))
    engine = make_engine(engine_name, "cpu", encode=Encode(), view=manifest.input, max_batch=8)
    resize = Resize(size=640)
    srcs = []
    for p in [camera_photos[0], camera_photos[5], small_photos[0]]:
        data = p.read_bytes()
        info = probe(data, max_pixels=10**9)
        srcs.append(SourceImage(p.name, data, hashlib.sha256(data).hexdigest(), info,
                                resize.target(info.width, info.height)))
    try:
        loaded = engine.load(srcs)
        gate = Gate.model_validate({"view": "tiles", "tiles_combine": "p10", "threshold": 0.985})  # the older spelling
        timings: dict[str, float] = {}
        spec = Spec(quality=Quality(min=30, max=95, step=5), gate=gate)
        decisions, _ = decide(Measure(engine, extractor), loaded, spec, timings=timings)
        assert timings["regions"] > 0
        ref_tiles = tile_embeddings(engine, extractor, loaded.prepared)
        whole_ref = extractor.embed(loaded.source_view)
        for d, ref_t, w_ref in zip(decisions, ref_tiles, whole_ref, strict=True):
            assert d.status in ("ok", "flagged") and d.data is not None and d.candidate is not None
            stored = Encoded(d.data, d.candidate)
            if d.status == "ok":
                assert d.similarity >= gate.threshold
            # the recorded score is the tile score of the stored bytes, measured again independently
            (got,) = tile_embeddings(engine, extractor, [stored])
            assert d.similarity == pytest.approx(combine_tiles(np.einsum("nd,nd->n", got, ref_t), "p10"), abs=1e-4)
            # the stored embedding is the whole image's
            whole = extractor.embed(engine.view([stored]))[0]
            assert float(whole @ d.embedding) > 0.9999
            assert float(w_ref @ d.reference) > 0.9999
    finally:
        engine.close()
