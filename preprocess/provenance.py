"""What a commit records about how it was made: software versions, the machine, the inputs."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import sys

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


def machine() -> dict[str, str]:
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0]}
