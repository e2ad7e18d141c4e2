"""The DALI engine: DALI decode + resize + model view, nvImageCodec JPEG encode; CPU or GPU.

The only module that imports ``nvidia.dali`` and ``nvidia.nvimgcodec``. One graph builder,
parameterised by device, so the CPU variant (run in CI) exercises the same graph as the GPU one:

- ``encoded`` sources (``SourceInfo.plain``): bytes -> ``fn.decoders.image`` (``cpu`` or ``mixed``,
  EXIF orientation applied) -> Lanczos-3 antialiased resize to the target (the stored image) and
  a linear antialiased stretch + ``crop_mirror_normalize`` (the model view of the source).
- ``pixels`` sources (CMYK, 16-bit, alpha, palette, multi-frame, ...): decoded on the CPU with
  :func:`preprocess.pipeline.images.decode_rgb`, fed as HWC uint8 into the same resize + view ops.
- ``view`` of candidates: bytes -> decoder -> the same view ops (no stored output).
- ``tiles``: stored pixels, or candidates through a decoder-only graph, cut into model-sized tiles
  (:func:`~preprocess.pipeline.engines.base.tile_boxes`) and normalised like the view: numpy on the CPU,
  torch on the device on the GPU.

Failure isolation: one undecodable sample fails a whole DALI batch, so a failed batch is retried
sample by sample (the pipeline is rebuilt after every failure). A source DALI cannot decode, or a
JPEG that looks damaged (no EOI, invalid markers in the scan; libjpeg-turbo in DALI decodes many
damaged files silently), goes to the CPU decoder: Pillow then either reports the same error the
pillow engine would (TRUNCATED / CORRUPT ...) or decodes it into the ``pixels`` variant. A candidate
DALI cannot decode is decoded on the CPU; an image nvImageCodec cannot encode is encoded by
libjpeg-turbo on the CPU, and its row records that library. A device failure (out of memory, a sticky
CUDA error) is never an image's failure: it raises :class:`~preprocess.core.errors.DeviceError`, which
stops the job before its commit.

Lanes: each engine has its own pipelines, nvImageCodec encoder and (on the GPU) CUDA stream, so the
:class:`~preprocess.pipeline.process.Processor` runs several engines on one GPU, one per lane thread. Thread
counts follow the process's CPU quota (:func:`preprocess.core.cpus.cpu_lanes`), shared between lanes.

Memory: on the CPU, stored pixels are numpy arrays and views are numpy batches. On the GPU, both
stay on the device as torch tensors wrapping DALI's output buffers through DLPack (the default
dynamic executor never reuses outputs that are still referenced); the view batch goes to
onnxruntime through ``__dlpack__`` and the stored pixels to nvImageCodec's GPU encoder, with no host
round trip for pixels (only the bytes of candidates come back, which are stored anyway).

NOT RUN YET (written from the docs, no GPU on the machine it was written on): everything behind
``device="gpu"``: the ``mixed`` decoder (``hw_decoder_load``, ``jpeg_fancy_upsampling``), GPU resize
and normalise, ``torch.from_dlpack`` on ``TensorGPU`` samples, the lane's CUDA stream and its
hand-off to nvImageCodec (``cuda_stream=``) and to onnxruntime (stream synchronised before return),
the nvImageCodec GPU JPEG encoder (``Encoder(device_id=0)``), and the tiles' torch crop + normalise.
``scripts/gpu-check`` runs all of it; the CPU path (the same graphs and glue) is tested.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import nvidia.nvimgcodec as nvimgcodec  # noqa: PLR0402 (mypy resolves only this form)
from nvidia.dali import fn as _fn
from nvidia.dali import types as _types
from nvidia.dali.pipeline import Pipeline as _Pipeline
from PIL import Image

from preprocess.core import errors
from preprocess.core.codes import ErrorCode
from preprocess.core.cpus import cpu_lanes
from preprocess.core.errors import InputError, InternalError, device_fault, input_error
from preprocess.pipeline import codecs
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.engines.base import Engine, Loaded, Prepared, SourceImage, Tiles, tile_boxes
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.extractor.view import view_arrays
from preprocess.pipeline.images import decode_rgb, jpeg_suspect
from preprocess.pipeline.spec import Encode
from preprocess.rows import formats

# DALI's type stubs are incomplete (enum re-exports, untyped Pipeline methods): use the API dynamically.
fn: Any = _fn
types: Any = _types
Pipeline: Any = _Pipeline

_CSS = {"444": nvimgcodec.ChromaSubsampling.CSS_444, "422": nvimgcodec.ChromaSubsampling.CSS_422,
        "420": nvimgcodec.ChromaSubsampling.CSS_420}
HW_DECODER_LOAD = 0.65  # share of JPEGs for the hardware decoder where the GPU has one (DALI's default)
LIBJPEG = formats.LIBRARIES["libjpeg"]


def placement(device: str) -> tuple[bool, int]:
    """``"cpu"``, ``"gpu"`` or ``"gpu:N"`` -> (on the GPU, which one)."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "gpu") or (index and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'gpu:N', not {device!r}")
    return kind == "gpu", int(index or 0)


def gpu_count() -> int:
    """Number of CUDA devices DALI can see (0 on CPU-only machines or without a driver)."""
    try:
        from nvidia.dali import backend

        return int(backend.GetCUDADeviceCount())  # type: ignore[attr-defined]
    except Exception:
        return 0


def gpu_available() -> bool:
    return gpu_count() > 0


def _chunks[T](items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _dali_message(exc: BaseException) -> str:
    """The useful line of a DALI error (they repeat the graph traceback and 'no longer valid')."""
    text = str(exc).split("encountered:")[-1].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "no longer valid" not in ln]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _raise_device_fault(exc: BaseException) -> None:
    """Re-raise ``exc`` as a DeviceError when it is one: a device failure must never be blamed on an image."""
    fault = device_fault(exc)
    if fault is not None:
        raise fault from exc


def _pipeline(batch: int, threads: int, device_id: int | None) -> Any:
    return Pipeline(batch_size=batch, num_threads=threads, device_id=device_id, prefetch_queue_depth=1,
                    exec_dynamic=True)


def _decoder(data: Any, gpu: bool, hw_decoder_load: float) -> Any:
    """The image decoder every graph uses: RGB, EXIF orientation applied; on the GPU the ``mixed``
    decoder (nvJPEG, the hardware JPEG decoder for ``hw_decoder_load`` of the images where present),
    with libjpeg-turbo's fancy chroma upsampling so that it gives the CPU decoder's pixels."""
    extra: dict[str, Any] = {"hw_decoder_load": hw_decoder_load, "jpeg_fancy_upsampling": True} if gpu else {}
    return fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB, adjust_orientation=True,
                             **extra)


class _Pipe:
    """A DALI pipeline built on first use and rebuilt after a failure (DALI may leave it unusable)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._pipe: Any = None

    def run(self, feeds: dict[str, list[Any]]) -> tuple[Any, ...]:
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
class _Item:
    index: int  # position in the batch given to the engine
    data: np.ndarray  # encoded bytes (1-D) or HWC uint8 pixels
    target: tuple[int, int] = (0, 0)  # stored (width, height); only for the "stored" graphs


def _on_lane_stream[F: Callable[..., Any]](method: F) -> F:
    """Run an engine method with the engine's own CUDA stream current (GPU; nothing on the CPU)."""

    @functools.wraps(method)
    def run(self: DaliEngine, *args: Any, **kwargs: Any) -> Any:
        with self._lane():
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class DaliEngine(Engine):
    """``device``: ``"cpu"``, ``"gpu"`` or ``"gpu:N"``; ``threads``: its CPU threads (DALI, nvImageCodec,
    the CPU codecs; default: the CPUs this process may use). ``hw_decoder_load``: the hardware JPEG
    decoder's share, read when the pipelines are first built."""

    name: ClassVar[str] = "dali"
    hw_decoder_load: float = HW_DECODER_LOAD

    def __init__(self, encode: Encode, view: InputView, *, device: str = "cpu", max_batch: int = 32,
                 threads: int | None = None) -> None:
        self._gpu, self._device_id = placement(device)
        super().__init__(encode, view, device="gpu" if self._gpu else "cpu", max_batch=max_batch)
        self._threads = threads or cpu_lanes()
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="dali-engine-cpu")
        self._pipes = {kind: _Pipe(partial(self._build, *kind))
                       for kind in (("encoded", True), ("pixels", True), ("encoded", False), ("pixels", False))}
        self._decoder = _Pipe(self._build_decoder)  # candidates at full resolution (for tiles)
        self._norm: tuple[Any, Any] | None = None  # (mean, std) per channel on the tiles' device
        self.fallbacks = 0  # images nvImageCodec failed to encode, encoded by libjpeg-turbo instead
        if self._gpu:
            import torch  # GPU only: holds device tensors (DLPack views of DALI outputs), stacks view rows

            self._torch: Any = torch
            self._cuda_stream = torch.cuda.Stream(device=f"cuda:{self._device_id}")  # type: ignore[no-untyped-call]
            self._encoder = nvimgcodec.Encoder(device_id=self._device_id, max_num_cpu_threads=self._threads)
        else:
            self._encoder = nvimgcodec.Encoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                                               backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])

    # --- the graph ----------------------------------------------------------------------------

    def _build(self, source: str, stored: bool) -> Any:
        """One graph for both devices: ``source`` is "encoded" (bytes) or "pixels" (HWC uint8)."""
        v = self.view_spec
        mean, std = view_arrays(v)
        if v.colour == "BGR":
            mean, std = mean[::-1], std[::-1]
        pipe = _pipeline(self.max_batch, self._threads, self._device_id if self._gpu else None)
        with pipe:
            if source == "encoded":
                img = _decoder(fn.external_source(name="data", dtype=types.UINT8, ndim=1), self._gpu,
                               self.hw_decoder_load)
            else:
                img = fn.external_source(name="data", dtype=types.UINT8, ndim=3, layout="HWC")
                img = img.gpu() if self._gpu else img
            outputs = []
            if stored:
                w = fn.external_source(name="w", dtype=types.FLOAT, ndim=0)
                h = fn.external_source(name="h", dtype=types.FLOAT, ndim=0)
                outputs.append(fn.resize(img, resize_x=w, resize_y=h, interp_type=types.INTERP_LANCZOS3,
                                         antialias=True))
            small = fn.resize(img, resize_x=v.width, resize_y=v.height, interp_type=types.INTERP_LINEAR,
                              antialias=True)
            if v.colour == "BGR":
                small = fn.color_space_conversion(small, image_type=types.RGB, output_type=types.BGR)
            outputs.append(fn.crop_mirror_normalize(small, dtype=types.FLOAT, mean=mean.tolist(),
                                                    std=std.tolist(),
                                                    output_layout="CHW" if v.layout == "NCHW" else "HWC"))
            pipe.set_outputs(*outputs)
        pipe.build()
        return pipe

    def _build_decoder(self) -> Any:
        """Bytes -> decoded RGB pixels, nothing else (the same decoder settings as ``_build``)."""
        pipe = _pipeline(self.max_batch, self._threads, self._device_id if self._gpu else None)
        with pipe:
            pipe.set_outputs(_decoder(fn.external_source(name="data", dtype=types.UINT8, ndim=1), self._gpu,
                                      self.hw_decoder_load))
        pipe.build()
        return pipe

    # --- device-specific glue (the only GPU-only code) ----------------------------------------

    def bind_lane(self) -> None:
        if self._gpu:  # torch's current stream is per thread: the lane's ops, and the extractor's, go on it
            self._torch.cuda.set_stream(self._cuda_stream)

    def _lane(self) -> contextlib.AbstractContextManager[Any]:
        return self._torch.cuda.stream(self._cuda_stream) if self._gpu else contextlib.nullcontext()

    def _adopt(self, tensor: Any) -> Any:
        """One DALI output sample -> numpy (CPU, a copy) or a torch CUDA tensor (GPU, zero-copy)."""
        if self._gpu:
            return self._torch.from_dlpack(tensor)  # DALI makes torch's current (the lane's) stream wait
        return np.array(tensor)

    def _upload(self, pixels: np.ndarray) -> Any:
        """Host HWC pixels (decoded on the CPU) -> the engine's memory."""
        return self._torch.from_numpy(pixels).to(f"cuda:{self._device_id}") if self._gpu else pixels

    def _stack(self, rows: list[Any]) -> Any:
        """Per-sample view rows -> one model batch (numpy, or a CUDA tensor exposing __dlpack__)."""
        v = self.view_spec
        empty_shape = (0, 3, v.height, v.width) if v.layout == "NCHW" else (0, v.height, v.width, 3)
        if not self._gpu:
            return np.stack(rows) if rows else np.empty(empty_shape, dtype=np.float32)
        torch = self._torch
        batch = torch.stack(rows) if rows else torch.empty(empty_shape, dtype=torch.float32,
                                                          device=f"cuda:{self._device_id}")
        torch.cuda.current_stream(self._device_id).synchronize()  # onnxruntime reads it on its own stream
        return batch

    def _tile_row(self, tile: Any) -> Any:
        """One HWC uint8 tile (numpy, or a CUDA tensor) -> one model-view row, on the same device.

        Tiles are model-sized except where the image is smaller than the model's input: those are
        stretched (bilinear, antialiased), as the model view stretches a whole image.
        """
        v = self.view_spec
        if self._norm is None:
            mean, std = view_arrays(v)
            self._norm = ((self._torch.tensor(mean, device=f"cuda:{self._device_id}"),
                           self._torch.tensor(std, device=f"cuda:{self._device_id}")) if self._gpu else (mean, std))
        mean, std = self._norm
        if not self._gpu:
            arr = np.ascontiguousarray(tile)
            if arr.shape[:2] != (v.height, v.width):
                arr = np.asarray(Image.fromarray(arr).resize((v.width, v.height), Image.Resampling.BILINEAR))
            x = (arr.astype(np.float32) - mean) / std
            x = x[..., ::-1] if v.colour == "BGR" else x
            return np.ascontiguousarray(x.transpose(2, 0, 1) if v.layout == "NCHW" else x)
        t = tile.permute(2, 0, 1).float()
        if tuple(t.shape[1:]) != (v.height, v.width):
            t = self._torch.nn.functional.interpolate(t[None], size=(v.height, v.width), mode="bilinear",
                                                      antialias=True, align_corners=False)[0]
        t = (t - mean[:, None, None]) / std[:, None, None]
        t = t.flip(0) if v.colour == "BGR" else t
        return t if v.layout == "NCHW" else t.permute(1, 2, 0).contiguous()

    def _stream(self) -> int:
        return int(self._torch.cuda.current_stream(self._device_id).cuda_stream) if self._gpu else 0

    def _host(self, image: Prepared) -> np.ndarray:
        """A prepared image's pixels as a host HWC uint8 array (copied from the device once, in the
        lane's thread and stream, on the GPU)."""
        if image.host is None:
            px = image.pixels
            image.host = np.ascontiguousarray(px.cpu().numpy() if self._gpu else px)
        host: np.ndarray = image.host
        return host

    # --- running the graphs -------------------------------------------------------------------

    def _run(self, pipe: _Pipe, items: list[_Item]) -> tuple[dict[int, tuple[Any, ...]], dict[int, str]]:
        """Run items through a pipeline; a failed batch is retried sample by sample. A device failure
        raises DeviceError (it is never one sample's fault).

        Returns ``{index: outputs}`` for successes and ``{index: message}`` for failures.
        """
        feeds: dict[str, list[Any]] = {"data": [it.data for it in items]}
        if pipe is self._pipes["encoded", True] or pipe is self._pipes["pixels", True]:  # resized to the target
            feeds["w"] = [np.float32(it.target[0]) for it in items]
            feeds["h"] = [np.float32(it.target[1]) for it in items]
        try:
            outputs = pipe.run(feeds)
        except Exception as exc:
            _raise_device_fault(exc)
            if len(items) == 1:
                return {}, {items[0].index: _dali_message(exc)}
            done: dict[int, tuple[Any, ...]] = {}
            failed: dict[int, str] = {}
            for it in items:
                ok, bad = self._run(pipe, [it])
                done.update(ok)
                failed.update(bad)
            return done, failed
        return {it.index: tuple(self._adopt(out[j]) for out in outputs) for j, it in enumerate(items)}, {}

    def _run_all(self, pipe: _Pipe, items: Sequence[_Item]) -> tuple[dict[int, tuple[Any, ...]], dict[int, str]]:
        done: dict[int, tuple[Any, ...]] = {}
        failed: dict[int, str] = {}
        for chunk in _chunks(items, self.max_batch):
            ok, bad = self._run(pipe, list(chunk))
            done.update(ok)
            failed.update(bad)
        return done, failed

    def _candidates(self, pipe: _Pipe, encoded: Sequence[Encoded], idxs: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """Run our own candidates through ``pipe`` (JPEG bytes through DALI's decoder); one DALI cannot
        decode is decoded on the CPU and fed through the matching pixels graph (or uploaded as is)."""
        ok, bad = self._run_all(pipe, [_Item(i, np.frombuffer(encoded[i].data, dtype=np.uint8)) for i in idxs])
        if bad:
            pixels = self._pipes["pixels", False] if pipe is self._pipes["encoded", False] else None
            ok.update(self._decoded_on_cpu(encoded, sorted(bad), pixels))
        return ok

    def _decoded_on_cpu(self, encoded: Sequence[Encoded], idxs: Sequence[int],
                        pipe: _Pipe | None) -> dict[int, tuple[Any, ...]]:
        """Candidates decoded by :func:`preprocess.pipeline.codecs.decode`; through ``pipe`` (a pixels graph), or
        as pixels in the engine's memory when ``pipe`` is None."""
        try:
            arrays = list(self._pool.map(lambda i: codecs.decode(encoded[i].data, encoded[i].format), idxs))
        except Exception as exc:
            raise InternalError(f"a candidate ({encoded[idxs[0]].format}) could not be decoded: {exc}") from exc
        if pipe is None:
            return {i: (self._upload(a),) for i, a in zip(idxs, arrays, strict=True)}
        ok, bad = self._run_all(pipe, [_Item(i, a) for i, a in zip(idxs, arrays, strict=True)])
        if bad:
            raise InternalError(f"DALI could not view a candidate: {next(iter(bad.values()))}")
        return ok

    # --- load ---------------------------------------------------------------------------------

    def _decode_cpu(self, src: SourceImage) -> np.ndarray:
        img = decode_rgb(src.data, draft_to=src.target, path=src.path)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))

    def _to_dali(self, src: SourceImage) -> bool:
        """Whether DALI's decoder takes this source straight from its bytes."""
        info = src.info
        if not info.plain:
            return False
        if info.format == "JPEG":
            return not jpeg_suspect(src.data)
        return info.orientation == 1  # EXIF orientation is only trusted from DALI for JPEG

    @_on_lane_stream
    def load(self, sources: Sequence[SourceImage]) -> Loaded:
        failures: dict[int, InputError] = {}
        encoded = [_Item(i, np.frombuffer(s.data, dtype=np.uint8), s.target)
                   for i, s in enumerate(sources) if self._to_dali(s)]
        on_cpu = sorted(set(range(len(sources))) - {it.index for it in encoded})
        done, bad = self._run_all(self._pipes["encoded", True], encoded)
        on_cpu.extend(bad)  # DALI could not decode it: Pillow gives the verdict (or the pixels)
        decoded = {i: self._pool.submit(self._decode_cpu, sources[i]) for i in sorted(on_cpu)}
        pixels: list[_Item] = []
        for i, fut in decoded.items():
            try:
                pixels.append(_Item(i, fut.result(), sources[i].target))
            except InputError as exc:
                failures[i] = exc
            except Exception as exc:
                failures[i] = input_error(errors.CORRUPT, f"cannot decode: {exc}", sources[i].path)
        ok, bad = self._run_all(self._pipes["pixels", True], pixels)
        done.update(ok)
        for i, message in bad.items():
            failures[i] = input_error(errors.ENGINE_FAILED, f"dali engine: {message}", sources[i].path)
        prepared = []
        rows = []
        for i in sorted(done):
            stored, row = done[i]
            prepared.append(Prepared(index=i, width=int(stored.shape[1]), height=int(stored.shape[0]),
                                     pixels=stored))
            rows.append(row)
        return Loaded(prepared=prepared, source_view=self._stack(rows), failures=sorted(failures.items()))

    # --- encode and view ----------------------------------------------------------------------

    def library(self, variant: Variant) -> str:
        info = formats.FORMATS[variant.format].encoder(variant.encoder)
        return info.gpu if self._gpu and info is not None and info.gpu else super().library(variant)

    def describe(self) -> dict[str, str]:
        out = super().describe()
        if self._gpu:
            out["jpeg_decoder"] = f"DALI mixed: nvJPEG (hardware decoder for {self.hw_decoder_load:.0%} where present)"
        if self.fallbacks:
            out["encode_fallbacks"] = f"{self.fallbacks} images encoded by {LIBJPEG} after nvImageCodec failed on them"
        return out

    def _params(self, quality: int, chroma: str, *, optimized: bool = False) -> Any:
        return nvimgcodec.EncodeParams(
            quality_type=nvimgcodec.QualityType.QUALITY, quality_value=float(quality),
            chroma_subsampling=_CSS[chroma or "420"],
            jpeg_encode_params=nvimgcodec.JpegEncodeParams(progressive=False, optimized_huffman=optimized))

    def _nvimgcodec(self, pixels: Sequence[Any], quality: int, chroma: str, *, optimized: bool) -> list[bytes | None]:
        """JPEG-encode pixels (device tensors on the GPU, host arrays on the CPU) at one quality: one
        call per ``max_batch`` images (nvImageCodec takes one set of parameters per call). None for an
        image it failed on; a device failure raises DeviceError."""
        out: list[bytes | None] = []
        params = self._params(quality, chroma, optimized=optimized)
        for chunk in _chunks(pixels, self.max_batch):
            stream = self._stream()
            try:
                imgs = nvimgcodec.as_images(list(chunk), cuda_stream=stream)
                streams = list(self._encoder.encode(imgs, "jpeg", params=params, cuda_stream=stream))
            except Exception as exc:
                _raise_device_fault(exc)
                streams = [None] * len(chunk)  # the call failed as a whole: each image falls back
            if len(streams) != len(chunk):  # some versions leave failed images out of the list
                streams = [None] * len(chunk)
            out.extend(None if cs is None else bytes(cs) for cs in streams)
        return out

    @_on_lane_stream
    def encode(self, images: Sequence[Prepared], candidates: Sequence[Candidate]) -> list[Encoded]:
        """libjpeg candidates through nvImageCodec (nvJPEG on the GPU), one call per (quality, chroma);
        every other encoder on the CPU (:func:`preprocess.pipeline.codecs.encode`) from host pixels, in the
        engine's thread pool while the GPU encodes. An image nvImageCodec fails on is encoded by
        libjpeg-turbo (Pillow) instead, and says so (``Encoded.library``)."""
        if len(images) != len(candidates):
            raise ValueError("one candidate per image")
        level = self.encoding.level
        groups: dict[tuple[int, str], list[int]] = {}
        on_cpu: dict[int, Future[bytes]] = {}
        for i, c in enumerate(candidates):
            if c.variant.encoder == "libjpeg":
                groups.setdefault((c.quality, c.variant.chroma), []).append(i)
            else:
                host = self._host(images[i])  # copied here, in the lane's stream, not in a pool thread
                on_cpu[i] = self._pool.submit(codecs.encode, host, c, level=level)
        out: list[Encoded | None] = [None] * len(images)
        for (quality, chroma), idxs in groups.items():
            got = self._nvimgcodec([images[i].pixels for i in idxs], quality, chroma, optimized=False)
            for i, data in zip(idxs, got, strict=True):
                out[i] = Encoded(data, candidates[i]) if data is not None else self._fallback(images[i], candidates[i])
        for i, fut in on_cpu.items():
            out[i] = Encoded(fut.result(), candidates[i])
        done = [e for e in out if e is not None]
        if len(done) != len(images):
            raise InternalError("an image was left without a candidate")
        return done

    def _fallback(self, image: Prepared, candidate: Candidate) -> Encoded:
        """libjpeg-turbo on the CPU for an image nvImageCodec failed on (the same IJG quality scale)."""
        self.fallbacks += 1
        return Encoded(codecs.encode(self._host(image), candidate), candidate, library=LIBJPEG)

    @_on_lane_stream
    def finish(self, images: Sequence[Prepared], chosen: Sequence[Encoded]) -> list[bytes]:
        """Progressive JPEG: mozjpeg's lossless optimization on the CPU (as the pillow engine). Baseline
        JPEG from nvImageCodec: encoded again with optimized Huffman tables (same coefficients, so the
        same pixels), one call per (quality, chroma). Everything else as measured."""
        out = list(self._pool.map(lambda e: codecs.finish(e, progressive=self.encoding.progressive), chosen))
        if self.encoding.progressive:
            return out
        groups: dict[tuple[int, str], list[int]] = {}
        for i, e in enumerate(chosen):
            c = e.candidate
            if e.format == "jpeg" and c.variant.encoder == "libjpeg" and not e.library:
                groups.setdefault((c.quality, c.variant.chroma), []).append(i)
        for (quality, chroma), idxs in groups.items():
            got = self._nvimgcodec([images[i].pixels for i in idxs], quality, chroma, optimized=True)
            for i, again in zip(idxs, got, strict=True):
                out[i] = again if again is not None else chosen[i].data  # as measured: valid, a little larger
        return out

    @_on_lane_stream
    def pixels(self, image: Prepared | Encoded) -> np.ndarray:
        if isinstance(image, Prepared):
            return self._host(image)
        if image.format != "jpeg":
            return codecs.decode(image.data, image.format)
        (decoded,) = self._candidates(self._decoder, [image], [0])[0]
        return np.ascontiguousarray(decoded.cpu().numpy() if self._gpu else decoded)

    @_on_lane_stream
    def view(self, encoded: Sequence[Encoded]) -> Any:
        """JPEG candidates decoded by DALI (nvJPEG on the GPU); other formats decoded on the CPU
        (:func:`preprocess.pipeline.codecs.decode`) and fed as pixels to the same view operators."""
        jpeg = [i for i, e in enumerate(encoded) if e.format == "jpeg"]
        other = [i for i, e in enumerate(encoded) if e.format != "jpeg"]
        rows = self._candidates(self._pipes["encoded", False], encoded, jpeg)
        if other:
            rows.update(self._decoded_on_cpu(encoded, other, self._pipes["pixels", False]))
        return self._stack([rows[i][0] for i in range(len(encoded))])

    @_on_lane_stream
    def tiles(self, images: Sequence[Prepared | Encoded]) -> Tiles:
        enc = [im for im in images if isinstance(im, Encoded)]
        where = {id(e): k for k, e in enumerate(enc)}
        jpeg = [k for k, e in enumerate(enc) if e.format == "jpeg"]
        decoded = self._candidates(self._decoder, enc, jpeg)
        decoded.update(self._decoded_on_cpu(enc, [k for k, e in enumerate(enc) if e.format != "jpeg"], None))
        v = self.view_spec
        rows: list[Any] = []
        counts: list[int] = []
        for im in images:
            px = im.pixels if isinstance(im, Prepared) else decoded[where[id(im)]][0]
            boxes = tile_boxes(int(px.shape[1]), int(px.shape[0]), v.width, v.height)
            counts.append(len(boxes))
            rows.extend(self._tile_row(px[y0:y1, x0:x1]) for x0, y0, x1, y1 in boxes)
        return Tiles(batch=self._stack(rows), counts=counts)

    def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        self._decoder.close()
        self._pool.shutdown(wait=True)


def decode_throughput(blobs: Sequence[bytes], *, device: str, batch: int = 64,
                      hw_decoder_load: float = HW_DECODER_LOAD) -> float:
    """Images/s of DALI decode alone over ``blobs`` (the ceiling the end-to-end rate is compared with).

    Same decoder settings as the engine; ``hw_decoder_load=0`` measures nvJPEG's CUDA decoder alone.
    The outputs are complete when ``run()`` returns, but not used.
    """
    import time

    gpu, device_id = placement(device)
    pipe = _pipeline(batch, cpu_lanes(), device_id if gpu else None)
    with pipe:
        pipe.set_outputs(_decoder(fn.external_source(name="data", dtype=types.UINT8, ndim=1), gpu, hw_decoder_load))
    pipe.build()
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in blobs]
    pipe.feed_input("data", arrays[:batch])
    pipe.run()  # warm-up (allocations, hardware decoder init)
    t0 = time.perf_counter()
    n = 0
    for chunk in _chunks(arrays, batch):
        pipe.feed_input("data", list(chunk))
        pipe.run()  # dynamic executor: outputs are complete when run() returns
        n += len(chunk)
    seconds = time.perf_counter() - t0
    del pipe
    return n / seconds if seconds > 0 else 0.0


def codec_backends(jpeg: bytes, pixels: np.ndarray, *, device: str) -> dict[str, dict[str, str]]:
    """Which of nvImageCodec's JPEG backends work here: each decoder backend decodes ``jpeg`` (a baseline
    4:2:0 JPEG) and each encoder backend encodes ``pixels`` (HWC uint8), alone. ``"ok"``, or why not.
    On the CPU only the CPU backend is tried. This is what says whether the hardware JPEG decoder is
    really there (it is missing under some sandboxes and on GPUs without one)."""
    kinds = {"hardware": "HW_GPU_ONLY", "cuda": "GPU_ONLY", "hybrid": "HYBRID_CPU_GPU", "cpu": "CPU_ONLY"}
    if device != "gpu":
        kinds = {"cpu": "CPU_ONLY"}
    device_id = 0 if device == "gpu" else nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY
    out: dict[str, dict[str, str]] = {"decode": {}, "encode": {}}
    for name, kind in kinds.items():
        backend = [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))]
        for role in ("decode", "encode"):
            try:
                if role == "decode":
                    got: Any = nvimgcodec.Decoder(device_id=device_id, backends=backend).decode(jpeg)
                else:
                    got = nvimgcodec.Encoder(device_id=device_id, backends=backend).encode(pixels, "jpeg")
                out[role][name] = "ok" if got is not None else "unavailable (no result)"
            except Exception as exc:
                out[role][name] = f"unavailable ({(str(exc).strip() or type(exc).__name__).splitlines()[0][:120]})"
    return out


class ImageDecoder:
    """Encoded images -> oriented RGB uint8 HWC pixels: numpy arrays on ``device="cpu"``, torch CUDA
    tensors on ``"gpu"``/``"gpu:N"`` (DALI's mixed decoder: nvJPEG / the hardware JPEG decoder, libjpeg-turbo's
    fancy upsampling; zero-copy DLPack views of DALI's outputs, like the engine's). For readers of the
    dataset (:mod:`preprocess.torchdata`). A batch DALI cannot decode is retried image by image. The
    GPU variant is NOT RUN yet (no GPU where it was written); the CPU variant is the same graph and is
    tested.
    """

    def __init__(self, *, device: str = "gpu", max_batch: int = 64, threads: int | None = None,
                 hw_decoder_load: float = HW_DECODER_LOAD) -> None:
        self._gpu, self._device_id = placement(device)
        self.device = f"cuda:{self._device_id}" if self._gpu else "cpu"  # where the decoded tensors are (torch's)
        self.max_batch = max_batch
        self._threads = threads or min(4, cpu_lanes())
        self.hw_decoder_load = hw_decoder_load
        self._pipe = _Pipe(self._build)
        self._torch: Any = None
        if self._gpu:
            import torch

            self._torch = torch

    def _build(self) -> Any:
        pipe = _pipeline(self.max_batch, self._threads, self._device_id if self._gpu else None)
        with pipe:
            pipe.set_outputs(_decoder(fn.external_source(name="data", dtype=types.UINT8, ndim=1), self._gpu,
                                      self.hw_decoder_load))
        pipe.build()
        return pipe

    def _adopt(self, tensor: Any) -> Any:
        return self._torch.from_dlpack(tensor) if self._gpu else np.array(tensor)

    def _run(self, blobs: Sequence[bytes]) -> list[Any | None]:
        try:
            (decoded,) = self._pipe.run({"data": [np.frombuffer(b, dtype=np.uint8) for b in blobs]})
        except Exception as exc:
            _raise_device_fault(exc)
            if len(blobs) == 1:
                return [None]
            return [px for b in blobs for px in self._run([b])]
        return [self._adopt(decoded[j]) for j in range(len(blobs))]

    def decode(self, blobs: Sequence[bytes]) -> list[Any | None]:
        """Each blob decoded, or None where DALI could not decode it (the caller decodes those on the CPU)."""
        out: list[Any | None] = []
        for chunk in _chunks(blobs, self.max_batch):
            out.extend(self._run(chunk))
        return out

    def __call__(self, blobs: Sequence[bytes]) -> list[Any]:
        """Like :meth:`decode`; an image DALI cannot decode raises InternalError DALI_DECODE."""
        out = self.decode(blobs)
        if any(px is None for px in out):
            raise InternalError(f"DALI could not decode stored image {out.index(None)} of the batch",
                                code=ErrorCode.DALI_DECODE)
        return out

    def close(self) -> None:
        self._pipe.close()
