"""A shared negatives stream built from tests/training/svm/toy_svm_data.py's per-class toy streams.

Each image's shared features are the per-class toy negatives stacked class after class, with
one mask per class selecting its block, so each class sees exactly the rows (and identities)
that its own toy stream gives it. Module-level, so joblib workers can import it.
"""

from __future__ import annotations

import numpy as np

from sppdet.training.svm.inputs import SharedImageNegatives

from tests.training.svm.toy_svm_data import toy_negatives

CLASSES = ("cat", "dog", "bird")


def per_class_negatives(class_name: str):
    """The per-class stream with the identities the shared stream gives the same rows."""
    offset = CLASSES.index(class_name) * 1000
    for item in toy_negatives(class_name):
        n = item.features.shape[0]
        yield item._replace(proposal_index=offset + np.arange(n))


def shared_negatives(group: list[str]):
    streams = [(name, toy_negatives(name)) for name in CLASSES]
    for items in zip(*(stream for _, stream in streams)):
        features = np.concatenate([item.features for item in items])
        index = np.concatenate([CLASSES.index(name) * 1000 + np.arange(item.features.shape[0])
                                for (name, _), item in zip(streams, items)])
        masks = {}
        start = 0
        for (name, _), item in zip(streams, items):
            mask = np.zeros(features.shape[0], dtype=bool)
            mask[start:start + item.features.shape[0]] = True
            start += item.features.shape[0]
            if name in group:
                masks[name] = mask
        yield SharedImageNegatives(items[0].image_id, features, masks, index)
