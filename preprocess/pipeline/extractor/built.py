"""A model ready for inference: its manifest and its ONNX file (made by :mod:`preprocess.pipeline.extractor.build`,
run by :mod:`preprocess.pipeline.extractor.session`; neither imports the other's module for it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from preprocess.pipeline.extractor.manifest import Manifest


@dataclass(frozen=True)
class BuiltModel:
    manifest: Manifest
    path: Path  # the ONNX file
    onnx_sha256: str
