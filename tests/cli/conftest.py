"""The CLI's tests use the store of real jobs the history tests use (tests/store/conftest.py)."""

from tests.store.conftest import hist, photo_sets, scratch, tiny_specs

__all__ = ["hist", "photo_sets", "scratch", "tiny_specs"]
