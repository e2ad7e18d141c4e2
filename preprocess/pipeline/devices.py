"""Which engine runs on which device, as types: what a user may ask for, what a job runs, which GPU.

Parsed once at the edge (:func:`choices`: the command line, a driver's options) and passed on as these
``Literal`` types through the drivers and :func:`preprocess.pipeline.engines.resolve` to the engines and
the extractor, never compared as free strings on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError

EngineName = Literal["dali", "pillow"]  # an engine a job runs
DeviceName = Literal["cpu", "gpu"]  # where it runs
EngineChoice = Literal["auto", "dali", "pillow"]  # what may be asked for ("auto": DALI on a GPU, else pillow)
DeviceChoice = Literal["auto", "cpu", "gpu"]  # ("auto": the GPU when there is one)

_ENGINES: dict[str, EngineChoice] = {name: name for name in get_args(EngineChoice)}
_DEVICES: dict[str, DeviceChoice] = {name: name for name in get_args(DeviceChoice)}


def choices(engine: str, device: str) -> tuple[EngineChoice, DeviceChoice]:
    """``--engine`` and ``--device`` as given -> their types; ConfigError ENGINE_UNKNOWN otherwise."""
    e, d = _ENGINES.get(engine), _DEVICES.get(device)
    if e is None or d is None:
        raise ConfigError(f"unknown engine/device {engine}/{device}", code=ErrorCode.ENGINE_UNKNOWN,
                          hint="--engine auto|dali|pillow, --device auto|gpu|cpu")
    return e, d


@dataclass(frozen=True)
class Placement:
    """Where a DALI engine or decoder runs: the CPU, or GPU ``index``."""

    device: DeviceName = "cpu"
    index: int = 0

    @classmethod
    def of(cls, where: DeviceName | Placement) -> Placement:
        """A device name (GPU 0 for ``"gpu"``) or a placement, as a placement."""
        if isinstance(where, Placement):
            return where
        if where not in ("cpu", "gpu"):  # a caller that does not type-check
            raise ValueError(f"device must be 'cpu' or 'gpu' (or a Placement), not {where!r}")
        return cls(where)

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"

    @property
    def device_id(self) -> int | None:
        """DALI's ``device_id``: None for a CPU-only pipeline."""
        return self.index if self.gpu else None

    @property
    def torch(self) -> str:
        """The torch device of tensors placed here: ``"cpu"`` or ``"cuda:N"``."""
        return f"cuda:{self.index}" if self.gpu else "cpu"
