"""Toy streamed SVM data for the SVM tests.

A module of its own that imports only numpy and sppdet.training.svm.inputs: joblib workers
unpickle these functions by importing this module, and should not have to load torch or scipy.
"""

from __future__ import annotations

import numpy as np

from sppdet.training.svm.inputs import ImageNegatives

DIM = 16


def _class_direction(class_name: str) -> np.ndarray:
    seed = int.from_bytes(class_name.encode(), "little") % 2**32
    return np.random.default_rng(seed).normal(size=DIM)


def toy_negatives(class_name: str, num_images: int = 12, per_image: int = 150):
    """Streamed negatives: ReLU noise shifted against the class direction (module-level, so
    that joblib workers can import it)."""
    shift = 3.0 * np.maximum(-_class_direction(class_name), 0.0)
    for i in range(num_images):
        rng = np.random.default_rng(1000 + i)
        x = np.maximum(rng.normal(size=(per_image, DIM)), 0.0) + shift
        yield ImageNegatives(f"img{i:03d}", x.astype(np.float32))


def toy_positives(class_name: str, n: int = 40) -> np.ndarray:
    shift = 3.0 * np.maximum(_class_direction(class_name), 0.0)
    rng = np.random.default_rng(7)
    return (np.maximum(rng.normal(size=(n, DIM)), 0.0) + shift).astype(np.float32)


def no_negatives(class_name: str):
    return iter([ImageNegatives("img0", np.zeros((0, DIM), np.float32))])
