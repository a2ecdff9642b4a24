"""The decoded-map cache of FeatureCache stays within its bounds (images and bytes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError
from sppdet.features.cache import FeatureCache
from tests.fake_training_inputs import make_dataset, write_features


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-memory")
    data = VOCDataset(make_dataset(root / "data", 8), "trainval")
    return write_features(root / "features.h5", data), data.image_ids


def image_bytes(cache: FeatureCache, image_id: str) -> int:
    return sum(t.numel() * t.element_size() for t in cache.maps(image_id).values())


def test_byte_bound_holds_while_reading_every_image_twice(features):
    path, ids = features
    with FeatureCache(path) as probe:
        sizes = {i: image_bytes(probe, i) for i in ids}
    budget = 2 * max(sizes.values()) + 1  # room for two images, never three
    boxes = np.array([[0.0, 0.0, 50.0, 40.0]])
    with FeatureCache(path, max_cached_images=100, max_cached_bytes=budget) as cache:
        for image_id in ids + ids[::-1]:
            cache.pool(image_id, boxes)
            assert cache.cached_bytes <= budget
            assert 1 <= cache.cached_images <= 2
            # the count of bytes is the bytes of what is held
            held = sum(t.numel() * t.element_size()
                       for maps in cache._cache.values() for t in maps.values())
            assert cache.cached_bytes == held
        assert cache.cached_images == 2


def test_image_bound_holds_and_lru_order(features):
    path, ids = features
    with FeatureCache(path, max_cached_images=3) as cache:
        for image_id in ids[:3]:
            cache.maps(image_id)
        cache.maps(ids[0])  # most recent now: ids[1] is the least recently used
        cache.maps(ids[3])
        assert cache.cached_images == 3
        assert list(cache._cache) == [(ids[2], False), (ids[0], False), (ids[3], False)]


def test_one_image_larger_than_the_budget_is_still_served(features):
    path, ids = features
    with FeatureCache(path, max_cached_bytes=1) as cache:
        first = cache.maps(ids[0])
        assert cache.cached_images == 1
        second = cache.maps(ids[1])
        assert cache.cached_images == 1 and cache.cached_bytes == image_bytes(cache, ids[1])
        assert all(torch.isfinite(t).all() for t in (*first.values(), *second.values()))


def test_an_empty_budget_is_refused(features):
    path, _ = features
    with pytest.raises(ConfigError, match="at least one image"):
        FeatureCache(path, max_cached_bytes=0)
