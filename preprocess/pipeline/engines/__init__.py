"""Engines: decode -> resize -> encode behind one small interface (see :mod:`.base`)."""

from preprocess.core.codes import ErrorCode
from preprocess.pipeline.engines.base import Engine, Loaded, Prepared, SourceImage, Tiles, tile_boxes

__all__ = ["Engine", "Loaded", "Prepared", "SourceImage", "Tiles", "tile_boxes"]


def make_engine(name: str, device: str, **kwargs: object) -> Engine:
    """Build an engine by name ("pillow" or "dali"); ``device`` is "cpu" or "gpu" (already resolved)."""
    if name == "pillow":
        from preprocess.pipeline.engines.pillow import PillowEngine

        return PillowEngine(device=device, **kwargs)  # type: ignore[arg-type]
    if name == "dali":
        from preprocess.pipeline.engines.dali import DaliEngine

        return DaliEngine(device=device, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown engine {name!r}")


def gpu_count() -> int:
    """Number of CUDA devices DALI can see (0 on CPU-only machines)."""
    try:
        from preprocess.pipeline.engines.dali import gpu_count as dali_gpu_count
    except ImportError:
        return 0
    return dali_gpu_count()


def resolve(engine: str, device: str) -> tuple[str, str]:
    """Apply the ``auto`` rules: DALI on a GPU when there is one, else pillow on the CPU."""
    from preprocess.core.errors import ConfigError

    if engine not in ("auto", "dali", "pillow") or device not in ("auto", "gpu", "cpu"):
        raise ConfigError(f"unknown engine/device {engine}/{device}", code=ErrorCode.ENGINE_UNKNOWN,
                          hint="--engine auto|dali|pillow, --device auto|gpu|cpu")
    gpus = gpu_count() if (device in ("auto", "gpu") and engine != "pillow") else 0
    if device == "gpu" and engine == "pillow":
        raise ConfigError("the pillow engine runs on the CPU only", code=ErrorCode.ENGINE_DEVICE,
                          hint="use --engine dali --device gpu, or --device cpu")
    if device == "gpu" and gpus == 0:
        raise ConfigError("--device gpu was asked for, but no CUDA device is visible", code=ErrorCode.NO_GPU,
                          hint="check nvidia-smi / CUDA_VISIBLE_DEVICES, or use --device cpu")
    if device == "auto":
        device = "gpu" if gpus > 0 else "cpu"
    if engine == "auto":
        engine = "dali" if device == "gpu" else "pillow"
    return engine, device
