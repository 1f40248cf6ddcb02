"""The bounded cache of per-size operators (spanet_mm/models/cache.py)."""

import pytest

from spanet_mm.models.cache import LRUCache


def test_builds_once_per_key_and_evicts_the_least_recently_used():
    built = []

    def builder(key):
        def build():
            built.append(key)
            return key * 10

        return build

    cache = LRUCache(2)
    assert cache.get_or_build(1, builder(1)) == 10
    assert cache.get_or_build(2, builder(2)) == 20
    assert cache.get_or_build(1, builder(1)) == 10  # a hit: 1 is now the most recent
    assert built == [1, 2]
    cache.get_or_build(3, builder(3))  # evicts 2, the least recently used
    assert len(cache) == 2
    assert 1 in cache and 3 in cache and 2 not in cache
    cache.get_or_build(2, builder(2))
    assert built == [1, 2, 3, 2]
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize('capacity', [0, -1, 1.5, None])
def test_capacity_must_be_a_positive_int(capacity):
    with pytest.raises(ValueError, match='capacity must be a positive int'):
        LRUCache(capacity)
