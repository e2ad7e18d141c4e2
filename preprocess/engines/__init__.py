"""Engines: decode -> resize -> encode behind one small interface (see :mod:`.base`)."""

from preprocess.engines.base import Engine, Loaded, Prepared, SourceImage

__all__ = ["Engine", "Loaded", "Prepared", "SourceImage"]
