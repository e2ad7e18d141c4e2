"""The DALI engine: DALI decode + resize + model view, nvImageCodec JPEG encode; CPU or GPU.

One graph builder, parameterised by device, so the CPU variant (run in CI) exercises the same graph as
the GPU one:

- ``encoded`` sources (``SourceInfo.plain``, upright by the probe's reading of EXIF): bytes -> the decoder
  (:func:`.graph.decoder`: ``cpu`` or ``mixed``) -> Lanczos-3 antialiased resize to the target (the stored
  image) and a linear antialiased stretch + ``crop_mirror_normalize`` (the model view of the source).
- ``pixels`` sources (CMYK, 16-bit, alpha, palette, multi-frame, BMP, TIFF, EXIF-rotated, ...): decoded
  on the CPU with :func:`preprocess.pipeline.images.decode_rgb`, fed as HWC uint8 into the same resize +
  view ops.
- ``view`` of candidates: bytes -> decoder -> the same view ops (no stored output).
- ``regions`` (tiles, crops): stored pixels, or candidates through the decoder pipeline
  (:func:`.graph.decoder_pipeline`), cut into the boxes asked for (e.g.
  :func:`~preprocess.pipeline.engines.base.tile_boxes`) and stretched and normalised like the view
  (:meth:`.memory.Memory.tile_row`).

Failure isolation (:func:`.graph.run_samples`): a failed batch is retried sample by sample. A source
DALI cannot decode, a JPEG that looks damaged (no EOI, invalid markers in the scan), or one that
libjpeg-turbo warns about when it reads its scans strictly
(:func:`~preprocess.pipeline.formats.jpeg.entropy_intact`, on the engine's CPU threads while DALI decodes:
DALI decodes damaged entropy-coded data silently) goes to the CPU decoder: Pillow then either reports the
same error the pillow engine would (TRUNCATED / CORRUPT ...) or decodes it into the ``pixels`` variant. A
candidate DALI cannot decode is decoded on the CPU; an image nvImageCodec cannot encode is encoded by
libjpeg-turbo on the CPU, and its row records that library. A device failure raises
:class:`~preprocess.core.errors.DeviceError`, which stops the job before its commit.

Lanes: each engine has its own pipelines, nvImageCodec encoder and (on the GPU) CUDA stream, so the
:class:`~preprocess.pipeline.process.Processor` runs several engines on one GPU, one per lane thread.
Thread counts follow the process's CPU quota (:func:`preprocess.core.cpus.cpu_lanes`), shared between
lanes.

Memory (:mod:`.memory`, :mod:`.cuda`): on the CPU, stored pixels are numpy arrays and views numpy
batches. On the GPU both stay on the device as torch tensors; the view batch goes to onnxruntime through
``__dlpack__`` and the stored pixels to nvImageCodec's GPU encoder, with no host round trip for pixels
(only the bytes of candidates come back, which are stored anyway).

NOT RUN YET (written from the docs, no GPU on the machine it was written on): everything behind
``device="gpu"``: the ``mixed`` decoder (``hw_decoder_load``, ``jpeg_fancy_upsampling``), GPU resize and
normalise, :mod:`.cuda`, and the nvImageCodec GPU JPEG encoder (:mod:`.jpeg`). ``scripts/gpu-check``
runs all of it; the CPU path (the same graphs and glue) is tested.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import ClassVar, Concatenate, Literal

import numpy as np
from nvidia.dali import fn, types

from preprocess.core import errors
from preprocess.core.cpus import cpu_lanes
from preprocess.core.errors import InputError, InternalError, input_error
from preprocess.pipeline import codecs
from preprocess.pipeline.batches import HostPixels, ModelBatch, Pixels
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.devices import DeviceName, EngineName, Placement
from preprocess.pipeline.engines.base import BoxRule, Engine, Loaded, Prepared, SourceImage, Tiles
from preprocess.pipeline.engines.dali import jpeg
from preprocess.pipeline.engines.dali.graph import (
    HW_DECODER_LOAD,
    Graph,
    Outputs,
    Pipe,
    Sample,
    decoder,
    decoder_pipeline,
    encoded_input,
    new_pipeline,
    node,
    run_samples,
)
from preprocess.pipeline.engines.dali.host import Image_, Row
from preprocess.pipeline.engines.dali.memory import memory
from preprocess.pipeline.extractor.manifest import InputView
from preprocess.pipeline.extractor.view import view_arrays
from preprocess.pipeline.images import decode_rgb, jpeg_intact, jpeg_suspect
from preprocess.pipeline.spec import Encode
from preprocess.rows import formats

LIBJPEG = formats.LIBRARIES["libjpeg"]
Source = Literal["encoded", "pixels"]  # what a graph takes: encoded bytes, or HWC uint8 pixels
_GRAPHS: tuple[tuple[Source, bool], ...] = (("encoded", True), ("pixels", True), ("encoded", False), ("pixels", False))


def _on_lane_stream[**P, R](method: Callable[Concatenate[DaliEngine, P], R]) -> Callable[Concatenate[DaliEngine, P], R]:
    """Run an engine method with the engine's own CUDA stream current (GPU; nothing on the CPU)."""

    @functools.wraps(method)
    def run(self: DaliEngine, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._memory.lane():
            return method(self, *args, **kwargs)

    return run


class DaliEngine(Engine):
    """``device``: ``"cpu"``, ``"gpu"`` or a :class:`~preprocess.pipeline.devices.Placement` (which GPU);
    ``threads``: its CPU threads (DALI, nvImageCodec, the CPU codecs; default: the CPUs this process may
    use). ``hw_decoder_load``: the hardware JPEG decoder's share, read when the pipelines are first built."""

    name: ClassVar[EngineName] = "dali"
    hw_decoder_load: float = HW_DECODER_LOAD

    def __init__(self, encode: Encode, view: InputView, *, device: DeviceName | Placement = "cpu",
                 max_batch: int = 32, threads: int | None = None) -> None:
        self._where = Placement.of(device)
        super().__init__(encode, view, device=self._where.device, max_batch=max_batch)
        self._threads = threads or cpu_lanes()
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="dali-engine-cpu")
        self._pipes = {(source, stored): Pipe(partial(self._build, source, stored), sized=stored)
                       for source, stored in _GRAPHS}  # (what it takes, whether it also makes the stored image)
        self._decoder = Pipe(self._build_decoder)  # candidates at full resolution (for tiles)
        self._memory = memory(self._where, stream=True)
        self._jpeg = jpeg.NvJpeg(self._where, threads=self._threads, batch=max_batch)
        self.fallbacks = 0  # images nvImageCodec failed to encode, encoded by libjpeg-turbo instead

    # --- the graphs ---------------------------------------------------------------------------

    def _build(self, source: Source, stored: bool) -> Graph:
        """One graph for both devices: ``source`` is "encoded" (bytes) or "pixels" (HWC uint8)."""
        v = self.view_spec
        mean, std = view_arrays(v)
        if v.colour == "BGR":
            mean, std = mean[::-1], std[::-1]
        pipe = new_pipeline(self.max_batch, self._threads, self._where)
        with pipe:
            if source == "encoded":
                img = decoder(encoded_input(), self._where, self.hw_decoder_load)
            else:
                img = node(fn.external_source(name="data", dtype=types.DALIDataType.UINT8, ndim=3, layout="HWC"))
                img = img.gpu() if self._where.gpu else img
            outputs = []
            if stored:
                w = node(fn.external_source(name="w", dtype=types.DALIDataType.FLOAT, ndim=0))
                h = node(fn.external_source(name="h", dtype=types.DALIDataType.FLOAT, ndim=0))
                outputs.append(node(fn.resize(img, resize_x=w, resize_y=h,
                                              interp_type=types.DALIInterpType.INTERP_LANCZOS3, antialias=True)))
            small = node(fn.resize(img, resize_x=v.width, resize_y=v.height,
                                   interp_type=types.DALIInterpType.INTERP_LINEAR, antialias=True))
            if v.colour == "BGR":
                small = node(fn.color_space_conversion(small, image_type=types.DALIImageType.RGB,
                                                       output_type=types.DALIImageType.BGR))
            outputs.append(node(fn.crop_mirror_normalize(small, dtype=types.DALIDataType.FLOAT, mean=mean.tolist(),
                                                         std=std.tolist(),
                                                         output_layout="CHW" if v.layout == "NCHW" else "HWC")))
            pipe.set_outputs(*outputs)
        pipe.build()
        return pipe

    def _build_decoder(self) -> Graph:
        return decoder_pipeline(self.max_batch, self._threads, self._where, self.hw_decoder_load)

    def bind_lane(self) -> None:
        self._memory.bind()

    def _host(self, image: Prepared) -> HostPixels:
        """A prepared image's pixels as a host HWC uint8 array (copied from the device once, in the
        lane's thread and stream, on the GPU)."""
        if image.host is None:
            image.host = self._memory.host(self._memory.of(image.pixels))
        return image.host

    # --- running the graphs -------------------------------------------------------------------

    def _take_stored(self, outputs: Outputs, j: int) -> tuple[Image_, Row]:
        return self._memory.image(outputs[0][j]), self._memory.row(outputs[1][j])

    def _take_row(self, outputs: Outputs, j: int) -> Row:
        return self._memory.row(outputs[0][j])

    def _take_image(self, outputs: Outputs, j: int) -> Image_:
        return self._memory.image(outputs[0][j])

    def _candidates[T](self, pipe: Pipe, encoded: Sequence[Encoded], idxs: Sequence[int],
                       take: Callable[[Outputs, int], T],
                       on_cpu: Callable[[Sequence[int]], dict[int, T]]) -> dict[int, T]:
        """Run our own candidates through ``pipe`` (JPEG bytes through DALI's decoder); one DALI cannot
        decode is decoded on the CPU and taken by ``on_cpu``."""
        samples = [Sample(i, np.frombuffer(encoded[i].data, dtype=np.uint8)) for i in idxs]
        ok, bad = run_samples(pipe, samples, take, self.max_batch)
        if bad:
            ok.update(on_cpu(sorted(bad)))
        return ok

    def _decode_on_cpu(self, encoded: Sequence[Encoded], idxs: Sequence[int]) -> list[HostPixels]:
        """Candidates decoded by :func:`preprocess.pipeline.codecs.decode`, in the engine's thread pool."""
        try:
            return list(self._pool.map(lambda i: codecs.decode(encoded[i].data, encoded[i].format), idxs))
        except Exception as exc:
            raise InternalError(f"a candidate ({encoded[idxs[0]].format}) could not be decoded: {exc}") from exc

    def _rows_on_cpu(self, encoded: Sequence[Encoded], idxs: Sequence[int]) -> dict[int, Row]:
        """Candidates decoded on the CPU, through the pixels graph: their model-view rows."""
        arrays = self._decode_on_cpu(encoded, idxs)
        ok, bad = run_samples(self._pipes["pixels", False], [Sample(i, a) for i, a in zip(idxs, arrays, strict=True)],
                              self._take_row, self.max_batch)
        if bad:
            raise InternalError(f"DALI could not view a candidate: {next(iter(bad.values()))}")
        return ok

    def _images_on_cpu(self, encoded: Sequence[Encoded], idxs: Sequence[int]) -> dict[int, Image_]:
        """Candidates decoded on the CPU, as pixels in the engine's memory."""
        return {i: self._memory.upload(a) for i, a in zip(idxs, self._decode_on_cpu(encoded, idxs), strict=True)}

    # --- load ---------------------------------------------------------------------------------

    def _decode_cpu(self, src: SourceImage) -> HostPixels:
        img = decode_rgb(src.data, draft_to=src.target, path=src.path)
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))

    def _to_dali(self, src: SourceImage) -> bool:
        """Whether DALI's decoder takes this source straight from its bytes."""
        info = src.info
        if not info.plain or info.orientation != 1:  # the probe's orientation, applied by the CPU decoder
            return False
        return info.format != "JPEG" or not jpeg_suspect(src.data)

    @_on_lane_stream
    def load(self, sources: Sequence[SourceImage]) -> Loaded:
        failures: dict[int, InputError] = {}
        encoded = [Sample(i, np.frombuffer(s.data, dtype=np.uint8), s.target)
                   for i, s in enumerate(sources) if self._to_dali(s)]
        # DALI decodes garbage in a JPEG's entropy-coded data without a word: every JPEG it takes is read
        # strictly on the CPU meanwhile, and what libjpeg-turbo warns about is decoded again on the CPU
        # (which reports the damage, or mends a harmless header field), whatever DALI made of it.
        intact = {it.index: self._pool.submit(jpeg_intact, sources[it.index].data)
                  for it in encoded if sources[it.index].info.format == "JPEG"}
        on_cpu = sorted(set(range(len(sources))) - {it.index for it in encoded})
        done, bad = run_samples(self._pipes["encoded", True], encoded, self._take_stored, self.max_batch)
        on_cpu.extend(bad)  # DALI could not decode it: Pillow gives the verdict (or the pixels)
        for i, check in intact.items():
            if not check.result() and i in done:
                del done[i]
                on_cpu.append(i)
        decoded = {i: self._pool.submit(self._decode_cpu, sources[i]) for i in sorted(on_cpu)}
        pixels: list[Sample] = []
        for i, fut in decoded.items():
            try:
                pixels.append(Sample(i, fut.result(), sources[i].target))
            except InputError as exc:
                failures[i] = exc
            except Exception as exc:
                failures[i] = input_error(errors.CORRUPT, f"cannot decode: {exc}", sources[i].path)
        ok, bad = run_samples(self._pipes["pixels", True], pixels, self._take_stored, self.max_batch)
        done.update(ok)
        for i, message in bad.items():
            failures[i] = input_error(errors.ENGINE_FAILED, f"dali engine: {message}", sources[i].path)
        prepared = []
        rows = []
        for i in sorted(done):
            stored, row = done[i]
            prepared.append(Prepared(index=i, width=int(stored.shape[1]), height=int(stored.shape[0]),
                                     pixels=Pixels(stored)))
            rows.append(row)
        return Loaded(prepared=prepared, source_view=self._memory.stack(rows, self.view_spec),
                      failures=sorted(failures.items()))

    # --- encode and view ----------------------------------------------------------------------

    def library(self, variant: Variant) -> str:
        info = formats.FORMATS[variant.format].encoder(variant.encoder)
        return info.gpu if self._where.gpu and info is not None and info.gpu else super().library(variant)

    def describe(self) -> dict[str, str]:
        out = super().describe()
        if self._where.gpu:
            out["jpeg_decoder"] = f"DALI mixed: nvJPEG (hardware decoder for {self.hw_decoder_load:.0%} where present)"
        if self.fallbacks:
            out["encode_fallbacks"] = f"{self.fallbacks} images encoded by {LIBJPEG} after nvImageCodec failed on them"
        return out

    def _nvjpeg(self, images: Sequence[Prepared], quality: int, chroma: str, *, optimized: bool) -> list[bytes | None]:
        return self._jpeg.encode([self._memory.of(im.pixels) for im in images], quality, chroma, optimized=optimized,
                                 stream=self._memory.stream())

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
            got = self._nvjpeg([images[i] for i in idxs], quality, chroma, optimized=False)
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
            got = self._nvjpeg([images[i] for i in idxs], quality, chroma, optimized=True)
            for i, again in zip(idxs, got, strict=True):
                out[i] = again if again is not None else chosen[i].data  # as measured: valid, a little larger
        return out

    @_on_lane_stream
    def pixels(self, image: Prepared | Encoded) -> HostPixels:
        if isinstance(image, Prepared):
            return self._host(image)
        if image.format != "jpeg":
            return codecs.decode(image.data, image.format)
        decoded = self._candidates(self._decoder, [image], [0], self._take_image,
                                   partial(self._images_on_cpu, [image]))[0]
        return self._memory.host(decoded)

    @_on_lane_stream
    def view(self, encoded: Sequence[Encoded]) -> ModelBatch:
        """JPEG candidates decoded by DALI (nvJPEG on the GPU); other formats decoded on the CPU
        (:func:`preprocess.pipeline.codecs.decode`) and fed as pixels to the same view operators."""
        jpegs = [i for i, e in enumerate(encoded) if e.format == "jpeg"]
        other = [i for i, e in enumerate(encoded) if e.format != "jpeg"]
        rows = self._candidates(self._pipes["encoded", False], encoded, jpegs, self._take_row,
                                partial(self._rows_on_cpu, encoded))
        if other:
            rows.update(self._rows_on_cpu(encoded, other))
        return self._memory.stack([rows[i] for i in range(len(encoded))], self.view_spec)

    @_on_lane_stream
    def regions(self, images: Sequence[Prepared | Encoded], boxes: BoxRule) -> Tiles:
        enc = [im for im in images if isinstance(im, Encoded)]
        where = {id(e): k for k, e in enumerate(enc)}
        decoded = self._candidates(self._decoder, enc, [k for k, e in enumerate(enc) if e.format == "jpeg"],
                                   self._take_image, partial(self._images_on_cpu, enc))
        decoded.update(self._images_on_cpu(enc, [k for k, e in enumerate(enc) if e.format != "jpeg"]))
        v = self.view_spec
        rows: list[Row] = []
        counts: list[int] = []
        for im in images:
            px = self._memory.of(im.pixels) if isinstance(im, Prepared) else decoded[where[id(im)]]
            cut = boxes(int(px.shape[1]), int(px.shape[0]))
            counts.append(len(cut))
            rows.extend(self._memory.tile_row(px[y0:y1, x0:x1], v) for x0, y0, x1, y1 in cut)
        return Tiles(batch=self._memory.stack(rows, v), counts=counts)

    def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        self._decoder.close()
        self._pool.shutdown(wait=True)
