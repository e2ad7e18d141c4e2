"""What a commit records about how its rows were made: THE declaration of the provenance.

Every commit a job makes carries one :class:`Provenance` as its icechunk metadata, written with
:meth:`Provenance.to_metadata` (plain JSON) and read back with :meth:`Provenance.from_metadata`,
which is tolerant: a commit written by an older (or newer) version still reads; a missing or
malformed field takes its default, unknown fields are kept. So adding a field is one edit here (a
field with a default, which is what an older commit reads as) plus a test. Defaults are empty,
never "now" or "here": the values of a new commit are filled where it is made
(:mod:`preprocess.drivers.ingest`), from the section constructors here (:meth:`Machine.here`, ...).

Sections: ``preprocess`` (format, kind, job id), the spec and model, the software and machine, the
engine, the inputs, counts, bytes, quality statistics, stage timings, start and finish times, and
a section of the driver's own (``watch`` for the daemon, ``ray`` for a Ray job).
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import sys
from collections.abc import Mapping
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from preprocess.core import names

PROVENANCE_FORMAT = 1


def _text(value: object) -> object:
    """JSON holds UTF-8 text: a string with an undecodable byte (a folder or spec path that is not
    UTF-8) is kept in its quoted form (:func:`preprocess.core.names.text`)."""
    if isinstance(value, str):
        return names.text(value)
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value

_PACKAGES = {
    "preprocess": "preprocess",
    "dali": "nvidia-dali-cuda130",
    "nvimgcodec": "nvidia-nvimgcodec-cu13",
    "onnxruntime": "onnxruntime-gpu",
    "zarr": "zarr",
    "icechunk": "icechunk",
    "numpy": "numpy",
    "pillow": "pillow-simd",
    "torch": "torch",
    "imagecodecs": "imagecodecs",
    "pyjpegli": "pyjpegli",
    "mozjpeg": "mozjpeg-lossless-optimization",
}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def software_versions() -> dict[str, str]:
    versions = {name: _version(dist) for name, dist in _PACKAGES.items()}
    if not versions["onnxruntime"]:
        versions["onnxruntime"] = _version("onnxruntime")
    if not versions["pillow"]:
        versions["pillow"] = _version("pillow")
    versions["python"] = platform.python_version()
    return versions


class Section(BaseModel):
    """A part of the provenance. Unknown fields are kept (and written back); when read with
    :meth:`Provenance.from_metadata`, a malformed field falls back to its default instead of
    failing the whole commit."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="wrap")
    @classmethod
    def _tolerate(cls, data: object, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo) -> Self:
        try:
            return handler(data)
        except ValidationError:
            if not (info.context or {}).get("tolerant"):
                raise
            if not isinstance(data, Mapping):
                return handler({})
            return handler({k: v for k, v in data.items() if _valid(handler, k, v)})


def _valid[S: Section](handler: ModelWrapValidatorHandler[S], key: object, value: object) -> bool:
    try:
        handler({key: value})
    except ValidationError:
        return False
    return True


class Header(Section):
    """``preprocess``: marks a commit made by preprocess."""

    format: int = PROVENANCE_FORMAT
    kind: str = "run"  # "run" (also on Ray), "watch"
    job_id: str = ""


class PipelineInfo(Section):
    name: str = ""


class ResizeInfo(Section):
    mode: str = ""
    size: int | None = None
    sizes: str | list[int] | None = None  # "auto", or the sides of a size search
    width: int | None = None
    height: int | None = None


class QualityInfo(Section):
    mode: str = ""
    value: int | None = None
    min: int | None = None
    max: int | None = None
    step: int | None = None


class EncodeInfo(Section):
    format: str = ""  # absent in specs before formats (they were JPEG)
    encoders: list[str] = Field(default_factory=list)  # absent before encoders were named (libjpeg)
    chroma_subsampling: str | list[str] = ""  # one (older specs) or the list searched

    def summary(self) -> str:
        """``jpeg jpegli 420`` (an older spec: ``420``): the format, its encoders and chroma subsamplings."""
        chroma = self.chroma_subsampling
        chroma = chroma if isinstance(chroma, str) else ",".join(chroma)
        return " ".join(p for p in (self.format, "+".join(self.encoders), chroma) if p)


class GateInfo(Section):
    """The gate of a recorded spec: one model and one threshold (specs before issue 21, and specs of one
    model and one view still written so), or several ``models`` and ``views`` with their thresholds."""

    model: str = ""
    threshold: float | None = None
    on_fail: str = ""
    view: str = ""  # "tiles", in the older spelling of a tiles gate
    models: list[str] = Field(default_factory=list)
    views: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        """``mobilenetv2-imagenet >= 0.99`` or ``mobilenetv2-imagenet+dinov2-small whole >= 0.99, crops >= 0.97``."""
        if self.views:
            checks = ", ".join(f"{v} >= {t}" for v, t in self.views.items())
            return f"{'+'.join(self.models) or '?'} {checks}"
        tiles = " tiles" if self.view == "tiles" else ""
        return f"{_or_q(self.model)}{tiles} >= {_or_q(self.threshold)}"


class SpecInfo(Section):
    """A typed view of a recorded spec (:attr:`Provenance.spec` keeps it exactly as it was): the
    settings the CLI shows. Always read tolerantly (:meth:`of`): a spec of another version whose
    fields changed type shows ``?`` there, it never fails."""

    pipeline: PipelineInfo = Field(default_factory=PipelineInfo)
    resize: ResizeInfo = Field(default_factory=ResizeInfo)
    quality: QualityInfo = Field(default_factory=QualityInfo)
    encode: EncodeInfo = Field(default_factory=EncodeInfo)
    gate: GateInfo = Field(default_factory=GateInfo)

    @classmethod
    def of(cls, spec: Mapping[str, object] | None) -> SpecInfo:
        return cls.model_validate(dict(spec or {}), context={"tolerant": True})

    def summary(self) -> str:
        """The decisive settings in one line: resize, quality, chroma, gate (``?`` where unknown)."""
        r, q, g = self.resize, self.quality, self.gate
        if r.mode == "fit":
            resize = f"fit {_or_q(r.width)}x{_or_q(r.height)}"
        elif r.mode == "none":
            resize = "no resize"
        else:
            resize = f"{_or_q(r.mode)} {_or_q(r.size)}"
        quality = (f"q{_or_q(q.value)} fixed" if q.mode == "fixed"
                   else f"q{_or_q(q.min)}-{_or_q(q.max)}/{_or_q(q.step)}")
        if r.mode in ("long-side", "short-side") and r.sizes:
            resize += f" (sizes {r.sizes if isinstance(r.sizes, str) else ','.join(map(str, r.sizes))})"
        return f"{resize}, {quality}, {_or_q(self.encode.summary())}, gate {g.summary()} ({_or_q(g.on_fail)})"


def _or_q(value: object) -> str:
    return "?" if value is None or value == "" else str(value)


class ModelInfo(Section):
    name: str = ""
    weights_sha256: str = ""
    onnx_sha256: str = ""
    manifest: str = ""
    dim: int | None = None


class EngineInfo(Section):
    """What ran the pipeline (:meth:`preprocess.pipeline.engines.base.Engine.describe`; what else an engine
    says, e.g. ``encoders``, the library per spec variant, is kept as it was written)."""

    engine: str = ""
    device: str = ""


class Machine(Section):
    host: str = ""
    platform: str = ""
    python: str = ""

    @classmethod
    def here(cls) -> Machine:
        return cls(host=socket.gethostname(), platform=platform.platform(), python=sys.version.split()[0])


class Inputs(Section):
    roots: list[str] = Field(default_factory=list)  # absolute local paths, s3:// URLs as given
    count: int = 0  # sources read
    list_sha256: str = ""  # sorted (path, content sha256) lines (preprocess.sources.files.list_digest)
    branch: str = ""
    parent_snapshot: str = ""
    # a source of this commit whose content another of its sources brought first: its path -> that
    # source's path, the row's source_path (its name is recorded nowhere else; `show --item` finds it)
    duplicates: dict[str, str] | None = None


class Counts(Section):
    sources: int = 0
    skipped: int = 0  # already stored with this fingerprint, or a second copy in this job
    stored: int = 0
    failed: int = 0  # failure rows added by this commit (a failure recorded before is not counted again)
    flagged: int = 0
    kept_source: int = 0
    passthrough: int = 0


class ByteCounts(Section):
    in_: int = Field(default=0, alias="in")  # of the stored items' sources
    out: int = 0  # stored

    @classmethod
    def of(cls, bytes_in: int, bytes_out: int) -> ByteCounts:
        return cls.model_validate({"in": bytes_in, "out": bytes_out})


class QualityStats(Section):
    similarity_min: float | None = None  # of the rows' ``similarity``: the gate score, on the first check's scale
    similarity_mean: float | None = None
    quality_mean: float | None = None
    probes_mean: float | None = None
    # each checked view's similarity over the rows the gate measured: {"whole": {"min": ., "mean": .}, ...}
    # (absent in commits before views were summed up, and in one that measured none)
    views: dict[str, dict[str, float]] | None = None


class RowsHeld(Section):
    """``rows_held``: the items and failures the version holds after this commit, which the writer fills
    in as it commits (``store.origins`` reads them with the history to tell which commit added a row)."""

    items: int = 0
    failures: int = 0


class WatchInfo(Section):
    """``watch``: the daemon's commit policy and why this commit was made."""

    reason: str = ""  # "count" | "interval" | "shutdown"
    sequence: int = 0  # the daemon's n-th commit
    commit_every: int = 0
    commit_interval_s: float = 0.0
    quiet_s: float = 0.0
    mode: str = ""  # "inotify" | "polling"
    folder: str = ""


class RayInfo(Section):
    """``ray``: the cluster's shape and what the actors ran."""

    address: str = ""
    version: str = ""
    nodes: int = 0
    cpus: float = 0.0
    gpus: float = 0.0
    actors: int = 0
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 0.0
    device: str = ""
    batch_size: int = 0
    write_chunks: int = 0
    write_tasks: int = 0
    engines: list[EngineInfo] = Field(default_factory=list)


class Provenance(Section):
    """One commit's provenance: how every row of it was made."""

    preprocess: Header = Field(default_factory=Header)
    spec: dict[str, Any] = Field(default_factory=dict)  # preprocess.pipeline.spec.Spec.to_dict(), as it was
    spec_path: str = ""
    spec_sha256: str = ""
    fingerprint: str = ""
    model: ModelInfo = Field(default_factory=ModelInfo)  # the primary model of the spec's gate.models
    others: list[ModelInfo] | None = None  # its other models, in order (written only when there are some)
    software: dict[str, str] = Field(default_factory=dict)
    engine: EngineInfo = Field(default_factory=EngineInfo)
    machine: Machine = Field(default_factory=Machine)
    inputs: Inputs = Field(default_factory=Inputs)
    counts: Counts = Field(default_factory=Counts)
    bytes_: ByteCounts = Field(default_factory=ByteCounts, alias="bytes")
    quality: QualityStats = Field(default_factory=QualityStats)
    rows_held: RowsHeld | None = None  # the writer's, at every commit since 2026-12-06 (older ones have none)
    timings: dict[str, float] = Field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    watch: WatchInfo | None = None
    ray: RayInfo | None = None

    @property
    def kind(self) -> str:
        return self.preprocess.kind

    @property
    def spec_info(self) -> SpecInfo:
        return SpecInfo.of(self.spec)

    @property
    def job_id(self) -> str:
        return self.preprocess.job_id

    def to_metadata(self) -> dict[str, object]:
        """Plain JSON for a commit's metadata (a driver's section only when it has one)."""
        out = self.model_dump(mode="json", by_alias=True)
        for name in ("watch", "ray", "others", "rows_held"):
            if out.get(name) is None:
                out.pop(name, None)
        if isinstance(inputs := out.get("inputs"), dict) and inputs.get("duplicates") is None:
            inputs.pop("duplicates", None)  # only a commit that had duplicates says so
        if isinstance(quality := out.get("quality"), dict) and quality.get("views") is None:
            quality.pop("views", None)  # a commit that stored nothing (or before views were summed up)
        return {k: _text(v) for k, v in out.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object] | None) -> Provenance | None:
        """A commit's provenance, or None when preprocess did not make the commit (no ``preprocess``
        section: the repository's first snapshot, or someone else's commit). Never raises on what
        an older or newer version wrote: missing or malformed fields take their defaults."""
        md = dict(metadata or {})
        if not isinstance(md.get("preprocess"), Mapping):
            return None
        return cls.model_validate(md, context={"tolerant": True})
