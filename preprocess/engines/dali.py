"""The DALI engine: DALI decode + resize + model view, nvImageCodec JPEG encode; CPU or GPU.

The only module that imports ``nvidia.dali`` and ``nvidia.nvimgcodec``. One graph builder,
parameterised by device, so the CPU variant (run in CI) exercises the same graph as the GPU one:

- ``encoded`` sources (``SourceInfo.plain``): bytes -> ``fn.decoders.image`` (``cpu`` or ``mixed``,
  EXIF orientation applied) -> Lanczos-3 antialiased resize to the target (the stored image) and
  a linear antialiased stretch + ``crop_mirror_normalize`` (the model view of the source).
- ``pixels`` sources (CMYK, 16-bit, alpha, palette, multi-frame, ...): decoded on the CPU with
  :func:`preprocess.images.decode_rgb`, fed as HWC uint8 into the same resize + view ops.
- ``view`` of candidates: bytes -> decoder -> the same view ops (no stored output).
- ``tiles``: stored pixels, or candidates through a decoder-only graph, cut into model-sized tiles
  (:func:`~preprocess.engines.base.tile_boxes`) and normalised like the view: numpy on the CPU,
  torch on the device on the GPU.

Failure isolation: one undecodable sample fails a whole DALI batch, so a failed batch is retried
sample by sample (the pipeline is rebuilt after every failure). A sample DALI cannot decode, or a
JPEG that looks damaged (no EOI, invalid markers in the scan; libjpeg-turbo in DALI decodes many
damaged files silently), goes to the CPU decoder: Pillow then either reports the same error the
pillow engine would (TRUNCATED / CORRUPT ...) or decodes it into the ``pixels`` variant.

Memory: on the CPU, stored pixels are numpy arrays and views are numpy batches. On the GPU, both
stay on the device as torch tensors wrapping DALI's output buffers through DLPack (the default
dynamic executor never reuses outputs that are still referenced); the view batch goes to
onnxruntime through ``__dlpack__`` and the stored pixels to nvImageCodec's GPU encoder, with no host
round trip for pixels.

NOT RUN YET (written from the docs, no GPU on the machine it was written on): everything behind
``device="gpu"``: the ``mixed`` decoder (``hw_decoder_load``, ``jpeg_fancy_upsampling``), GPU resize
and normalise, ``torch.from_dlpack`` on ``TensorGPU`` samples, stream hand-off to nvImageCodec
(``cuda_stream=`` torch's current stream) and to onnxruntime (stream synchronised before return),
the nvImageCodec GPU JPEG encoder (``Encoder(device_id=0)``), and the tiles' torch crop + normalise.
The CPU path is tested.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import nvidia.nvimgcodec as nvimgcodec  # noqa: PLR0402 (mypy resolves only this form)
from nvidia.dali import fn as _fn
from nvidia.dali import types as _types
from nvidia.dali.pipeline import Pipeline as _Pipeline
from PIL import Image

from preprocess import codecs, errors
from preprocess.codecs import Candidate, Encoded, Variant
from preprocess.engines.base import Engine, Loaded, Prepared, SourceImage, Tiles, tile_boxes
from preprocess.errors import InputError, InternalError, input_error
from preprocess.extractor.manifest import InputView
from preprocess.extractor.view import view_arrays
from preprocess.images import decode_rgb, jpeg_suspect
from preprocess.spec import Encode

# DALI's type stubs are incomplete (enum re-exports, untyped Pipeline methods): use the API dynamically.
fn: Any = _fn
types: Any = _types
Pipeline: Any = _Pipeline

_CSS = {"444": nvimgcodec.ChromaSubsampling.CSS_444, "422": nvimgcodec.ChromaSubsampling.CSS_422,
        "420": nvimgcodec.ChromaSubsampling.CSS_420}


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
    index: int  # position in the batch given to load()
    data: np.ndarray  # encoded bytes (1-D) or HWC uint8 pixels
    target: tuple[int, int]


class DaliEngine(Engine):
    name: ClassVar[str] = "dali"

    def __init__(self, encode: Encode, view: InputView, *, device: str = "cpu", max_batch: int = 32,
                 device_id: int = 0, hw_decoder_load: float = 0.65, threads: int | None = None) -> None:
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
        super().__init__(encode, view, device=device, max_batch=max_batch)
        self._gpu = device == "gpu"
        self._device_id = device_id
        self._hw_decoder_load = hw_decoder_load
        self._threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="dali-engine-cpu")
        self._pipes = {kind: _Pipe(partial(self._build, *kind))
                       for kind in (("encoded", True), ("pixels", True), ("encoded", False), ("pixels", False))}
        self._decoder = _Pipe(self._build_decoder)  # candidates at full resolution (for tiles)
        self._norm: tuple[Any, Any] | None = None  # (mean, std) per channel on the tiles' device
        if self._gpu:
            import torch  # GPU only: holds device tensors (DLPack views of DALI outputs), stacks view rows

            self._torch: Any = torch
            self._encoder = nvimgcodec.Encoder(device_id=device_id, max_num_cpu_threads=self._threads)
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
        pipe = Pipeline(batch_size=self.max_batch, num_threads=self._threads,
                        device_id=self._device_id if self._gpu else None,
                        prefetch_queue_depth=1, exec_dynamic=True)
        with pipe:
            if source == "encoded":
                data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
                gpu_args: dict[str, Any] = {"hw_decoder_load": self._hw_decoder_load, "jpeg_fancy_upsampling": True}
                img = fn.decoders.image(data, device="mixed" if self._gpu else "cpu", output_type=types.RGB,
                                        adjust_orientation=True, **(gpu_args if self._gpu else {}))
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
        pipe = Pipeline(batch_size=self.max_batch, num_threads=self._threads,
                        device_id=self._device_id if self._gpu else None,
                        prefetch_queue_depth=1, exec_dynamic=True)
        with pipe:
            data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
            gpu_args: dict[str, Any] = {"hw_decoder_load": self._hw_decoder_load, "jpeg_fancy_upsampling": True}
            pipe.set_outputs(fn.decoders.image(data, device="mixed" if self._gpu else "cpu", output_type=types.RGB,
                                               adjust_orientation=True, **(gpu_args if self._gpu else {})))
        pipe.build()
        return pipe

    # --- device-specific glue (the only GPU-only code) ----------------------------------------

    def _adopt(self, tensor: Any) -> Any:
        """One DALI output sample -> numpy (CPU, a copy) or a torch CUDA tensor (GPU, zero-copy)."""
        if self._gpu:
            return self._torch.from_dlpack(tensor)  # DALI makes torch's current stream wait for it
        return np.array(tensor)

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

    # --- load ---------------------------------------------------------------------------------

    def _run(self, kind: tuple[str, bool], items: list[_Item]) -> tuple[dict[int, tuple[Any, Any]],
                                                                         dict[int, str]]:
        """Run items through a pipeline; a failed batch is retried sample by sample.

        Returns ``{index: (stored, view_row)}`` for successes and ``{index: message}`` for failures.
        """
        pipe = self._pipes[kind]
        try:
            stored, views = pipe.run({"data": [it.data for it in items],
                                      "w": [np.float32(it.target[0]) for it in items],
                                      "h": [np.float32(it.target[1]) for it in items]})
        except Exception as exc:
            if len(items) == 1:
                return {}, {items[0].index: _dali_message(exc)}
            done: dict[int, tuple[Any, Any]] = {}
            failed: dict[int, str] = {}
            for it in items:
                ok, bad = self._run(kind, [it])
                done.update(ok)
                failed.update(bad)
            return done, failed
        return {it.index: (self._adopt(stored[j]), self._adopt(views[j])) for j, it in enumerate(items)}, {}

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

    def load(self, sources: Sequence[SourceImage]) -> Loaded:
        done: dict[int, tuple[Any, Any]] = {}
        failures: dict[int, InputError] = {}
        encoded = [_Item(i, np.frombuffer(s.data, dtype=np.uint8), s.target)
                   for i, s in enumerate(sources) if self._to_dali(s)]
        on_cpu = sorted(set(range(len(sources))) - {it.index for it in encoded})
        for chunk in _chunks(encoded, self.max_batch):
            ok, bad = self._run(("encoded", True), list(chunk))
            done.update(ok)
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
        for chunk in _chunks(pixels, self.max_batch):
            ok, bad = self._run(("pixels", True), list(chunk))
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
        if variant.encoder == "libjpeg" and self._gpu:
            return "nvjpeg"
        return super().library(variant)

    def _params(self, quality: int, chroma: str, *, optimized: bool = False) -> Any:
        return nvimgcodec.EncodeParams(
            quality_type=nvimgcodec.QualityType.QUALITY, quality_value=float(quality),
            chroma_subsampling=_CSS[chroma or "420"],
            jpeg_encode_params=nvimgcodec.JpegEncodeParams(progressive=False, optimized_huffman=optimized))

    def _nvimgcodec(self, pixels: Sequence[Any], quality: int, chroma: str, *, optimized: bool) -> list[bytes]:
        """JPEG-encode pixels (device tensors on the GPU, host arrays on the CPU) at one quality."""
        out: list[bytes] = []
        params = self._params(quality, chroma, optimized=optimized)
        for chunk in _chunks(pixels, self.max_batch):
            stream = self._stream()
            imgs = nvimgcodec.as_images(list(chunk), cuda_stream=stream)
            streams = self._encoder.encode(imgs, "jpeg", params=params, cuda_stream=stream)
            for cs in streams:
                if cs is None:
                    raise InternalError(f"nvImageCodec failed to encode an image at q{quality}")
                out.append(bytes(cs))
        return out

    def encode(self, images: Sequence[Prepared], candidates: Sequence[Candidate]) -> list[Encoded]:
        """libjpeg candidates through nvImageCodec (nvJPEG on the GPU), grouped by quality and chroma;
        every other encoder on the CPU (:func:`preprocess.codecs.encode`) from host pixels."""
        if len(images) != len(candidates):
            raise ValueError("one candidate per image")
        out: list[bytes] = [b""] * len(images)
        groups: dict[tuple[int, str], list[int]] = {}
        others: list[int] = []
        for i, c in enumerate(candidates):
            if c.variant.encoder == "libjpeg":
                groups.setdefault((c.quality, c.variant.chroma), []).append(i)
            else:
                others.append(i)
        for (quality, chroma), idxs in groups.items():
            for i, data in zip(idxs, self._nvimgcodec([images[i].pixels for i in idxs], quality, chroma,
                                                      optimized=False), strict=True):
                out[i] = data
        level = self.encoding.level
        for i, data in zip(others, self._pool.map(
                lambda i: codecs.encode(self._host(images[i].pixels), candidates[i], level=level), others),
                strict=True):
            out[i] = data
        return [Encoded(data, c) for data, c in zip(out, candidates, strict=True)]

    def finish(self, images: Sequence[Prepared], chosen: Sequence[Encoded]) -> list[bytes]:
        """Progressive JPEG: mozjpeg's lossless optimization on the CPU (as the pillow engine). Baseline
        libjpeg candidates: encoded again by nvImageCodec with optimized Huffman tables (same
        coefficients, so the same pixels). Everything else as measured."""
        out = [e.data for e in chosen]
        redo = [i for i, e in enumerate(chosen)
                if e.format == "jpeg" and not self.encoding.progressive and e.candidate.variant.encoder == "libjpeg"]
        for i in redo:
            c = chosen[i].candidate
            (out[i],) = self._nvimgcodec([images[i].pixels], c.quality, c.variant.chroma, optimized=True)
        if self.encoding.progressive:
            jpegs = [i for i, e in enumerate(chosen) if e.format == "jpeg"]
            for i, data in zip(jpegs, self._pool.map(lambda i: codecs.optimize_jpeg(chosen[i].data), jpegs),
                               strict=True):
                out[i] = data
        return out

    def _host(self, pixels: Any) -> np.ndarray:
        """Stored pixels as a host HWC uint8 array (a copy from the device on the GPU)."""
        if self._gpu:
            return np.ascontiguousarray(pixels.cpu().numpy())
        return np.ascontiguousarray(pixels)

    def pixels(self, image: Prepared | Encoded) -> np.ndarray:
        if isinstance(image, Prepared):
            return self._host(image.pixels)
        if image.format != "jpeg":
            return codecs.decode(image.data, image.format)
        (decoded,) = self._decoder.run({"data": [np.frombuffer(image.data, dtype=np.uint8)]})
        return self._host(self._adopt(decoded[0]))

    def view(self, encoded: Sequence[Encoded]) -> Any:
        """JPEG candidates decoded by DALI (nvJPEG on the GPU); other formats decoded on the CPU
        (:func:`preprocess.codecs.decode`) and fed as pixels to the same view operators."""
        rows: dict[int, Any] = {}
        jpeg = [i for i, e in enumerate(encoded) if e.format == "jpeg"]
        other = [i for i, e in enumerate(encoded) if e.format != "jpeg"]
        for kind, idxs in ((("encoded", False), jpeg), (("pixels", False), other)):
            pipe = self._pipes[kind]
            for chunk in _chunks(idxs, self.max_batch):
                if kind[0] == "encoded":
                    data = [np.frombuffer(encoded[i].data, dtype=np.uint8) for i in chunk]
                else:
                    data = list(self._pool.map(lambda i: codecs.decode(encoded[i].data, encoded[i].format), chunk))
                try:
                    (views,) = pipe.run({"data": data})
                except Exception as exc:
                    raise InternalError(f"DALI could not view a candidate: {_dali_message(exc)}") from exc
                rows.update((i, self._adopt(views[j])) for j, i in enumerate(chunk))
        return self._stack([rows[i] for i in range(len(encoded))])

    def tiles(self, images: Sequence[Prepared | Encoded]) -> Tiles:
        pixels: list[Any] = [im.pixels if isinstance(im, Prepared) else None for im in images]
        jpegs = [(i, im) for i, im in enumerate(images) if isinstance(im, Encoded) and im.format == "jpeg"]
        for i, im in enumerate(images):
            if isinstance(im, Encoded) and im.format != "jpeg":
                px = codecs.decode(im.data, im.format)
                pixels[i] = self._torch.from_numpy(px).to(f"cuda:{self._device_id}") if self._gpu else px
        for chunk in _chunks(jpegs, self.max_batch):
            try:
                (decoded,) = self._decoder.run({"data": [np.frombuffer(e.data, dtype=np.uint8) for _, e in chunk]})
            except Exception as exc:
                raise InternalError(f"DALI could not decode a candidate JPEG: {_dali_message(exc)}") from exc
            for j, (i, _) in enumerate(chunk):
                pixels[i] = self._adopt(decoded[j])
        v = self.view_spec
        rows: list[Any] = []
        counts: list[int] = []
        for px in pixels:
            boxes = tile_boxes(int(px.shape[1]), int(px.shape[0]), v.width, v.height)
            counts.append(len(boxes))
            rows.extend(self._tile_row(px[y0:y1, x0:x1]) for x0, y0, x1, y1 in boxes)
        return Tiles(batch=self._stack(rows), counts=counts)

    def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        self._decoder.close()
        self._pool.shutdown(wait=True)


def decode_throughput(blobs: Sequence[bytes], *, device: str, batch: int = 64, repeats: int = 1) -> float:
    """Images/s of DALI decode alone over ``blobs`` (the ceiling the end-to-end rate is compared with).

    Same decoder settings as the engine; the outputs are synchronised but not used.
    """
    import time

    gpu = device == "gpu"
    pipe = Pipeline(batch_size=batch, num_threads=os.cpu_count() or 1, device_id=0 if gpu else None,
                    prefetch_queue_depth=1, exec_dynamic=True)
    with pipe:
        data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
        extra: dict[str, Any] = {"hw_decoder_load": 0.65, "jpeg_fancy_upsampling": True} if gpu else {}
        pipe.set_outputs(fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB,
                                           adjust_orientation=True, **extra))
    pipe.build()
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in blobs]
    pipe.feed_input("data", arrays[:batch])
    pipe.run()  # warm-up (allocations, hardware decoder init)
    t0 = time.perf_counter()
    n = 0
    for _ in range(repeats):
        for chunk in _chunks(arrays, batch):
            pipe.feed_input("data", list(chunk))
            pipe.run()  # dynamic executor: outputs are complete when run() returns
            n += len(chunk)
    seconds = time.perf_counter() - t0
    del pipe
    return n / seconds if seconds > 0 else 0.0


class ImageDecoder:
    """Encoded images -> oriented RGB uint8 HWC pixels: numpy arrays on ``device="cpu"``, torch CUDA
    tensors on ``"gpu"`` (DALI's mixed decoder: nvJPEG / the hardware JPEG decoder; zero-copy DLPack
    views of DALI's outputs, like the engine's). For readers of the dataset
    (:mod:`preprocess.torchdata`): DataLoader workers read the stored bytes, and the main process
    decodes each batch here. The GPU variant is NOT RUN yet (no GPU where it was written); the CPU
    variant is the same graph and is tested. A batch DALI cannot decode raises InternalError.
    """

    def __init__(self, *, device: str = "gpu", max_batch: int = 64, device_id: int = 0,
                 threads: int | None = None) -> None:
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
        self._gpu = device == "gpu"
        self._device_id = device_id
        self.max_batch = max_batch
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._pipe = _Pipe(self._build)
        self._torch: Any = None
        if self._gpu:
            import torch

            self._torch = torch

    def _build(self) -> Any:
        pipe = Pipeline(batch_size=self.max_batch, num_threads=self._threads,
                        device_id=self._device_id if self._gpu else None, prefetch_queue_depth=1,
                        exec_dynamic=True)
        with pipe:
            data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
            pipe.set_outputs(fn.decoders.image(data, device="mixed" if self._gpu else "cpu", output_type=types.RGB,
                                               adjust_orientation=True))
        pipe.build()
        return pipe

    def __call__(self, blobs: Sequence[bytes]) -> list[Any]:
        out: list[Any] = []
        for chunk in _chunks(blobs, self.max_batch):
            try:
                (decoded,) = self._pipe.run({"data": [np.frombuffer(b, dtype=np.uint8) for b in chunk]})
            except Exception as exc:
                raise InternalError(f"DALI could not decode a stored image: {_dali_message(exc)}",
                                    code="DALI_DECODE") from exc
            for j in range(len(chunk)):
                out.append(self._torch.from_dlpack(decoded[j]) if self._gpu else np.array(decoded[j]))
        return out

    def close(self) -> None:
        self._pipe.close()
