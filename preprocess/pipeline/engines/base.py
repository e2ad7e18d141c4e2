"""The engine contract: decode -> orient -> RGB -> resize, encode at a quality, and the model's view.

An engine never decides anything: the job hands it sources whose headers were already
probed (so targets are known and bombs are gone), and the gate asks it to encode and to
view candidates. Pixels stay in the engine's own memory (host for CPU engines, device for
the DALI GPU engine) in :class:`Prepared.pixels`; only bytes and model batches
(:class:`~preprocess.pipeline.batches.ModelBatch`) leave it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from preprocess.core.errors import InputError
from preprocess.pipeline import codecs
from preprocess.pipeline.batches import Embeddings, HostPixels, ModelBatch, Pixels, split_rows
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.devices import DeviceName, EngineName
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.images import SourceInfo
from preprocess.pipeline.spec import Encode
from preprocess.rows import formats


@dataclass(frozen=True)
class SourceImage:
    """One source, read and probed: the unit of work handed to an engine."""

    path: str
    data: bytes
    sha256: str
    info: SourceInfo
    target: tuple[int, int]  # stored (width, height)


@dataclass
class Prepared:
    """A source decoded and resized, living in the engine's memory."""

    index: int  # position in the batch given to load()
    width: int
    height: int
    pixels: Pixels  # where the engine keeps them
    host: HostPixels | None = None  # the engine's host copy of device pixels, made on first use (CPU encoders)


@dataclass
class Tiles:
    """The result of :meth:`Engine.tiles`: model-view tiles of several images, image after image."""

    batch: ModelBatch  # model-view batch of every tile (same layout and memory as ``Loaded.source_view``)
    counts: list[int]  # tiles per image, in input order (they sum to the batch length)

    def split(self, embeddings: Embeddings) -> list[Embeddings]:
        """The embeddings of :attr:`batch`, image by image: ``[tiles, D]`` each."""
        return split_rows(embeddings, self.counts)


def tile_boxes(width: int, height: int, tile_width: int, tile_height: int) -> list[tuple[int, int, int, int]]:
    """Model-sized tiles covering a ``width`` x ``height`` image at its own resolution, row by row.

    ``ceil(width / tile_width)`` x ``ceil(height / tile_height)`` boxes ``(x0, y0, x1, y1)``, evenly
    spaced with the last one flush with the edge (neighbours overlap a little rather than leave a strip
    out). A side shorter than the tile gives one box spanning that whole side (the model view then
    stretches it). The geometry depends only on the sizes, so a stored image's tiles line up with the
    same tiles of its uncompressed resized image.
    """

    def starts(side: int, tile: int) -> list[tuple[int, int]]:
        if side <= tile:
            return [(0, side)]
        n = -(-side // tile)
        return [(round(k * (side - tile) / (n - 1)), round(k * (side - tile) / (n - 1)) + tile) for k in range(n)]

    return [(x0, y0, x1, y1) for y0, y1 in starts(height, tile_height) for x0, x1 in starts(width, tile_width)]


@dataclass
class Loaded:
    """The result of :meth:`Engine.load` for one batch."""

    prepared: list[Prepared]  # successes, in input order
    source_view: ModelBatch  # model-view batch of the successes' sources, same order
    failures: list[tuple[int, InputError]] = field(default_factory=list)


class Engine(ABC):
    name: ClassVar[EngineName]

    def __init__(self, encode: Encode, view: InputView, *, device: DeviceName = "cpu", max_batch: int = 32) -> None:
        self.encoding = encode
        self.view_spec = view
        self.device = device
        self.max_batch = max_batch

    @abstractmethod
    def load(self, sources: Sequence[SourceImage]) -> Loaded:
        """Decode, orient, convert to RGB and resize each source; also its model view.

        A bad source becomes a failure at its index; it must not fail the others.
        """

    @abstractmethod
    def encode(self, images: Sequence[Prepared], candidates: Sequence[Candidate]) -> list[Encoded]:
        """Encode each image as its own candidate (variant + quality; ``self.encoding`` gives the
        rest: progressive, effort)."""

    @abstractmethod
    def view(self, encoded: Sequence[Encoded]) -> ModelBatch:
        """Decode candidates and return their model-view batch (same layout as ``source_view``)."""

    @abstractmethod
    def tiles(self, images: Sequence[Prepared | Encoded]) -> Tiles:
        """The model view of each image's tiles (:func:`tile_boxes` at the image's own resolution).

        A :class:`Prepared` is tiled from its uncompressed resized pixels, an encoded candidate after
        a full decode: tile k of one lines up with tile k of the other.
        """

    def finish(self, images: Sequence[Prepared], chosen: Sequence[Encoded]) -> list[bytes]:
        """The bytes to store for each measured candidate (of the image at the same position): the same
        pixels as measured, in their smallest form (:func:`preprocess.pipeline.codecs.finish`)."""
        return [codecs.finish(e, progressive=self.encoding.progressive) for e in chosen]

    def crop(self, image: Prepared | Encoded, box: tuple[int, int, int, int]) -> HostPixels:
        """A region ``(x0, y0, x1, y1)`` of a prepared image or a decoded candidate, as host HWC uint8."""
        return self.pixels(image)[box[1]:box[3], box[0]:box[2]]

    @abstractmethod
    def pixels(self, image: Prepared | Encoded) -> HostPixels:
        """A prepared image's resized pixels, or a candidate decoded, as host HWC uint8."""

    def library(self, variant: Variant) -> str:
        """The library that encodes ``variant`` on this engine (what a row records as its encoder)."""
        return formats.LIBRARIES[variant.encoder]

    def describe(self) -> dict[str, str]:
        encoders = ", ".join(f"{v.label}: {self.library(v)}" for v in self.encoding.variants())
        return {"engine": self.name, "device": self.device, "encoders": encoders}

    def bind_lane(self) -> None:  # noqa: B027 - optional hook
        """Called once in the thread (a Processor lane) that will use this engine alone: e.g. make the
        engine's CUDA stream that thread's current one, so that everything the lane does on the device
        (the extractor's copies too) is ordered on it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pipelines, encoders, device memory."""
