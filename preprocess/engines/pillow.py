"""The pillow engine: pillow-simd on the CPU, the fast CPU path.

JPEG sources decode at a reduced DCT scale (``draft``) that still covers the target size,
so a 2560x1600 photo bound for 1280 px never decodes its full-size pixels; the rest goes
through one antialiased resize. Work is spread over a thread pool (Pillow releases the GIL
in decode, resize and encode).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from PIL import Image

from preprocess import errors
from preprocess.engines.base import Engine, Loaded, Prepared, SourceImage, Tiles, tile_boxes
from preprocess.errors import InputError, input_error
from preprocess.extractor.manifest import InputView
from preprocess.extractor.view import model_view
from preprocess.images import decode_rgb
from preprocess.spec import Encode

_SUBSAMPLING = {"444": 0, "422": 1, "420": 2}


class PillowEngine(Engine):
    name: ClassVar[str] = "pillow"

    def __init__(self, encode: Encode, view: InputView, *, device: str = "cpu", max_batch: int = 32,
                 threads: int | None = None) -> None:
        if device != "cpu":
            raise ValueError("the pillow engine runs on the CPU only")
        super().__init__(encode, view, device="cpu", max_batch=max_batch)
        self._pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1,
                                        thread_name_prefix="pillow-engine")

    def _load_one(self, src: SourceImage) -> tuple[Image.Image, Image.Image]:
        full = decode_rgb(src.data, draft_to=src.target, path=src.path)
        stored = full if full.size == src.target else full.resize(src.target, Image.Resampling.LANCZOS,
                                                                   reducing_gap=3.0)
        view = full.resize((self.view_spec.width, self.view_spec.height), Image.Resampling.BILINEAR)
        return stored, view

    def load(self, sources: Sequence[SourceImage]) -> Loaded:
        futures = [self._pool.submit(self._load_one, s) for s in sources]
        prepared: list[Prepared] = []
        views: list[Image.Image] = []
        failures: list[tuple[int, InputError]] = []
        for i, (src, fut) in enumerate(zip(sources, futures, strict=True)):
            try:
                stored, view = fut.result()
            except InputError as exc:
                failures.append((i, exc))
                continue
            except Exception as exc:  # one source must never take the batch down
                failures.append((i, input_error(errors.ENGINE_FAILED, f"pillow engine: {exc}", src.path)))
                continue
            prepared.append(Prepared(index=i, width=stored.width, height=stored.height, pixels=stored))
            views.append(view)
        return Loaded(prepared=prepared, source_view=model_view(views, self.view_spec), failures=failures)

    def _encode_one(self, img: Image.Image, quality: int) -> bytes:
        # Image.save keeps its options on the Image object (encoderinfo), so two threads saving the
        # same image at different qualities would race: save from a private copy (0.3 ms at 1 MP).
        img = img.copy()
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality),
                 subsampling=_SUBSAMPLING[self.encoding.chroma_subsampling],
                 progressive=self.encoding.progressive, optimize=False)
        return buf.getvalue()

    def encode(self, images: Sequence[Prepared], qualities: Sequence[int]) -> list[bytes]:
        return list(self._pool.map(self._encode_one, [p.pixels for p in images], qualities))

    def _view_one(self, data: bytes) -> Image.Image:
        # Full decode (no DCT draft): the candidate must be seen exactly as the source is.
        return Image.open(io.BytesIO(data)).convert("RGB").resize((self.view_spec.width, self.view_spec.height),
                                          Image.Resampling.BILINEAR)

    def view(self, encoded: Sequence[bytes]) -> Any:
        return model_view(list(self._pool.map(self._view_one, encoded)), self.view_spec)

    def _tiles_one(self, item: Prepared | bytes) -> list[Image.Image]:
        img = item.pixels if isinstance(item, Prepared) else Image.open(io.BytesIO(item)).convert("RGB")
        v = self.view_spec
        return [img.crop(box) for box in tile_boxes(img.width, img.height, v.width, v.height)]

    def tiles(self, images: Sequence[Prepared | bytes]) -> Tiles:
        per_image = list(self._pool.map(self._tiles_one, images))
        flat = [tile for tiles in per_image for tile in tiles]
        return Tiles(batch=model_view(flat, self.view_spec), counts=[len(t) for t in per_image])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
