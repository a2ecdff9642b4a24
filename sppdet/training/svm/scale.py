"""The feature scale of the SVMs: one factor that makes the mean L2 norm of features 20.

R-CNN ``rcnn_feature_stats.m`` / ``rcnn_scale_features.m``: the factor is estimated on a fixed
random sample (200 random images x up to 200 random boxes) and applied to every feature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sppdet.errors import ConfigError, DataError


def sample_for_scale(
    rows_per_image: Sequence[int],
    rng: np.random.Generator,
    *,
    num_images: int = 200,
    rows_per_image_sample: int = 200,
) -> list[tuple[int, np.ndarray]]:
    """Choose the feature rows on which the feature scale is estimated.

    R-CNN ``rcnn_feature_stats.m``: ``num_images`` images drawn at random without replacement,
    and from each up to ``rows_per_image_sample`` of its boxes drawn without replacement.

    Args:
        rows_per_image: number of feature rows (boxes) of each image, in the caller's order.
        rng: a seeded generator (``numpy.random.default_rng(seed)``); the same seed gives the
            same sample.
        num_images: how many images to sample (all of them when there are fewer).
        rows_per_image_sample: how many rows to sample per image (all when there are fewer).

    Returns:
        A list of ``(image_position, row_indices)`` ordered by image position, with
        ``row_indices`` a sorted int64 array; images with no rows are left out.
    """
    counts = np.asarray(rows_per_image, dtype=np.int64).reshape(-1)
    if np.any(counts < 0):
        raise DataError(f"rows_per_image must be >= 0, got a minimum of {counts.min()}")
    if num_images < 1 or rows_per_image_sample < 1:
        raise ConfigError(
            f"num_images and rows_per_image_sample must be >= 1, got {num_images} and "
            f"{rows_per_image_sample}"
        )
    chosen = rng.choice(counts.size, size=min(num_images, counts.size), replace=False)
    sample = []
    for position in np.sort(chosen):
        n = int(counts[position])
        if n == 0:
            continue
        rows = rng.choice(n, size=min(rows_per_image_sample, n), replace=False)
        sample.append((int(position), np.sort(rows).astype(np.int64)))
    return sample


def estimate_feature_scale(features: np.ndarray, *, target_norm: float = 20.0) -> float:
    """Scale factor that makes the mean L2 norm of ``features`` equal ``target_norm``.

    R-CNN ``rcnn_scale_features.m`` multiplies every feature by ``target_norm / mean_norm``
    (target 20), with ``mean_norm`` measured on a fixed sample (:func:`sample_for_scale`).

    Args:
        features: ``[N, D]`` float array, the sampled feature rows.
        target_norm: the mean L2 norm the scaled features should have.

    Returns:
        The factor (a Python float) to multiply features by.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise DataError(f"features must be a 2-D array [N, D], got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError("cannot estimate the feature scale from 0 feature rows")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise DataError(f"features contain NaN or infinite values (rows {bad[:10].tolist()})")
    return feature_scale_from_norms(
        np.linalg.norm(x.astype(np.float64), axis=1), target_norm=target_norm
    )


def feature_scale_from_norms(norms: np.ndarray, *, target_norm: float = 20.0) -> float:
    """:func:`estimate_feature_scale` from the rows' L2 norms alone.

    For callers that compute the sample's features image by image and keep only their norms
    (``[N]`` float, ``numpy.linalg.norm(features, axis=1)``), so the sample never has to be
    held in memory.
    """
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if not (math.isfinite(target_norm) and target_norm > 0):
        raise ConfigError(f"target_norm must be a positive number, got {target_norm}")
    if norms.size == 0:
        raise DataError("cannot estimate the feature scale from 0 feature rows")
    if not np.all(np.isfinite(norms)) or np.any(norms < 0):
        raise DataError("feature norms must be finite and >= 0")
    mean_norm = float(norms.mean())
    if mean_norm == 0.0:
        raise DataError("all sampled feature rows are zero; the feature scale is undefined")
    return target_norm / mean_norm
