"""Engines: decode -> resize -> encode behind one small interface (see :mod:`.base`)."""

import ctypes
from typing import TypedDict, Unpack

from preprocess.core.codes import ErrorCode
from preprocess.pipeline.devices import DeviceChoice, DeviceName, EngineChoice, EngineName, choices
from preprocess.pipeline.engines.base import (
    Box,
    BoxRule,
    Engine,
    Loaded,
    Looks,
    Prepared,
    SourceImage,
    Tiles,
    crop_boxes,
    tile_boxes,
)
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.spec import Encode

__all__ = ["Box", "BoxRule", "Engine", "Loaded", "Looks", "Prepared", "SourceImage", "Tiles", "crop_boxes",
           "gpu_count", "make_engine", "resolve", "tile_boxes"]


class Options(TypedDict, total=False):
    """What every engine takes besides its encoding and model view."""

    max_batch: int  # images per call of its pipelines (default 32)
    threads: int | None  # its CPU threads (default: the CPUs this process may use)


def make_engine(name: EngineName, device: DeviceName, *, encode: Encode, view: InputView,
                **options: Unpack[Options]) -> Engine:
    """Build an engine by name on a device (both already resolved: :func:`resolve`)."""
    if name == "pillow":
        from preprocess.pipeline.engines.pillow import PillowEngine

        return PillowEngine(encode, view, device=device, **options)
    if name == "dali":
        from preprocess.pipeline.engines.dali import DaliEngine

        return DaliEngine(encode, view, device=device, **options)
    raise ValueError(f"unknown engine {name!r}")


def _cuda_driver() -> bool:
    """Whether the CUDA driver library loads: without it no device is visible, and ``auto`` need not import
    DALI to learn so (0.7-3 s of every ``run`` and ``tune`` on a CPU machine)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def gpu_count() -> int:
    """Number of CUDA devices DALI can see (0 on CPU-only machines)."""
    if not _cuda_driver():
        return 0
    try:
        from preprocess.pipeline.engines.dali import gpu_count as dali_gpu_count
    except ImportError:
        return 0
    return dali_gpu_count()


def resolve(engine: EngineChoice, device: DeviceChoice) -> tuple[EngineName, DeviceName]:
    """Apply the ``auto`` rules: DALI on a GPU when there is one, else pillow on the CPU."""
    from preprocess.core.errors import ConfigError

    engine, device = choices(engine, device)  # again: a caller that does not type-check gets the same error
    gpus = gpu_count() if (device in ("auto", "gpu") and engine != "pillow") else 0
    if device == "gpu" and engine == "pillow":
        raise ConfigError("the pillow engine runs on the CPU only", code=ErrorCode.ENGINE_DEVICE,
                          hint="use --engine dali --device gpu, or --device cpu")
    if device == "gpu" and gpus == 0:
        raise ConfigError("--device gpu was asked for, but no CUDA device is visible", code=ErrorCode.NO_GPU,
                          hint="check nvidia-smi / CUDA_VISIBLE_DEVICES, or use --device cpu")
    where: DeviceName = ("gpu" if gpus > 0 else "cpu") if device == "auto" else device
    name: EngineName = ("dali" if where == "gpu" else "pillow") if engine == "auto" else engine
    return name, where
