"""A set that remembers only its newest keys: for what is worth recalling a while, not forever."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class RecentSet(Generic[K]):
    """At most `limit` keys; adding one more forgets the oldest."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a RecentSet holds at least one key")
        self._limit = limit
        self._keys: OrderedDict[K, None] = OrderedDict()

    def add(self, key: K) -> bool:
        """Remember `key`; True when it was not remembered already."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys
