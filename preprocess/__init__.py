"""preprocess: camera images resized and recompressed as small as a neural feature check allows, into
versioned zarr datasets.

The public Python API is what ``__all__`` lists (pinned by ``tests/test_public.py``); every other module is
internal and may move. Names are imported on first use, so ``import preprocess`` stays cheap::

    import preprocess
    ds = preprocess.open_dataset("cams.icechunk", ref="v1")      # a version's rows, ds[i]["image"]
    preprocess.history.log("cams.icechunk")                      # log, show, diff, lineage, refs
    preprocess.VersionDataset("cams.icechunk", size=(224, 224))  # PyTorch (needs torch)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preprocess import history
    from preprocess.core.codes import ErrorCode
    from preprocess.core.errors import NotFoundError, PreprocessError
    from preprocess.notebook import Dataset, open_dataset
    from preprocess.torchdata import VersionDataset, Where, loader

__all__ = [
    "Dataset",
    "ErrorCode",
    "NotFoundError",
    "PreprocessError",
    "VersionDataset",
    "Where",
    "__version__",
    "history",
    "loader",
    "open_dataset",
]

# name -> the module that defines it (imported on first access: torch only for the reader's names)
_WHERE = {
    "Dataset": "preprocess.notebook",
    "open_dataset": "preprocess.notebook",
    "history": "preprocess",
    "ErrorCode": "preprocess.core.codes",
    "NotFoundError": "preprocess.core.errors",
    "PreprocessError": "preprocess.core.errors",
    "VersionDataset": "preprocess.torchdata",
    "Where": "preprocess.torchdata",
    "loader": "preprocess.torchdata",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("preprocess")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'preprocess' has no attribute {name!r}")
    if module == "preprocess":
        return import_module(f"preprocess.{name}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
