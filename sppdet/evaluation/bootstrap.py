"""Paired image bootstrap of a class's VOC AP: how often one set of detections beats another.

A validation split of 25-60 objects per class makes a class's AP noisy: one image more or
less can move it by several points. Resampling the *images* (with replacement, as many as
there are) and recomputing the AP of two sets of detections of the same images on the same
resamples (*paired*) says how often the one beats the other, which the AP difference on the
split alone does not. No library bootstraps the devkit's AP over images, so it is written
here, vectorised over the resamples.

A resample is a vector of multiplicities ``w`` over the images (``w[i]`` copies of image
``i``, summing to the number of images). Evaluating a split in which image ``i`` appears
``w[i]`` times needs no new matching: every copy of an image matches its detections in the
same way, so each detection of :class:`~sppdet.evaluation.records.DetectionMatches` (already
in score order) simply counts ``w[image]`` times in the cumulative true and false positives,
and ``npos`` is ``sum(w * positives_per_image)``. The AP is then the devkit's
(:func:`~sppdet.evaluation.voc_ap.voc07_11point_ap`, :func:`~sppdet.evaluation.voc_ap.area_ap`)
on that weighted curve, read at its true positives only (the points the AP depends on), so
the arrays are ``[resamples, true positives]``, not ``[resamples, detections]``.

For ``w`` all ones this is exactly (bit for bit) the AP of
:func:`~sppdet.evaluation.voc_ap.evaluate_class`. With an image repeated, the literal
duplicate would sort each copied detection right after its original (distinct scores): the
point between them is dominated by the next one (a true positive: higher recall and precision)
or by the previous one (a false positive: same recall, higher precision), so the AP is the
same: exactly for ``11point``, to rounding for ``area`` (two recall steps summed instead of
one). Among equal scores of different images the weighted curve counts each detection's
copies at once, where a literal duplicate puts them in input order: there the devkit's AP
itself depends on an order that means nothing.

Undefined resamples: a resample that draws no image with a (non-difficult) object of the
class has ``npos == 0`` and no AP, as a split without objects has none in
:func:`~sppdet.evaluation.voc_ap.evaluate_class`; :func:`bootstrap_ap` gives NaN there and
:func:`win_fraction` leaves those resamples out (they say nothing about either setting). A
resample with objects but without a true positive drawn has AP 0, as ``evaluate_class``
gives (also where nothing at all is counted, which makes the devkit's AP NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from sppdet.errors import ConfigError
from sppdet.evaluation.records import DetectionMatches, ImageGroundTruth
from sppdet.evaluation.voc_ap import METRICS, VOC07_RECALL_THRESHOLDS

__all__ = ["bootstrap_ap", "positives_per_image", "resample_weights", "win_fraction"]

# Elements of one [resamples, true positives] or [resamples, images] array per chunk (8 MB
# of float64): a chunk needs a few such arrays, so even a VOC-sized split stays under 100 MB.
_CHUNK_ELEMENTS = 1 << 20


def resample_weights(n_images: int, resamples: int,
                     seed: int | np.random.Generator = 0) -> np.ndarray:
    """Bootstrap multiplicities: int64 ``[resamples, n_images]``, each row summing to
    ``n_images`` (``n_images`` draws with replacement, uniform over the images).

    Args:
        n_images: images of the split.
        resamples: rows to draw.
        seed: ``np.random.default_rng``'s seed, or a generator to draw from.
    """
    if n_images < 0 or resamples < 0:
        raise ConfigError(f"need n_images >= 0 and resamples >= 0, got {n_images}, {resamples}")
    if n_images == 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images),
                           size=resamples).astype(np.int64)


def positives_per_image(ground_truth: Sequence[ImageGroundTruth],
                        class_index: int) -> np.ndarray:
    """int64 ``[n_images]``: each image's non-difficult objects of the class (the devkit's
    ``npos`` is their sum)."""
    return np.array([int(np.count_nonzero((g.labels == class_index) & ~g.difficult))
                     for g in ground_truth], dtype=np.int64)


def bootstrap_ap(matches: DetectionMatches | None, positives: np.ndarray,
                 weights: np.ndarray, metric: str = "11point") -> np.ndarray:
    """The class's devkit AP in each resample: float64 ``[B]`` (NaN where ``npos`` is 0).

    Args:
        matches: the class's assignment (``ClassResult.matches`` of
            :func:`~sppdet.evaluation.voc_ap.evaluate_class` on the split); ``None`` or empty:
            no detections (AP 0 where the resample has objects).
        positives: int ``[n_images]`` from :func:`positives_per_image`.
        weights: int ``[B, n_images]`` multiplicities (:func:`resample_weights`; any
            non-negative integers, e.g. all ones for the split itself).
        metric: ``11point`` (VOC2007) or ``area`` (VOC2010+).
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    weights = np.asarray(weights)
    positives = np.asarray(positives, dtype=np.int64)
    if weights.ndim != 2 or weights.shape[1] != positives.shape[0]:
        raise ConfigError(f"weights must be [resamples, {positives.shape[0]}] (one column per "
                          f"image), got {weights.shape}")
    # whole numbers in float64: every sum below is exact (far below 2**53), so the curve's
    # counts are the devkit's, and matrix products can use BLAS
    weights = weights.astype(np.float64)
    npos = weights @ positives.astype(np.float64)
    out = np.zeros(weights.shape[0], dtype=np.float64)
    if matches is not None and np.any(matches.true_positive):
        tp_image, fp_counts = _curve_counts(matches, positives.shape[0])
        chunk = max(1, _CHUNK_ELEMENTS // max(tp_image.shape[0], weights.shape[1]))
        for start in range(0, weights.shape[0], chunk):
            rows = slice(start, start + chunk)
            out[rows] = _weighted_ap(weights[rows], npos[rows], tp_image, fp_counts, metric)
    # without a true positive every resample's AP is 0, as evaluate_class gives (the
    # devkit: 0, or NaN when no detection is counted at all)
    out[npos == 0] = np.nan
    return out


def _curve_counts(matches: DetectionMatches,
                  n_images: int) -> tuple[np.ndarray, sparse.csr_matrix]:
    """What the weighted curve needs of the detections, at the true positives only.

    The 11-point and the area AP only read the curve at its true positives: a point after a
    false positive has the recall of the last true positive before it and a lower precision
    (or recall 0, which counts only when no true positive is drawn at all: AP 0), so it never
    is the maximum precision beyond a recall, and recall only changes at true positives.
    Ignored detections change neither count.

    Returns:
        tp_image: int64 ``[T]``, the image of each true positive, in score order.
        fp_counts: sparse float64 ``[T, n_images]``: false positives of each image ranked
            after true positive ``k - 1`` and before true positive ``k`` (row ``k``); sparse,
            as it holds at most one entry per false positive while ``T * n_images`` grows
            with the square of a split's size.
    """
    tp, fp = matches.true_positive, matches.false_positive
    tp_image = matches.image_index[tp]
    # a false positive with s true positives above it counts from the curve's point s on
    before = (np.cumsum(tp) - tp)[fp]
    keep = before < tp_image.shape[0]  # after the last true positive: read at no point
    fp_counts = sparse.csr_matrix(
        (np.ones(int(keep.sum())), (before[keep], matches.image_index[fp][keep])),
        shape=(tp_image.shape[0], n_images))  # duplicates are summed
    return tp_image, fp_counts


def _weighted_ap(weights: np.ndarray, npos: np.ndarray, tp_image: np.ndarray,
                 fp_counts: sparse.csr_matrix, metric: str) -> np.ndarray:
    """AP of ``[b]`` resamples (``weights`` float ``[b, n_images]``, ``npos`` ``[b]``; rows
    without positives are the caller's to overwrite) from :func:`_curve_counts`' arrays, with
    the devkit's arithmetic: all-ones weights reproduce its AP bit for bit."""
    tp_cum = np.cumsum(weights[:, tp_image], axis=1)  # [b, T]
    fp_cum = np.cumsum(np.asarray(fp_counts @ weights.T).T, axis=1)  # [b, T]
    counted = tp_cum + fp_cum
    precision = np.full(tp_cum.shape, np.nan)
    np.divide(tp_cum, counted, out=precision, where=counted > 0)
    recall = np.zeros(tp_cum.shape)
    np.divide(tp_cum, npos[:, None], out=recall, where=npos[:, None] > 0)
    if metric == "11point":
        ap = _voc07_11point(recall, precision)
        # no true positive drawn: the devkit's curve is 0 or NaN (nothing counted) at every
        # point, here NaN; its AP is 0 (evaluate_class's, where the devkit's is NaN)
        ap[tp_cum[:, -1] == 0] = 0.0
        return ap
    return _area(recall, precision)


def _voc07_11point(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """:func:`~sppdet.evaluation.voc_ap.voc07_11point_ap` of each row of ``[b, D]`` curves.

    Recall never falls along a row, so the points with ``recall >= t`` are a suffix, and
    their NaN-skipping maximum is the suffix maximum at its first point.
    """
    b, n_det = recall.shape
    suffix_max = np.fmax.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(b)
    ap = np.zeros(b)
    for threshold in VOC07_RECALL_THRESHOLDS:
        first = np.count_nonzero(recall < threshold, axis=1)
        reached = first < n_det
        best = np.where(reached, suffix_max[rows, np.minimum(first, n_det - 1)], 0.0)
        ap = ap + best / 11  # the devkit's order of accumulation
    return ap


def _area(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """:func:`~sppdet.evaluation.voc_ap.area_ap` of each row of ``[b, D]`` curves."""
    b = recall.shape[0]
    mrec = np.concatenate([np.zeros((b, 1)), recall, np.ones((b, 1))], axis=1)
    mpre = np.concatenate([np.zeros((b, 1)), precision, np.zeros((b, 1))], axis=1)
    mpre = np.fmax.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    changes = mrec[:, 1:] != mrec[:, :-1]
    terms = (mrec[:, 1:] - mrec[:, :-1]) * mpre[:, 1:]
    # area_ap sums only the terms where recall changes, with np.sum's pairwise grouping,
    # which zeros in between would alter in the last bits: sum the rows with the same number
    # of changes as one [rows, k] array (a row sum along the last axis is np.sum of the row)
    counts = np.count_nonzero(changes, axis=1)
    ap = np.zeros(b)
    for k in np.unique(counts):
        rows = np.flatnonzero(counts == k)
        ap[rows] = terms[rows][changes[rows]].reshape(rows.shape[0], int(k)).sum(axis=1)
    return ap


def win_fraction(ap: np.ndarray, baseline: np.ndarray, tolerance: float = 0.0) -> float | None:
    """The share of resamples in which ``ap`` beats ``baseline`` by more than ``tolerance``.

    Args:
        ap, baseline: float ``[B]`` from :func:`bootstrap_ap` on the same weights (paired).
        tolerance: a difference up to this is a tie (a tie is not a win).

    Returns:
        The share among the resamples where both are defined (``npos > 0``); ``None`` when
        none is.
    """
    ap, baseline = np.asarray(ap, np.float64), np.asarray(baseline, np.float64)
    defined = ~(np.isnan(ap) | np.isnan(baseline))
    if not defined.any():
        return None
    return float(np.mean(ap[defined] > baseline[defined] + tolerance))
