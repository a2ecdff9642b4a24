"""The windows that train the SVMs and the box regressors, and their features.

What the ``train-svm`` and ``train-bbox-reg`` stages feed the learners (REFERENCE.md sections
6 and 7; R-CNN ``rcnn_train.m``, SPP-net ``spp_train.m`` and ``spp_train_bbox_regressor.m``):

- positives of a class: its ground-truth boxes (:func:`collect_positives`);
- negatives of a class in an image: proposals with IoU < 0.3 to every ground-truth box of the
  class (:func:`negative_masks`), windows with the same feature-map footprint kept once
  (:func:`sppdet.training.svm.window_selection.unique_window_indices` on
  :func:`sppdet.features.window_features.window_cells`);
  :class:`SharedNegativeStream` yields them image by image for all classes at once;
- box-regression windows: proposals and ground-truth boxes whose best-matching ground truth
  overlaps them by IoU > ``min_iou`` (:func:`sppdet.training.box_targets.select_training_windows`),
  collected class by class on disk (:class:`RegressionWindowStore`) so memory holds one class.

Features come from :class:`sppdet.features.window_features.WindowFeaturizer` (SPP at the best scale,
then fc6/fc7).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from sppdet.io.closing import Closing
from sppdet.io.item_store import ItemReader
from sppdet.training.box_targets import select_training_windows
from sppdet.ops.boxes import box_iou
from sppdet.errors import DataError, Remedy
from sppdet.progress import progress
from sppdet.training.svm.inputs import SharedImageNegatives
from sppdet.training.svm.window_selection import unique_window_indices
from sppdet.features.window_features import WindowFeaturizer, window_cells

PROPOSALS_STAGE = "propose"
#: Proposals that cannot be used: make them again.
REBUILD_PROPOSALS = Remedy.rerun(PROPOSALS_STAGE, force=True)

#: R-CNN / SPP-net: a proposal is a negative of a class if its IoU with every ground-truth box
#: of the class is below this.
NEGATIVE_IOU = 0.3


class ImageTruth(NamedTuple):
    """The ground truth of one image as the trainers use it.

    Attributes:
        boxes: float32 ``[G, 4]`` 0-based continuous xyxy.
        labels: int64 ``[G]`` class indices.
        difficult: bool ``[G]``.
    """

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


def read_proposals(reader: ItemReader, image_id: str) -> np.ndarray:
    """An image's proposals from a proposals artifact (stage ``propose``).

    Returns:
        float32 ``[N, 4]`` 0-based continuous xyxy boxes in original pixels (``[0, 4]`` for an
        image without proposals).

    Raises:
        ArtifactError: the image is not in the artifact.
        DataError: the boxes are not ``[N, 4]`` or hold NaN / inf.
    """
    boxes = np.asarray(reader.group(image_id)["boxes"][()], dtype=np.float32)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{reader.path}: proposals of image {image_id} have shape "
                        f"{boxes.shape}, expected [N, 4]", remedy=REBUILD_PROPOSALS)
    if not np.isfinite(boxes).all():
        raise DataError(f"{reader.path}: proposals of image {image_id} hold NaN or inf",
                        remedy=REBUILD_PROPOSALS)
    return boxes


def negative_masks(boxes_xyxy: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                   num_classes: int, *, iou_threshold: float = NEGATIVE_IOU) -> np.ndarray:
    """Which windows are negatives of each class.

    Args:
        boxes_xyxy: ``[N, 4]`` windows.
        gt_boxes: ``[G, 4]`` the image's ground-truth boxes (all of them, difficult included,
            as the released code compares with all).
        gt_labels: ``[G]`` their class indices in ``0 .. num_classes - 1``.
        num_classes: ``K``.
        iou_threshold: a window is a negative of class k if its IoU with every ground-truth
            box of class k is ``< iou_threshold``.

    Returns:
        bool ``[K, N]``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != gt.shape[0]:
        raise DataError(f"{gt.shape[0]} ground-truth boxes but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"ground-truth labels must lie in [0, {num_classes}), got "
                        f"{labels.min()}..{labels.max()}")
    masks = np.ones((num_classes, boxes.shape[0]), dtype=bool)
    if boxes.shape[0] == 0 or gt.shape[0] == 0:
        return masks
    iou = box_iou(boxes, gt)  # [N, G]
    for k in np.unique(labels):
        masks[k] = iou[:, labels == k].max(axis=1) < iou_threshold
    return masks


def collect_positives(featurizer: WindowFeaturizer, truth: Mapping[str, ImageTruth],
                      classes: Sequence[str], *, scale_windows: Mapping[str, np.ndarray]
                      | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                              dict[str, np.ndarray]]:
    """Features of every ground-truth box, grouped by class, in one pass over the images.

    Args:
        featurizer: computes the features.
        truth: image id -> :class:`ImageTruth`, in the order to visit.
        classes: class names (``labels`` index into them).
        scale_windows: image id -> ``[M, 4]`` windows of the feature-scale sample, featurized
            in the same pass; only their L2 norms are kept (the sample's features would be
            40,000 x D floats).

    Returns:
        ``(positives, difficult, norms)``: class -> float32 ``[P, D]`` features (classes
        without a box get ``[0, D]``), class -> bool ``[P]``, image id -> float64 ``[M]`` L2
        norms of the features of its sampled windows.
    """
    scale_windows = scale_windows or {}
    chunks: dict[int, list[np.ndarray]] = {k: [] for k in range(len(classes))}
    flags: dict[int, list[np.ndarray]] = {k: [] for k in range(len(classes))}
    norms: dict[str, np.ndarray] = {}
    for image_id, gt in progress(truth.items(), total=len(truth), desc="positives"):
        more = np.asarray(scale_windows.get(image_id, np.zeros((0, 4))), np.float32)
        more = more.reshape(-1, 4)
        if gt.boxes.shape[0] == 0 and more.shape[0] == 0:
            continue
        features = featurizer(image_id, np.concatenate([gt.boxes.reshape(-1, 4), more]))
        n_gt = gt.boxes.shape[0]
        for k in np.unique(gt.labels):
            rows = gt.labels == k
            chunks[int(k)].append(features[:n_gt][rows])
            flags[int(k)].append(gt.difficult[rows])
        if image_id in scale_windows:
            norms[image_id] = np.linalg.norm(features[n_gt:].astype(np.float64), axis=1)
    dim = featurizer.dim
    positives = {name: np.concatenate(chunks[k]) if chunks[k] else np.zeros((0, dim), np.float32)
                 for k, name in enumerate(classes)}
    difficult = {name: np.concatenate(flags[k]) if flags[k] else np.zeros(0, bool)
                 for k, name in enumerate(classes)}
    return positives, difficult, norms


@dataclass
class SharedNegativeStream:
    """A picklable factory of the shared negatives stream (for ``train_class_svms_shared``).

    Calling it with a group of class names gives an iterable that, on each iteration, opens
    the feature cache, the fc checkpoint and the proposals, and yields one
    :class:`~sppdet.training.svm.inputs.SharedImageNegatives` per image: the image's proposals with
    feature-map duplicates removed, restricted to those that are a negative of at least one
    class of the group, their features computed once, and a mask per class.

    Attributes:
        features_path: the features artifact (``cache-features``).
        proposals_path: the proposals artifact (``propose``).
        fc_path: the fc checkpoint, or None for ``pool5``.
        layer: ``fc7``, ``fc6`` or ``pool5``.
        classes: every class name (``ImageTruth.labels`` index into it).
        truth: image id -> :class:`ImageTruth`, in the order of the pass.
        iou_threshold: negatives have IoU below it with every box of the class.
        batch_size: windows per fc pass.
        device: where pooling and the fc layers run.
    """

    features_path: str
    proposals_path: str
    fc_path: str | None
    layer: str
    classes: tuple[str, ...]
    truth: dict[str, ImageTruth]
    iou_threshold: float = NEGATIVE_IOU
    batch_size: int = 1024
    device: str = "cpu"

    def __call__(self, group: list[str]) -> "_NegativePasses":
        return _NegativePasses(self, list(group))


@dataclass
class _NegativePasses:
    """Re-iterable passes of a :class:`SharedNegativeStream` for one group of classes.

    ``stats`` accumulates over passes: images, proposals, unique windows (distinct
    footprints), featurized windows (unique windows that are a negative of a class of the
    group), and seconds: ``pool_seconds`` (SPP), ``fc_seconds`` (fc layers) and
    ``select_seconds`` (reading proposals and conv maps, footprints, matching with the truth).
    """

    source: SharedNegativeStream
    group: list[str]
    stats: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[SharedImageNegatives]:
        src = self.source
        group_k = _group_indices(src, self.group)
        _init_stats(self.stats)
        with _OpenedInputs(src) as opened:
            for image_id, gt in progress(src.truth.items(), total=len(src.truth),
                                         desc="mining negatives"):
                yield image_negatives(src, opened, self.group, group_k, image_id, gt,
                                      self.stats)


def _group_indices(src: SharedNegativeStream, group: list[str]) -> np.ndarray:
    index = {name: k for k, name in enumerate(src.classes)}
    return np.array([index[name] for name in group], dtype=np.int64)


def _init_stats(stats: dict[str, Any]) -> None:
    for key in ("images", "proposals", "unique_windows", "featurized_windows"):
        stats.setdefault(key, 0)
    for key in ("pool_seconds", "fc_seconds", "select_seconds"):
        stats.setdefault(key, 0.0)


class _OpenedInputs(Closing):
    """The feature cache, proposals and fc layers of a :class:`SharedNegativeStream`, open."""

    def __init__(self, src: SharedNegativeStream) -> None:
        from sppdet.features.cache import FeatureCache
        from sppdet.features.fc_head import FcHead

        head = None
        if src.layer != "pool5":
            head, _ = FcHead.load(src.fc_path)
        self.cache = FeatureCache(src.features_path, device=src.device)
        try:
            self.proposals = ItemReader(src.proposals_path, made_by=PROPOSALS_STAGE)
        except BaseException:
            self.cache.close()
            raise
        self.featurizer = WindowFeaturizer(self.cache, head, src.layer,
                                           batch_size=src.batch_size)

    def close(self) -> None:
        self.cache.close()
        self.proposals.close()


def image_negatives(src: SharedNegativeStream, opened: _OpenedInputs, group: list[str],
                    group_k: np.ndarray, image_id: str, gt: ImageTruth,
                    stats: dict[str, Any]) -> SharedImageNegatives:
    """One image's item of the shared stream for the classes ``group`` (indices ``group_k``);
    adds its counts and seconds to ``stats``."""
    start = time.perf_counter()
    boxes = read_proposals(opened.proposals, image_id)
    # As the released code: windows with the same footprint are removed first
    # (the first one is kept), then the kept ones are matched with the truth.
    if boxes.shape[0]:
        cells, scale = window_cells(opened.cache, image_id, boxes)
        kept = unique_window_indices(cells, scale)
    else:
        kept = np.zeros(0, dtype=np.int64)
    masks = negative_masks(boxes[kept], gt.boxes, gt.labels, len(src.classes),
                           iou_threshold=src.iou_threshold)[group_k]
    candidates = masks.any(axis=0)
    rows = kept[candidates]
    masks = masks[:, candidates]
    stats["select_seconds"] += time.perf_counter() - start
    featurizer = opened.featurizer
    before = (featurizer.times.pool_seconds, featurizer.times.fc_seconds)
    features = featurizer(image_id, boxes[rows])
    stats["pool_seconds"] += featurizer.times.pool_seconds - before[0]
    stats["fc_seconds"] += featurizer.times.fc_seconds - before[1]
    stats["images"] += 1
    stats["proposals"] += int(boxes.shape[0])
    stats["unique_windows"] += int(kept.size)
    stats["featurized_windows"] += int(rows.size)
    return SharedImageNegatives(
        image_id=image_id,
        features=features,
        negative_masks={name: masks[j] for j, name in enumerate(group)},
        proposal_index=rows,
    )


@dataclass
class DistributedNegativeStream:
    """A :class:`SharedNegativeStream` whose images are featurized by an executor's workers.

    Each image's item (SPP pooling + fc layers of its candidate negatives) is computed by a
    task; the items come back in the images' order (computed ahead, a few per worker) to the
    miners in this process, so every class sees the same stream as with the plain stream.
    Worth it when featurizing costs more than mining (fc7 on thousands of windows per image):
    the featurization then spreads over every worker instead of being repeated per group.

    Attributes:
        source: the plain stream (paths and truth).
        executor: a :class:`sppdet.parallel.executors.Executor`.
    """

    source: SharedNegativeStream
    executor: Any

    def __call__(self, group: list[str]) -> "_DistributedPasses":
        return _DistributedPasses(self, list(group))


@dataclass
class _DistributedPasses:
    stream: DistributedNegativeStream
    group: list[str]
    stats: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[SharedImageNegatives]:
        src = self.stream.source
        bare = replace(src, truth={})  # each task carries its own image's truth only
        _init_stats(self.stats)
        items = self.stream.executor.imap(
            _negatives_task, ((bare, self.group, image_id, gt)
                              for image_id, gt in src.truth.items()))
        for item, stats in progress(items, total=len(src.truth), desc="mining negatives"):
            for key, value in stats.items():
                self.stats[key] += value
            yield item


def _negatives_task(src: SharedNegativeStream, group: list[str], image_id: str,
                    gt: ImageTruth) -> tuple[SharedImageNegatives, dict[str, Any]]:
    """Worker: one image's item of the shared stream and its stats."""
    from sppdet.parallel.executors import process_cache

    files = tuple((os.stat(p).st_ino, os.stat(p).st_mtime_ns)  # a rewritten file: a new key
                  for p in (src.features_path, src.proposals_path, src.fc_path) if p)
    opened = process_cache(("negatives", src.features_path, src.proposals_path, src.fc_path,
                            src.layer, src.batch_size, src.device, files),
                           lambda: _OpenedInputs(src))
    stats: dict[str, Any] = {}
    _init_stats(stats)
    item = image_negatives(src, opened, group, _group_indices(src, group), image_id, gt, stats)
    return item, stats


# ----------------------------------------------------------------------------------------------
# Box regression windows
# ----------------------------------------------------------------------------------------------


class RegressionWindowStore:
    """Box-regression training windows, kept on disk class by class.

    One HDF5 file with, per class, resizable datasets ``features`` ``[n, D]`` (in
    ``feature_dtype``: float16 is lossless for pool5 vectors pooled from a float16 cache, since
    max pooling only copies values), ``proposals`` ``[n, 4]`` and ``gt_boxes`` ``[n, 4]``
    (float64). The file is a temporary: the caller deletes it (or uses the context manager).

    Args:
        path: the file to create (overwritten).
        dim: feature width ``D``.
        feature_dtype: dtype the features are stored in.
    """

    def __init__(self, path: str | os.PathLike[str], dim: int, *,
                 feature_dtype: np.dtype | str = np.float32) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.feature_dtype = np.dtype(feature_dtype)
        self._file = h5py.File(self.path, "w")
        self._counts: dict[str, int] = {}

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RegressionWindowStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def counts(self) -> dict[str, int]:
        """class -> windows stored."""
        return dict(self._counts)

    def append(self, class_name: str, features: np.ndarray, proposals: np.ndarray,
               gt_boxes: np.ndarray) -> None:
        """Add ``[n, D]`` features with their ``[n, 4]`` windows and matched ground truth."""
        n = int(features.shape[0])
        if n == 0:
            return
        if features.shape != (n, self.dim) or proposals.shape != (n, 4) or \
                gt_boxes.shape != (n, 4):
            raise DataError(f"class {class_name!r}: features {features.shape}, proposals "
                            f"{proposals.shape}, gt {gt_boxes.shape} do not fit (D={self.dim})")
        group = self._file.require_group(_h5_name(class_name))
        if "features" not in group:
            row_bytes = max(1, self.dim * self.feature_dtype.itemsize)
            chunk_rows = max(1, min(1024, (1 << 20) // row_bytes))  # chunks of about 1 MiB
            group.create_dataset("features", shape=(0, self.dim), maxshape=(None, self.dim),
                                 dtype=self.feature_dtype, chunks=(chunk_rows, self.dim))
            for name in ("proposals", "gt_boxes"):
                group.create_dataset(name, shape=(0, 4), maxshape=(None, 4), dtype=np.float64,
                                     chunks=(4096, 4))
        start = self._counts.get(class_name, 0)
        for name, values in (("features", features), ("proposals", proposals),
                             ("gt_boxes", gt_boxes)):
            dataset = group[name]
            dataset.resize(start + n, axis=0)
            dataset[start:start + n] = values
        self._counts[class_name] = start + n

    def chunks(self, class_name: str, rows: int = 4096
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(features [m, D] float32, proposals [m, 4], gt [m, 4])`` of a class, ``rows`` at a
        time."""
        n = self._counts.get(class_name, 0)
        if n == 0:
            return
        group = self._file[_h5_name(class_name)]
        for first in range(0, n, rows):
            last = min(n, first + rows)
            yield (np.asarray(group["features"][first:last], dtype=np.float32),
                   group["proposals"][first:last], group["gt_boxes"][first:last])

    def load(self, class_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All windows of a class: ``(features float32 [n, D], proposals, gt)``."""
        parts = list(self.chunks(class_name, rows=1 << 30))
        if not parts:
            return (np.zeros((0, self.dim), np.float32), np.zeros((0, 4)), np.zeros((0, 4)))
        return parts[0]


def _h5_name(class_name: str) -> str:
    return "class_" + class_name.replace("/", "\\")


def collect_regression_windows(featurizer: WindowFeaturizer, proposals: ItemReader,
                               truth: Mapping[str, ImageTruth], classes: Sequence[str],
                               store: RegressionWindowStore, *, min_iou: float = 0.5,
                               include_gt: bool = True) -> dict[str, int]:
    """One pass over the images: select each image's regression windows, pool only those.

    Windows are the image's proposals (plus its ground-truth boxes with ``include_gt``, as
    R-CNN and SPP-net train on them too); each is matched to the ground-truth box it overlaps
    most (any class, difficult included) and kept if that IoU is ``> min_iou``
    (:func:`sppdet.training.box_targets.select_training_windows`). Only kept windows are pooled.

    Returns:
        image statistics: ``images``, ``proposals``, ``windows`` (kept).
    """
    stats = {"images": 0, "proposals": 0, "windows": 0}
    for image_id, gt in progress(truth.items(), total=len(truth), desc="regression windows"):
        boxes = read_proposals(proposals, image_id)
        stats["images"] += 1
        stats["proposals"] += int(boxes.shape[0])
        if gt.boxes.shape[0] == 0:
            continue
        windows = np.concatenate([boxes, gt.boxes.astype(np.float32)]) if include_gt else boxes
        # Zero-area proposals have no regression target; the trainers never use them.
        area_ok = (windows[:, 2] > windows[:, 0]) & (windows[:, 3] > windows[:, 1])
        candidates = np.flatnonzero(area_ok)
        selected = select_training_windows(windows[candidates], gt.boxes, gt.labels,
                                           min_iou=min_iou)
        if selected.index.size == 0:
            continue
        rows = candidates[selected.index]
        features = featurizer(image_id, windows[rows])
        stats["windows"] += int(rows.size)
        for k in np.unique(selected.labels):
            take = selected.labels == k
            store.append(classes[int(k)], features[take], windows[rows][take].astype(np.float64),
                         selected.gt_boxes[take].astype(np.float64))
    return stats
