"""Pipeline specs: declarative TOML, validated (and frozen) before any image is touched.

A spec says how every source becomes a stored image: the target size, the JPEG
encoding, how quality is chosen, and the feature gate that judges it. Errors name
the file and the field (``pipelines/camera.toml: quality.min: ...``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError, did_you_mean
from preprocess.pipeline.codecs import Variant, check_encode, variants
from preprocess.rows.formats import FORMATS

SPEC_FORMAT = 1

type JSON = str | int | float | bool | list[JSON] | dict[str, JSON] | None  # a spec (section) as data


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineInfo(_Frozen):
    name: str = "custom"
    description: str = ""
    format: Literal[1] = 1


class Resize(_Frozen):
    """Target geometry. Aspect ratio is kept in every mode; ``upscale`` is off by default."""

    mode: Literal["long-side", "short-side", "fit", "none"] = "long-side"
    size: Annotated[int, Field(ge=16, le=65535)] | None = 1280
    width: Annotated[int, Field(ge=16, le=65535)] | None = None
    height: Annotated[int, Field(ge=16, le=65535)] | None = None
    upscale: bool = False

    @model_validator(mode="after")
    def _check_mode_fields(self) -> Resize:
        if self.mode in ("long-side", "short-side") and self.size is None:
            raise ValueError(f"resize.mode = {self.mode!r} needs resize.size")
        if self.mode == "fit" and (self.width is None or self.height is None):
            raise ValueError("resize.mode = 'fit' needs resize.width and resize.height")
        return self

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The stored image's (width, height) for a source of ``width`` x ``height``."""
        if self.mode == "none":
            return width, height
        if self.mode == "fit":
            assert self.width is not None and self.height is not None
            scale = min(self.width / width, self.height / height)
        else:
            assert self.size is not None
            side = max(width, height) if self.mode == "long-side" else min(width, height)
            scale = self.size / side
        if scale >= 1.0 and not self.upscale:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))


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


class Gate(_Frozen):
    """The feature check: cosine similarity between the source's and the stored image's embeddings."""

    model: str = "mobilenetv2-imagenet"
    threshold: Annotated[float, Field(gt=-1.0, le=1.0)] = 0.99
    on_fail: Literal["flag", "source", "reject"] = "flag"
    # "whole": the whole image as the model sees it (squashed to its input size) against the source's.
    # "tiles": the stored image cut into model-sized tiles at its own resolution, each compared with the
    # same tile of the uncompressed resized image; the tiles' similarities combine by `tiles_combine`.
    view: Literal["whole", "tiles"] = "whole"
    tiles_combine: Literal["min", "p10", "mean"] = "p10"

    def to_dict(self) -> dict[str, JSON]:
        """The gate as data; the tile fields only when ``view = "tiles"`` (so specs written before
        they existed keep their fingerprint and digest)."""
        data = self.model_dump(mode="json")
        if self.view == "whole":
            del data["view"], data["tiles_combine"]
        return data


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

    def to_dict(self) -> dict[str, dict[str, JSON]]:
        """Each section as data (what provenance records and ``preprocess tune`` writes back)."""
        return {**self.model_dump(mode="json"), "encode": self.encode.to_dict(), "gate": self.gate.to_dict()}

    def fingerprint(self, model_sha256: str) -> str:
        """Hash of everything that decides the stored bytes (not names, batch size or limits).

        Rows are keyed by (source sha256, fingerprint): a rerun with the same fingerprint adds
        nothing; any change that can change the output gives new rows.
        """
        decisive = {
            "resize": self.resize.model_dump(mode="json"),
            "encode": self.encode.decisive(),
            "quality": self.quality.decisive(),
            "gate": {**self.gate.to_dict(), "model_sha256": model_sha256},
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


def parse_spec(data: Mapping[str, object], *, source: str = "<spec>") -> Spec:
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            where = _field_path(err["loc"])
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
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        names = ", ".join(bundled_specs()) or "none found"
        raise NotFoundError("pipeline spec not found", code=ErrorCode.SPEC_MISSING,
                            hint=f"pass --spec a .toml file, or the name of a bundled spec: {names}",
                            path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read pipeline spec: {exc}", code=ErrorCode.SPEC_UNREADABLE, path=str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
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
