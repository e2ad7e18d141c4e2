"""Pipeline specs: declarative TOML, validated (and frozen) before any image is touched.

A spec says how every source becomes a stored image: the target size, the JPEG
encoding, how quality is chosen, and the feature gate that judges it. Errors name
the file and the field (``pipelines/camera.toml: quality.min: ...``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError, did_you_mean
from preprocess.core.textfiles import TooDeep, TooLong, parse_toml, read_text
from preprocess.pipeline.codecs import Variant, check_encode, variants
from preprocess.pipeline.gatespec import JSON, VIEW_NAMES, Crops, Gate, ViewName, Views
from preprocess.pipeline.gatespec import Frozen as _Frozen
from preprocess.rows.formats import FORMATS

__all__ = ["AUTO_SIDES", "JSON", "SPEC_FORMAT", "VIEW_NAMES", "Batch", "Crops", "Encode", "Gate", "Limits",
           "PipelineInfo", "Quality", "Resize", "Spec", "ViewName", "Views", "bundled_dir", "bundled_specs",
           "default_spec_path", "find_spec", "load_spec", "parse_spec"]

SPEC_FORMAT = 1
# ``resize.sizes = "auto"``: these sides below ``resize.size``. The floor is the models' input side
# (224): below it the stored image has fewer pixels than the network looks at.
AUTO_SIDES = (2560, 1920, 1280, 960, 640, 448, 320, 224)
MAX_SIDES = 16


class PipelineInfo(_Frozen):
    name: str = "custom"
    description: str = ""
    format: Literal[1] = 1


class Resize(_Frozen):
    """Target geometry. Aspect ratio is kept in every mode; ``upscale`` is off by default.

    ``sizes`` puts the size in the search (``long-side``/``short-side`` only): the sides listed (each at
    most ``size``), or ``"auto"`` (:data:`AUTO_SIDES` below ``size``), are searched besides ``size`` and the
    fewest bytes that pass are stored. For a consumer that only ever sees whole frames: a spec with
    sizes checks the whole view only."""

    mode: Literal["long-side", "short-side", "fit", "none"] = "long-side"
    size: Annotated[int, Field(ge=16, le=65535)] | None = 1280
    width: Annotated[int, Field(ge=16, le=65535)] | None = None
    height: Annotated[int, Field(ge=16, le=65535)] | None = None
    upscale: bool = False
    sizes: tuple[Annotated[int, Field(ge=16, le=65535)], ...] | Literal["auto"] | None = None

    @model_validator(mode="after")
    def _check_mode_fields(self) -> Resize:
        if self.mode in ("long-side", "short-side") and self.size is None:
            raise ValueError(f"resize.mode = {self.mode!r} needs resize.size")
        if self.mode == "fit" and (self.width is None or self.height is None):
            raise ValueError("resize.mode = 'fit' needs resize.width and resize.height")
        if self.sizes is not None:
            if self.mode not in ("long-side", "short-side"):
                raise ValueError(f"resize.sizes: needs mode long-side or short-side, not {self.mode!r}")
            assert self.size is not None
            if self.sizes != "auto" and (not self.sizes or max(self.sizes) > self.size):
                raise ValueError(f"resize.sizes: list sides of at most resize.size ({self.size}), or \"auto\"")
            if self.sizes != "auto" and len(set(self.sizes)) > MAX_SIDES:  # 1,265 took 115 s and 3.25 GB a photo
                raise ValueError(f"resize.sizes: at most {MAX_SIDES} sides (each is a search of its own for every "
                                 "image)")
        return self

    def sides(self) -> list[int]:
        """The sides searched, largest first (``[size]`` without ``sizes``; ``[]`` in fit/none modes)."""
        if self.size is None or self.mode not in ("long-side", "short-side"):
            return []
        extra = [s for s in AUTO_SIDES if s < self.size] if self.sizes == "auto" else list(self.sizes or ())
        return sorted({self.size, *extra}, reverse=True)

    def to_dict(self) -> dict[str, JSON]:
        """The geometry as data; ``sizes`` only when set (specs written before it keep their fingerprint)."""
        data: dict[str, JSON] = self.model_dump(mode="json")
        if self.sizes is None:
            del data["sizes"]
        return data

    def decisive(self) -> dict[str, JSON]:
        """What decides the stored geometry: ``auto`` as the sides it means."""
        data = self.to_dict()
        if self.sizes is not None:
            sides: list[JSON] = list(self.sides())
            data["sizes"] = sides
        return data

    def target(self, width: int, height: int, side: int | None = None) -> tuple[int, int]:
        """The stored image's (width, height) for a source of ``width`` x ``height`` (at ``side`` instead of
        ``size``: one of :meth:`sides`)."""
        if self.mode == "none":
            return width, height
        if self.mode == "fit":
            assert self.width is not None and self.height is not None
            scale = min(self.width / width, self.height / height)
        else:
            size = side or self.size
            assert size is not None
            scale = size / (max(width, height) if self.mode == "long-side" else min(width, height))
        if scale >= 1.0 and not self.upscale:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))

    def targets(self, width: int, height: int) -> list[tuple[int, int]]:
        """Every distinct stored size the search tries, largest first (one without ``sizes``)."""
        out: list[tuple[int, int]] = []
        for side in self.sides() or [0]:
            t = self.target(width, height, side or None)
            if t not in out:
                out.append(t)
        return out


class Encode(_Frozen):
    """How the stored bytes are made (:mod:`preprocess.pipeline.codecs`).

    ``format`` picks the codec. Per image, every variant of it the spec allows (each encoder, times
    each chroma subsampling the encoder offers) is searched, and the smallest candidate measured to
    pass the gate is stored. Unset fields take the format's defaults (filled in on validation), so a
    spec that changes only ``format`` is valid for every format.
    """

    format: Literal["jpeg", "webp", "avif", "jxl"] = "jpeg"
    encoders: tuple[str, ...] = ()  # default: the format's first encoder (jpeg: jpegli)
    chroma_subsampling: tuple[Literal["444", "422", "420"], ...] = ()  # default: 4:2:0 (none for jxl)
    # jpeg: True stores the bytes after a lossless scan + Huffman optimization (mozjpeg: progressive,
    # 5-40% smaller, the same pixels); False stores baseline JPEG (what hardware JPEG decoders read).
    # Other formats ignore it, and a format without chroma subsampling (jxl) ignores that: a spec that
    # changes only `format` stays valid.
    progressive: bool = True
    speed: Annotated[int, Field(ge=0, le=10)] | None = None  # avif: 0 (slowest, smallest) .. 10; default 6
    method: Annotated[int, Field(ge=0, le=6)] | None = None  # webp: 0 (fastest) .. 6 (smallest); default 4
    effort: Annotated[int, Field(ge=1, le=9)] | None = None  # jxl: 1 (fastest) .. 9 (smallest); default 7

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: object) -> object:
        """Fill what the spec leaves out with the format's defaults (so equal specs compare equal)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("encoders", "chroma_subsampling"):  # one value, or a list of them
            if isinstance(data.get(key), str):
                data[key] = (data[key],)
        info = FORMATS.get(str(data.get("format", "jpeg")))
        if info is None:
            return data  # the format's Literal reports it (and only it)
        if not info.chroma:  # a format without chroma subsampling (jxl) ignores it, like progressive
            data.pop("chroma_subsampling", None)
        data.setdefault("encoders", (info.encoders[0].name,))
        data.setdefault("chroma_subsampling", info.chroma[:1])
        if info.option is not None:
            data.setdefault(info.option.name, info.option.default)
        return data

    @model_validator(mode="after")
    def _check_format_fields(self) -> Encode:
        check_encode(FORMATS[self.format], self)
        return self

    def variants(self) -> list[Variant]:
        """The (encoder, chroma) variants searched per image, the primary first."""
        return variants(self)

    @property
    def level(self) -> int | None:
        """The active format's effort option (avif speed, webp method, jxl effort)."""
        option = FORMATS[self.format].option
        return None if option is None else getattr(self, option.name)

    def to_dict(self) -> dict[str, JSON]:
        """The encoding as data without the options of other formats."""
        return {k: v for k, v in self.model_dump(mode="json").items()
                if v is not None and (k != "progressive" or self.format == "jpeg")}

    def decisive(self) -> dict[str, JSON]:
        """What decides the stored bytes, canonical: the variants searched (not how they were listed),
        the stored JPEG form, the effort option."""
        out: dict[str, JSON] = {"format": self.format, "variants": [[v.encoder, v.chroma] for v in self.variants()]}
        if self.format == "jpeg":
            out["progressive"] = self.progressive
        if self.level is not None:
            out["level"] = self.level
        return out


class Quality(_Frozen):
    """Fixed quality, or adaptive: the lowest quality in [min, max] (on a ``step`` grid) that passes the gate."""

    mode: Literal["adaptive", "fixed"] = "adaptive"
    value: Annotated[int, Field(ge=1, le=100)] = 85
    min: Annotated[int, Field(ge=1, le=100)] = 5
    max: Annotated[int, Field(ge=1, le=100)] = 95
    step: Annotated[int, Field(ge=1, le=50)] = 2

    @model_validator(mode="after")
    def _check_bounds(self) -> Quality:
        if self.min > self.max:
            raise ValueError(f"quality.min ({self.min}) is above quality.max ({self.max})")
        return self

    def decisive(self) -> dict[str, JSON]:
        """What decides the choice: the qualities that may be chosen (not the unused fields of the mode)."""
        ladder: list[JSON] = list(self.ladder())
        return {"mode": self.mode, "ladder": ladder}

    def ladder(self) -> list[int]:
        """The qualities the adaptive search may choose, ascending; always ends at ``max``."""
        if self.mode == "fixed":
            return [self.value]
        steps = list(range(self.min, self.max + 1, self.step))
        if steps[-1] != self.max:
            steps.append(self.max)
        return steps


class Batch(_Frozen):
    size: Annotated[int, Field(ge=1, le=4096)] = 32


class Limits(_Frozen):
    max_pixels: Annotated[int, Field(ge=1)] = 120_000_000
    max_file_bytes: Annotated[int, Field(ge=1)] = 256 * 1024 * 1024


class Spec(_Frozen):
    pipeline: PipelineInfo = PipelineInfo()
    resize: Resize = Resize()
    encode: Encode = Encode()
    quality: Quality = Quality()
    gate: Gate = Gate()
    batch: Batch = Batch()
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _sizes_check_whole_frames(self) -> Spec:
        if len(self.resize.sides()) > 1 and (self.gate.views.crops is not None or self.gate.views.tiles is not None):
            raise ValueError("resize.sizes: a spec that searches sizes checks the whole view only (crops and tiles "
                             "of a smaller image would be compared with the same smaller image)")
        return self

    def warnings(self) -> list[str]:
        """What a job with this spec says before it starts: a gate that names no views checks the whole frame
        alone, as specs did before the crops view (they keep their fingerprint, so a store made with one does
        not make its rows again), where the default spec also checks the crops at the stored size."""
        if "views" in self.gate.model_fields_set or len(self.resize.sides()) > 1:  # a size search: whole only
            return []
        default = _default_views()
        if self.gate.views == default:
            return []
        checks = ", ".join(f"{name} >= {t}" for name, t in default.items())
        return [f"gate.views is not given: only the whole frame is checked (whole >= {self.gate.threshold}), "
                f"where the default spec checks {checks}; add [gate.views] to say which views to check"]

    def to_dict(self) -> dict[str, dict[str, JSON]]:
        """Each section as data (what provenance records and ``preprocess tune`` writes back)."""
        return {**self.model_dump(mode="json"), "resize": self.resize.to_dict(), "encode": self.encode.to_dict(),
                "gate": self.gate.to_dict()}

    def fingerprint(self, model_sha256: str | Sequence[str]) -> str:
        """Hash of everything that decides the stored bytes (not names, batch size or limits).

        Rows are keyed by (source sha256, fingerprint): a rerun with the same fingerprint adds
        nothing; any change that can change the output gives new rows. ``model_sha256``: the weights of
        each model of ``gate.models``, in order.
        """
        shas: JSON = model_sha256 if isinstance(model_sha256, str) else (
            model_sha256[0] if len(model_sha256) == 1 else list(model_sha256))  # one model: as before
        decisive = {
            "resize": self.resize.decisive(),
            "encode": self.encode.decisive(),
            "quality": self.quality.decisive(),
            "gate": {**self.gate.to_dict(), "model_sha256": shas},
        }
        blob = json.dumps(decisive, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def digest(self) -> str:
        """sha256 of the whole spec (canonical JSON), for provenance."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _fields_at(loc: tuple[int | str, ...]) -> set[str]:
    """The field names a spec section takes (``()``: the top level), for "did you mean"."""
    models: list[type[BaseModel]] = [Spec]
    for part in loc:
        inner = [m.model_fields[str(part)].annotation for m in models if str(part) in m.model_fields]
        models = [t for a in inner for t in (typing.get_args(a) or (a,))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
    return {name for m in models for name in m.model_fields}


def _as_written(loc: tuple[int | str, ...], gate: object) -> tuple[int | str, ...]:
    """An error's field as the spec wrote it: a gate in the older spelling (``threshold``, ``model``) is
    checked as ``views`` and ``models``."""
    if not isinstance(gate, Mapping) or loc[:1] != ("gate",) or len(loc) < 3:
        return loc
    if loc[1] == "views" and "views" not in gate and "threshold" in gate:
        return ("gate", "threshold")
    if loc[1] == "models" and "models" not in gate and "model" in gate:
        return ("gate", "model")
    return loc


def parse_spec(data: Mapping[str, object], *, source: str = "<spec>") -> Spec:
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            where = _field_path(_as_written(err["loc"], data.get("gate")))
            if err["type"] == "extra_forbidden":
                msg += did_you_mean(str(err["loc"][-1]), _fields_at(err["loc"][:-1]))
            problems.append(msg if msg.startswith(f"{where}.") else f"{where}: {msg}")
        raise ConfigError(
            "invalid pipeline spec: " + "; ".join(problems),
            code=ErrorCode.SPEC_INVALID,
            hint="see pipelines/camera.toml for a documented example",
            path=source,
        ) from None


def bundled_specs() -> list[str]:
    """The names of the specs that ship with preprocess (``camera``, ``archive``, ...)."""
    try:
        return sorted(p.stem for p in bundled_dir("pipelines").glob("*.toml"))
    except ConfigError:
        return []


def find_spec(path: str | Path) -> Path:
    """The spec file ``--spec`` names: a path as given (relative to the working folder), else a bundled
    spec by its name (``archive``, ``archive.toml``) or by its path in the source tree
    (``pipelines/archive.toml``, from any working folder). A path that is none of these is returned
    as given (:func:`load_spec` then says it is missing, and which specs are bundled)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    parts = p.parts
    name = p.name if len(parts) == 1 or (len(parts) == 2 and parts[0] == "pipelines") else ""
    if name:
        try:
            bundled = bundled_dir("pipelines") / (name if name.endswith(".toml") else f"{name}.toml")
        except ConfigError:
            return p
        if bundled.is_file():
            return bundled
    return p


def load_spec(path: str | Path) -> Spec:
    p = find_spec(path)
    try:
        text = read_text(p)
    except FileNotFoundError:
        names = ", ".join(bundled_specs()) or "none found"
        raise NotFoundError("pipeline spec not found", code=ErrorCode.SPEC_MISSING,
                            hint=f"pass --spec a .toml file, or the name of a bundled spec: {names}",
                            path=str(p)) from None
    except (OSError, UnicodeDecodeError, TooLong) as exc:
        raise ConfigError(f"cannot read pipeline spec: {exc}", code=ErrorCode.SPEC_UNREADABLE, path=str(p)) from None
    try:
        data = parse_toml(text)
    except (tomllib.TOMLDecodeError, TooDeep) as exc:
        raise ConfigError(f"not valid TOML: {exc}", code=ErrorCode.SPEC_SYNTAX, path=str(p)) from None
    if not data:  # an empty (or comments-only) file would silently be all defaults
        raise ConfigError("the pipeline spec is empty", code=ErrorCode.SPEC_EMPTY, path=str(p),
                          hint="write the settings to change (see pipelines/camera.toml), or leave out --spec "
                               "for the default spec")
    return parse_spec(data, source=str(p))


def bundled_dir(name: str) -> Path:
    """``models/`` or ``pipelines/`` at the project root (source checkout) or inside the wheel."""
    package = Path(__file__).resolve().parents[1]  # preprocess/
    for candidate in (package.parent / name, package / "_bundled" / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"bundled folder {name!r} not found", code=ErrorCode.INSTALL_BROKEN,
                      hint="reinstall preprocess")


def default_spec_path() -> Path:
    return bundled_dir("pipelines") / "camera.toml"


@functools.cache
def _default_views() -> Views:
    """The default spec's views, read once (:meth:`Spec.warnings` is asked at every commit of a job)."""
    return load_spec(default_spec_path()).gate.views
