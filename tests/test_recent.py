"""What is kept a while: RecentSet (the newest keys) and RecentMap (the newest entries, each
for a time)."""

from __future__ import annotations

import pytest

from services.recent import RecentMap, RecentSet


def test_a_recent_set_forgets_its_oldest_key() -> None:
    keys: RecentSet[int] = RecentSet(2)
    assert keys.add(1) and keys.add(2)
    assert not keys.add(1)
    keys.add(3)
    assert 1 not in keys and 2 in keys and 3 in keys


def test_a_recent_map_forgets_its_oldest_entry_and_what_outlived_its_time() -> None:
    now = [0.0]
    kept: RecentMap[int, str] = RecentMap(2, ttl_s=10.0, clock=lambda: now[0])
    kept.put(1, "one")
    kept.put(2, "two")
    kept.put(3, "three")
    assert kept.get(1) is None and kept.get(2) == "two" and len(kept) == 2
    now[0] = 9.9
    assert kept.get(3) == "three"
    now[0] = 10.0
    assert kept.get(3) is None and len(kept) == 1
    # Put again, an entry's time starts over.
    kept.put(2, "two again")
    now[0] = 19.0
    assert kept.get(2) == "two again"
    kept.discard(2)
    assert kept.get(2) is None


def test_a_recent_map_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        RecentMap(0, ttl_s=1.0)
