"""A small bounded cache for per-feature-size operators.

Detection training with multi-scale, padded inputs and long-running inference services see
many feature sizes; an operator cache keyed by size must therefore forget old entries.
"""

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

Value = TypeVar('Value')


class LRUCache(Generic[Value]):
    """Least-recently-used cache holding at most ``capacity`` entries.

    Args:
        capacity (int): Most entries kept; the least recently used one is evicted first.
    """

    def __init__(self, capacity: int) -> None:
        if not (isinstance(capacity, int) and capacity > 0):
            raise ValueError(f'capacity must be a positive int, got {capacity!r}')
        self.capacity = capacity
        self._entries: 'OrderedDict[Hashable, Value]' = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get_or_build(self, key: Hashable, build: Callable[[], Value]) -> Value:
        """The entry for ``key``, built with ``build()`` (and stored) on a miss."""
        try:
            value = self._entries[key]
        except KeyError:
            value = build()
            self._entries[key] = value
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return value
        self._entries.move_to_end(key)
        return value

    def clear(self) -> None:
        self._entries.clear()
