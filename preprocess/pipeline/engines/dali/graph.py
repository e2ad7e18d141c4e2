"""DALI graphs: the one image decoder, pipelines rebuilt after a failure, and running samples through
them with a failed batch retried sample by sample.

One undecodable sample fails a whole DALI batch (by design), and may leave the pipeline unusable: a
failed batch is retried sample by sample, the pipeline rebuilt after every failure. A device failure
(out of memory, a sticky CUDA error) is never a sample's failure: it raises
:class:`~preprocess.core.errors.DeviceError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.tensors import TensorListCPU, TensorListGPU

from preprocess.core.errors import InternalError, device_fault
from preprocess.pipeline.devices import Placement

HW_DECODER_LOAD = 0.65  # share of JPEGs for the hardware decoder where the GPU has one (DALI's default)

Outputs = tuple[TensorListCPU | TensorListGPU, ...]  # one tensor list per graph output
FeedData = NDArray[np.uint8] | np.float32  # one sample of an external source


class Graph(Protocol):
    """What is used of a built ``nvidia.dali.Pipeline`` (whose methods have no type annotations)."""

    def feed_input(self, data_node: str, data: Sequence[FeedData]) -> None: ...
    def run(self) -> Outputs: ...


class _Building(Graph, Protocol):
    def __enter__(self) -> object: ...
    def __exit__(self, exception_type: object, exception_value: object, traceback: object) -> None: ...
    def set_outputs(self, *outputs: DataNode) -> None: ...
    def build(self) -> None: ...


def gpu_count() -> int:
    """Number of CUDA devices DALI can see (0 on CPU-only machines or without a driver)."""
    try:
        from nvidia.dali import backend

        return int(backend.GetCUDADeviceCount())  # type: ignore[attr-defined]  # not in DALI's stubs
    except Exception:
        return 0


def chunks[T](items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def dali_message(exc: BaseException) -> str:
    """The useful line of a DALI error (they repeat the graph traceback and 'no longer valid')."""
    text = str(exc).split("encountered:")[-1].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "no longer valid" not in ln]
    return (lines[0] if lines else type(exc).__name__)[:300]


def raise_device_fault(exc: BaseException) -> None:
    """Re-raise ``exc`` as a DeviceError when it is one: a device failure must never be blamed on an image."""
    fault = device_fault(exc)
    if fault is not None:
        raise fault from exc


def node(out: DataNode | Sequence[DataNode] | None) -> DataNode:
    """The one output of an operator (DALI's stubs allow several, or none)."""
    if not isinstance(out, DataNode):
        raise InternalError(f"a DALI operator gave {type(out).__name__}, not one output")
    return out


def new_pipeline(batch: int, threads: int, where: Placement) -> _Building:
    make: Callable[..., _Building] = Pipeline
    return make(batch_size=batch, num_threads=threads, device_id=where.device_id, prefetch_queue_depth=1,
                exec_dynamic=True)


def encoded_input() -> DataNode:
    """The graph's input of encoded images: one 1-D uint8 array of bytes per sample (``"data"``)."""
    return node(fn.external_source(name="data", dtype=types.DALIDataType.UINT8, ndim=1))


def decoder(data: DataNode, where: Placement, hw_decoder_load: float) -> DataNode:
    """The image decoder every graph uses: RGB, the pixels as stored (EXIF orientation NOT applied: the
    header probe's reading of it is the only one, and only sources it says are upright come here; DALI read
    a file with two EXIF blocks or a repeated orientation tag another way, and sized its output for one
    reading while decoding the other, leaving rows of uninitialised memory); on the GPU the ``mixed``
    decoder (nvJPEG, the hardware JPEG decoder for ``hw_decoder_load`` of the images where present),
    with libjpeg-turbo's fancy chroma upsampling so that it gives the CPU decoder's pixels."""
    rgb = types.DALIImageType.RGB
    if where.gpu:
        return node(fn.decoders.image(data, device="mixed", output_type=rgb, adjust_orientation=False,
                                      hw_decoder_load=hw_decoder_load, jpeg_fancy_upsampling=True))
    return node(fn.decoders.image(data, device="cpu", output_type=rgb, adjust_orientation=False))


def decoder_pipeline(batch: int, threads: int, where: Placement, hw_decoder_load: float) -> Graph:
    """Bytes -> decoded RGB pixels, nothing else: what the engine's tiles, the readers' decoder and the
    decode-only probe run."""
    pipe = new_pipeline(batch, threads, where)
    with pipe:
        pipe.set_outputs(decoder(encoded_input(), where, hw_decoder_load))
    pipe.build()
    return pipe


class Pipe:
    """A DALI pipeline built on first use and rebuilt after a failure (DALI may leave it unusable).
    ``sized``: its graph resizes each sample to the size it is fed (``"w"``, ``"h"``)."""

    def __init__(self, build: Callable[[], Graph], *, sized: bool = False) -> None:
        self._build = build
        self.sized = sized
        self._pipe: Graph | None = None

    def run(self, feeds: dict[str, list[FeedData]]) -> Outputs:
        if self._pipe is None:
            self._pipe = self._build()
        try:
            for name, data in feeds.items():
                self._pipe.feed_input(name, data)
            return tuple(self._pipe.run())
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        self._pipe = None


@dataclass
class Sample:
    index: int  # position in the caller's batch
    data: NDArray[np.uint8]  # encoded bytes (1-D) or HWC uint8 pixels
    target: tuple[int, int] = (0, 0)  # stored (width, height); only for a ``sized`` pipe


def run_samples[T](pipe: Pipe, samples: Sequence[Sample], take: Callable[[Outputs, int], T],
                   batch: int) -> tuple[dict[int, T], dict[int, str]]:
    """Run ``samples`` through ``pipe``, ``batch`` at a time; ``take(outputs, j)`` adopts sample ``j``'s
    outputs as soon as its batch ran. A failed batch is retried sample by sample; a device failure
    raises DeviceError (it is never one sample's fault).

    Returns ``{index: taken}`` for successes and ``{index: message}`` for failures.
    """
    done: dict[int, T] = {}
    failed: dict[int, str] = {}
    for chunk in chunks(samples, batch):
        ok, bad = _run(pipe, chunk, take)
        done.update(ok)
        failed.update(bad)
    return done, failed


def _run[T](pipe: Pipe, samples: Sequence[Sample],
            take: Callable[[Outputs, int], T]) -> tuple[dict[int, T], dict[int, str]]:
    feeds: dict[str, list[FeedData]] = {"data": [s.data for s in samples]}
    if pipe.sized:
        feeds["w"] = [np.float32(s.target[0]) for s in samples]
        feeds["h"] = [np.float32(s.target[1]) for s in samples]
    try:
        outputs = pipe.run(feeds)
    except Exception as exc:
        raise_device_fault(exc)
        if len(samples) == 1:
            return {}, {samples[0].index: dali_message(exc)}
        done: dict[int, T] = {}
        failed: dict[int, str] = {}
        for s in samples:
            ok, bad = _run(pipe, [s], take)
            done.update(ok)
            failed.update(bad)
        return done, failed
    return {s.index: take(outputs, j) for j, s in enumerate(samples)}, {}
