"""Image ids of the synthetic dataset and their split into train, val, trainval and test."""

from __future__ import annotations

import numpy as np

from sppdet.data.synthetic.config import DemoDataConfig

# spawn key of the split assignment's generator (images use (0, index)); see the package doc
_SPLIT_STREAM = 1


def image_id(index: int) -> str:
    """VOC2007-style id of the image with 0-based ``index``: ``0 -> "000001"``."""
    return f"{index + 1:06d}"


def split_image_ids(config: DemoDataConfig) -> dict[str, list[str]]:
    """Image ids of each split (sorted), drawn from the seed.

    Returns:
        ``{"train", "val", "trainval", "test"}`` -> sorted ids. ``train`` and ``val`` partition
        ``trainval``; ``trainval`` and ``test`` partition all ``config.n_images`` ids.
    """
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_SPLIT_STREAM,)))
    order = rng.permutation(config.n_images)
    test = np.sort(order[: config.n_test])
    trainval = np.sort(order[config.n_test :])
    n_val = int(round(config.val_fraction * len(trainval)))
    if config.val_fraction > 0 and len(trainval) >= 2:
        n_val = min(max(n_val, 1), len(trainval) - 1)
    else:
        n_val = min(n_val, len(trainval) - 1)
    val_order = rng.permutation(len(trainval))
    val = np.sort(trainval[val_order[:n_val]])
    train = np.sort(trainval[val_order[n_val:]])
    return {
        "train": [image_id(int(i)) for i in train],
        "val": [image_id(int(i)) for i in val],
        "trainval": [image_id(int(i)) for i in trainval],
        "test": [image_id(int(i)) for i in test],
    }
