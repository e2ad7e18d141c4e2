"""The pillow engine: pillow-simd on the CPU, the fast CPU path.

JPEG sources decode at a reduced DCT scale (``draft``) that still covers the target size, but
never below half the source's (:data:`DRAFT_REDUCTION`), so a 2560x1600 photo bound for 1280 px never
decodes its full-size pixels; the rest goes through one antialiased resize. With ``threads`` > 1
each call's work is spread over a thread pool (Pillow releases the GIL in decode, resize and encode);
with ``threads=1`` it runs in the caller's thread, for callers that run several batches at once (the
:class:`Processor`'s lanes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
from PIL import Image

from preprocess.core import errors
from preprocess.core.cpus import cpu_lanes
from preprocess.core.errors import InputError, input_error
from preprocess.pipeline import codecs
from preprocess.pipeline.batches import HostPixels, ModelBatch, Pixels
from preprocess.pipeline.codecs import Candidate, Encoded
from preprocess.pipeline.devices import DeviceName, EngineName
from preprocess.pipeline.engines.base import (
    Box,
    BoxRule,
    Engine,
    Loaded,
    Looks,
    Opened,
    Prepared,
    SourceImage,
    Tiles,
)
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.extractor.view import model_view
from preprocess.pipeline.images import decode_rgb
from preprocess.pipeline.spec import Encode

# The DCT scale a JPEG source decodes at goes down to 1/DRAFT_REDUCTION, no further: a 6028x3391 photo bound
# for 1280 px decoded at 1/4 and resized 1507 -> 1280 px differed from a full resize enough that a lossless
# copy's worst crop scored 0.9918 under an independent decode and resize (0.9967 at 1/2, 0.9977 in full).
DRAFT_REDUCTION = 2


def draft_size(src: SourceImage) -> tuple[int, int]:
    """The smallest decoded size asked of a JPEG source: the target, and at least 1/DRAFT_REDUCTION of it."""
    w, h = src.info.width, src.info.height
    return max(src.target[0], -(-w // DRAFT_REDUCTION)), max(src.target[1], -(-h // DRAFT_REDUCTION))


class PillowEngine(Engine):
    name: ClassVar[EngineName] = "pillow"
    staged: ClassVar[bool] = True

    def __init__(self, encode: Encode, view: InputView, *, device: DeviceName = "cpu", max_batch: int = 32,
                 threads: int | None = None) -> None:
        if device != "cpu":
            raise ValueError("the pillow engine runs on the CPU only")
        super().__init__(encode, view, device="cpu", max_batch=max_batch)
        n = threads or cpu_lanes()
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="pillow-engine") if n > 1 else None

    def _map[T, R](self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        return self._pool.map(fn, items) if self._pool is not None else map(fn, items)

    def _load_one(self, src: SourceImage) -> tuple[Image.Image, Image.Image]:
        full = decode_rgb(src.data, draft_to=draft_size(src), path=src.path)
        stored = full if full.size == src.target else full.resize(src.target, Image.Resampling.LANCZOS,
                                                                   reducing_gap=3.0)
        view = full.resize((self.view_spec.width, self.view_spec.height), Image.Resampling.BILINEAR)
        return stored, view

    def load(self, sources: Sequence[SourceImage]) -> Loaded:
        prepared: list[Prepared] = []
        views: list[Image.Image] = []
        failures: list[tuple[int, InputError]] = []
        for i, (src, got) in enumerate(zip(sources, self._map(_attempt(self._load_one), sources), strict=True)):
            if isinstance(got, InputError):
                failures.append((i, got))
                continue
            if isinstance(got, Exception):  # one source must never take the batch down
                failures.append((i, input_error(errors.ENGINE_FAILED, f"pillow engine: {got}", src.path)))
                continue
            stored, view = got
            prepared.append(Prepared(index=i, width=stored.width, height=stored.height, pixels=Pixels(stored)))
            views.append(view)
        return Loaded(prepared=prepared, source_view=model_view(views, self.view_spec), failures=failures)

    def _encode_one(self, image: Prepared, candidate: Candidate) -> Encoded:
        v = candidate.variant
        if v.encoder == "libjpeg":
            img = image.pixels.image()
            if self._pool is not None:
                # Image.save keeps its options on the Image object (encoderinfo), so two pool threads saving
                # the same image at different qualities would race: save from a private copy (0.3 ms at 1 MP).
                img = img.copy()
            # Huffman tables optimized only when the probe's bytes are what is stored (finish rewrites them)
            data = codecs.encode_pillow_jpeg(img, candidate.quality, v.chroma, optimize=not self.encoding.progressive)
        else:
            data = codecs.encode(self._host(image), candidate, level=self.encoding.level)
        return Encoded(data, candidate)

    @staticmethod
    def _host(image: Prepared) -> HostPixels:
        """The prepared pixels as an array, made once per image (its probes run on one lane's thread)."""
        if image.host is None:
            image.host = image.pixels.array()
        return image.host

    def encode(self, images: Sequence[Prepared], candidates: Sequence[Candidate]) -> list[Encoded]:
        if len(images) != len(candidates):
            raise ValueError("one candidate per image")
        return list(self._map(lambda pair: self._encode_one(*pair), zip(images, candidates, strict=True)))

    def _view_one(self, encoded: Encoded) -> Image.Image:
        # Full decode (no DCT draft): the candidate must be seen exactly as the source is.
        return _decode_candidate(encoded).resize((self.view_spec.width, self.view_spec.height),
                                                 Image.Resampling.BILINEAR)

    def view(self, encoded: Sequence[Encoded]) -> ModelBatch:
        return model_view(list(self._map(self._view_one, encoded)), self.view_spec)

    @staticmethod
    def _image(image: Prepared | Encoded) -> Image.Image:
        return image.pixels.image() if isinstance(image, Prepared) else _decode_candidate(image)

    def pixels(self, image: Prepared | Encoded) -> HostPixels:
        return image.pixels.array() if isinstance(image, Prepared) else np.asarray(_decode_candidate(image))

    def regions(self, images: Sequence[Prepared | Encoded], boxes: BoxRule) -> Tiles:
        def cut(item: Prepared | Encoded) -> list[Image.Image]:
            img = self._image(item)
            return [img.crop(box) for box in boxes(img.width, img.height)]

        per_image = list(self._map(cut, images))
        flat = [region for regions in per_image for region in regions]
        return Tiles(batch=model_view(flat, self.view_spec, precise=True), counts=[len(r) for r in per_image])

    def looks(self, encoded: Sequence[Encoded], boxes: BoxRule | None, *, whole: bool = True) -> Looks:
        """Each candidate decoded once for its whole view and its regions."""
        v = self.view_spec

        def look(e: Encoded) -> tuple[Image.Image | None, list[Image.Image]]:
            img = _decode_candidate(e)
            small = img.resize((v.width, v.height), Image.Resampling.BILINEAR) if whole else None
            return small, [img.crop(box) for box in boxes(img.width, img.height)] if boxes is not None else []

        got = list(self._map(look, encoded))
        wholes = [small for small, _ in got if small is not None]
        regions = [r for _, rs in got for r in rs]
        parts = [model_view(wholes, v)] if wholes else []
        parts += [model_view(regions, v, precise=True)] if regions or not parts else []
        batch = parts[0] if len(parts) == 1 else ModelBatch.concat(parts)
        return Looks(batch, len(encoded) if whole else 0, [len(rs) for _, rs in got])

    def open(self, encoded: Sequence[Encoded]) -> list[Opened]:
        return [Opened(e, Pixels(img)) for e, img in zip(encoded, self._map(_decode_candidate, encoded), strict=True)]

    def look(self, picks: Sequence[tuple[Opened, Box | None]]) -> ModelBatch:
        def one(pick: tuple[Opened, Box | None]) -> Image.Image:
            img = pick[0].pixels.image()
            return img if pick[1] is None else img.crop(pick[1])

        return model_view(list(self._map(one, picks)), self.view_spec, precise=[box is not None for _, box in picks])

    def finish(self, images: Sequence[Prepared], chosen: Sequence[Encoded]) -> list[bytes]:
        return list(self._map(lambda e: codecs.finish(e, progressive=self.encoding.progressive), chosen))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _decode_candidate(encoded: Encoded) -> Image.Image:
    """One of our own candidates, decoded."""
    img: Image.Image = codecs.decode_image(encoded.data, encoded.format)
    return img


def _attempt[R](fn: Callable[[SourceImage], R]) -> Callable[[SourceImage], R | Exception]:
    """``fn``, returning the exception it raised instead of raising it (one bad source must not stop
    ``map`` over the others)."""

    def run(src: SourceImage) -> R | Exception:
        try:
            return fn(src)
        except Exception as exc:
            return exc

    return run
