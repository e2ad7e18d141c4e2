"""The engine contract: decode -> orient -> RGB -> resize, encode at a quality, and the model's view.

An engine never decides anything: the job hands it sources whose headers were already
probed (so targets are known and bombs are gone), and the gate asks it to encode and to
view candidates. Pixels stay in the engine's own memory (host for CPU engines, device for
the DALI GPU engine) in :class:`Prepared.pixels`; only bytes and model batches
(:class:`~preprocess.pipeline.batches.ModelBatch`) leave it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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


Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) at an image's own resolution
BoxRule = Callable[[int, int], list[Box]]  # an image's (width, height) -> the boxes to look at


@dataclass(frozen=True, eq=False)
class Opened:
    """A candidate decoded once, for looks at it one check at a time (:meth:`Engine.look`)."""

    encoded: Encoded
    pixels: Pixels  # the decoded candidate, in its engine's memory


@dataclass
class Tiles:
    """The result of :meth:`Engine.regions` (and :meth:`Engine.tiles`): model views of regions of several
    images (tiles, crops), image after image."""

    batch: ModelBatch  # model-view batch of every region (same layout and memory as ``Loaded.source_view``)
    counts: list[int]  # regions per image, in input order (they sum to the batch length)

    def split(self, embeddings: Embeddings) -> list[Embeddings]:
        """The embeddings of :attr:`batch`, image by image: ``[regions, D]`` each."""
        return split_rows(embeddings, self.counts)


@dataclass
class Looks:
    """The result of :meth:`Engine.looks`: one model batch of every way a round looks at its candidates:
    first each candidate's whole view (when asked), then each candidate's regions, image after image."""

    batch: ModelBatch
    whole: int  # whole-view rows at the start (0, or one per candidate)
    counts: list[int]  # regions per candidate after them

    def split(self, embeddings: Embeddings) -> tuple[Embeddings | None, list[Embeddings]]:
        """(the whole views' embeddings ``[N, D]`` or None, each candidate's regions' ``[regions, D]``)."""
        wholes = embeddings[:self.whole] if self.whole else None
        return wholes, split_rows(embeddings[self.whole:], self.counts)


def crop_boxes(width: int, height: int, grids: Sequence[int] = (2,), centre: bool = True) -> list[Box]:
    """Crops of a ``width`` x ``height`` image at its own resolution: each grid ``g`` cut into ``g`` x ``g``
    cells (2: the four quadrants; row by row), then the centre half. Cell edges are ``k * side // g``."""
    out: list[Box] = []
    for g in grids:
        xs = [k * width // g for k in range(g + 1)]
        ys = [k * height // g for k in range(g + 1)]
        out += [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(g) for i in range(g)
                if xs[i + 1] > xs[i] and ys[j + 1] > ys[j]]
    if centre:
        hw, hh = max(1, width // 2), max(1, height // 2)
        out.append((width // 4, height // 4, width // 4 + hw, height // 4 + hh))
    return out


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
    # Whether the gate looks at a candidate check by check (:meth:`open`, :meth:`look`), stopping at the
    # first that fails: on a CPU a model row costs the same in a call of 1 or of 32, so a failing candidate
    # costs one or two rows instead of all of them. On a GPU one call of every view is what is fast.
    staged: ClassVar[bool] = False

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
    def regions(self, images: Sequence[Prepared | Encoded], boxes: BoxRule) -> Tiles:
        """The model view of regions of each image, ``boxes(width, height)`` at the image's own
        resolution, each stretched to the model's input (as the model view stretches a whole image).

        A :class:`Prepared` is cut from its uncompressed resized pixels, an encoded candidate after a
        full decode: region k of one lines up with region k of the other.
        """

    def tiles(self, images: Sequence[Prepared | Encoded]) -> Tiles:
        """The model view of each image's model-sized tiles (:func:`tile_boxes`)."""
        v = self.view_spec
        return self.regions(images, lambda w, h: tile_boxes(w, h, v.width, v.height))

    def looks(self, encoded: Sequence[Encoded], boxes: BoxRule | None, *, whole: bool = True) -> Looks:
        """One round's model batch of its candidates: each one's whole view (:meth:`view`, when ``whole``)
        and its ``boxes`` (:meth:`regions`). An engine may decode each candidate once for both."""
        parts: list[ModelBatch] = [self.view(encoded)] if whole else []
        counts = [0] * len(encoded)
        if boxes is not None:
            regions = self.regions(encoded, boxes)
            parts.append(regions.batch)
            counts = regions.counts
        if not parts:
            raise ValueError("looks: neither the whole view nor regions asked for")
        batch = parts[0] if len(parts) == 1 else ModelBatch.concat(parts)
        return Looks(batch, len(encoded) if whole else 0, counts)

    def open(self, encoded: Sequence[Encoded]) -> list[Opened]:
        """Each candidate decoded, once, for :meth:`look` (engines that are :attr:`staged`)."""
        raise NotImplementedError(f"the {self.name} engine looks at candidates in one batch (staged = False)")

    def look(self, picks: Sequence[tuple[Opened, Box | None]]) -> ModelBatch:
        """One model-view row per pick, in order: the candidate's whole view (``None``, as :meth:`view`
        makes it) or a region at its own resolution (as :meth:`regions` makes it)."""
        raise NotImplementedError(f"the {self.name} engine looks at candidates in one batch (staged = False)")

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
