"""The public Python surface: what ``preprocess.__all__`` lists is what the README's notebook and training
sections use; everything else is internal. Pinned here so that a change to it is a decision."""

from __future__ import annotations

import subprocess
import sys

import pytest

import preprocess
from tests.paths import ROOT

PUBLIC = ["Dataset", "ErrorCode", "NotFoundError", "PreprocessError", "VersionDataset", "Where", "__version__",
          "history", "loader", "open_dataset"]


def test_the_public_names_are_pinned_and_all_resolve() -> None:
    assert preprocess.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(preprocess, name) is not None, name
    assert preprocess.history.log.__module__ == "preprocess.history"
    assert isinstance(preprocess.__version__, str) and preprocess.__version__
    assert dir(preprocess) == sorted(PUBLIC)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        preprocess.nothing_here  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_package_imports_nothing_heavy() -> None:
    """``import preprocess`` (and so ``preprocess --version``) loads no store, model or torch module."""
    code = ("import sys, preprocess; heavy = {'icechunk', 'zarr', 'torch', 'onnxruntime', 'numpy', 'PIL'};"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
