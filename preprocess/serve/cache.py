"""A small thread-safe LRU cache with a byte budget: what `serve` keeps of immutable snapshots
(columns, selections, thumbnails, comparisons). Snapshots never change, so nothing expires: entries
only fall out when the cache is full."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class LRU[V]:
    """At most ``max_items`` values and (with ``size``) about ``max_bytes`` bytes, least recently
    used out first. Two threads missing the same key may both make it; the value is the same."""

    def __init__(self, *, max_items: int, max_bytes: int = 0, size: Callable[[V], int] | None = None) -> None:
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._size = size
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> V:
        nbytes = self._size(value) if self._size is not None else 0
        with self._lock:
            if key in self._data:
                self._bytes -= self._sizes.pop(key)
                del self._data[key]
            self._data[key] = value
            self._sizes[key] = nbytes
            self._bytes += nbytes
            while len(self._data) > self._max_items or (self._max_bytes and self._bytes > self._max_bytes
                                                         and len(self._data) > 1):
                old, _ = self._data.popitem(last=False)
                self._bytes -= self._sizes.pop(old)
        return value

    def pop(self, key: Hashable) -> None:
        with self._lock:
            if key in self._data:
                self._bytes -= self._sizes.pop(key)
                del self._data[key]

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        value = self.get(key)
        return value if value is not None else self.put(key, make())

    def __len__(self) -> int:
        return len(self._data)
