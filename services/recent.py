"""A set that remembers only its newest keys: for what is worth recalling a while, not forever."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
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


V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """At most `limit` entries, each kept at most `ttl_s` seconds (then looked up again)."""

    def __init__(
        self, limit: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("a RecentMap holds at least one entry")
        self._limit = limit
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self._ttl_s, value)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
