"""The engine contract: decode -> orient -> RGB -> resize, encode at a quality, and the model's view.

An engine never decides anything: the job hands it sources whose headers were already
probed (so targets are known and bombs are gone), and the gate asks it to encode and to
view candidates. Pixels stay in the engine's own memory (host for CPU engines, device for
the DALI GPU engine) behind :class:`Prepared.pixels`; only bytes and model batches leave it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from preprocess.errors import InputError
from preprocess.extractor.manifest import InputView
from preprocess.images import SourceInfo
from preprocess.spec import Encode


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
    pixels: Any  # engine-private handle


@dataclass
class Loaded:
    """The result of :meth:`Engine.load` for one batch."""

    prepared: list[Prepared]  # successes, in input order
    source_view: Any  # model-view batch of the successes' sources, same order (numpy or device tensor)
    failures: list[tuple[int, InputError]] = field(default_factory=list)


class Engine(ABC):
    name: ClassVar[str]

    def __init__(self, encode: Encode, view: InputView, *, device: str = "cpu", max_batch: int = 32) -> None:
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
    def encode(self, images: Sequence[Prepared], qualities: Sequence[int]) -> list[bytes]:
        """JPEG-encode each image at its own quality (``self.encoding`` gives the rest)."""

    @abstractmethod
    def view(self, encoded: Sequence[bytes]) -> Any:
        """Decode candidate JPEGs and return their model-view batch (same layout as ``source_view``)."""

    def describe(self) -> dict[str, str]:
        return {"engine": self.name, "device": self.device}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pipelines, encoders, device memory."""
