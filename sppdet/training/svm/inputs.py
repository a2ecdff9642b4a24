"""The negatives an SVM trainer consumes, one image at a time, and their validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from sppdet.errors import DataError


class ImageNegatives(NamedTuple):
    """One image's candidate negatives for one class, as the mining loop consumes them.

    Attributes:
        image_id: the image's id (used in error messages and in the identity of a negative).
        features: ``[n, D]`` raw (unscaled) features of the image's negatives: proposals with
            IoU < 0.3 to every ground-truth box of the class, feature-map duplicates removed
            (:func:`unique_window_indices`).
        proposal_index: ``[n]`` int, each row's index in the image's proposal list; a negative's
            identity is ``(image_id, proposal_index)``. None means ``0 .. n-1``.
    """

    image_id: str
    features: np.ndarray
    proposal_index: np.ndarray | None = None


class SharedImageNegatives(NamedTuple):
    """One image's candidate negatives for several classes, with their features computed once.

    Attributes:
        image_id: the image's id.
        features: ``[n, D]`` raw features of the image's candidate windows (the union of every
            class's negatives, feature-map duplicates removed).
        negative_masks: class name -> bool ``[n]``, which rows are negatives of that class
            (IoU < 0.3 with every ground-truth box of the class). A class missing here has no
            negative in this image.
        proposal_index: ``[n]`` int, each row's index in the image's proposal list (a
            negative's identity); None means ``0 .. n-1``.
    """

    image_id: str
    features: np.ndarray
    negative_masks: Mapping[str, np.ndarray]
    proposal_index: np.ndarray | None = None


def check_features(x: Any, what: str, dim: int | None = None) -> np.ndarray:
    """A 2-D float array of finite values, or a DataError that names ``what``."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a 2-D feature array [n, D], got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DataError(f"{what}: expected {dim} feature columns, got {arr.shape[1]}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"{what}: features contain NaN or infinite values in {bad.size} row(s) "
            f"(first rows {bad[:10].tolist()}); rerun the feature step for it"
        )
    return arr


def unpack_negatives(item: Any, dim: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Validate one image's negatives: ``(image_id, features [n, D], proposal_index [n])``."""
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise DataError(
            "each negatives item must be ImageNegatives(image_id, features[, proposal_index]), "
            f"got {type(item).__name__}"
        )
    image_id = str(item[0])
    features = check_features(item[1], f"negatives of image {image_id!r}", dim)
    proposal_index = item[2] if len(item) == 3 else None
    n = features.shape[0]
    if proposal_index is None:
        return image_id, features, np.arange(n, dtype=np.int64)
    index = np.asarray(proposal_index)
    if index.shape != (n,) or (n and not np.issubdtype(index.dtype, np.integer)):
        raise DataError(
            f"negatives of image {image_id!r}: proposal_index must be {n} integers, got shape "
            f"{index.shape} of {index.dtype}"
        )
    index = index.astype(np.int64)
    if np.unique(index).size != n:
        raise DataError(f"negatives of image {image_id!r}: proposal_index has repeated entries")
    return image_id, features, index
