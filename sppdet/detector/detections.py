"""The detections of one image: the record that NMS, model combination and evaluation share.

Boxes are sppdet's 0-based continuous ``[x1, y1, x2, y2]`` (see :mod:`sppdet.ops.boxes`); labels
are 0-based indices into the dataset's list of object classes (no background class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sppdet.errors import DataError


@dataclass
class ImageDetections:
    """Scored, labelled windows of one image.

    Attributes:
        image_id: the dataset's image id (e.g. ``"000001"``); no whitespace.
        boxes: float32 ``[N, 4]`` 0-based continuous xyxy, pixels of the original image.
        scores: float32 ``[N]``, higher is more confident (SVM margins or probabilities).
        labels: int64 ``[N]``, 0-based class indices.

    The constructor converts array-likes to these dtypes and raises :class:`DataError` when
    the shapes do not fit. ``N = 0`` is allowed.
    """

    image_id: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.image_id, str) or not self.image_id or any(
            ch.isspace() for ch in self.image_id
        ):
            raise DataError(
                f"image id must be a non-empty string without whitespace, got {self.image_id!r}"
            )
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(self.labels)
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"image {self.image_id}: labels must be integers, got dtype {labels.dtype}"
            )
        labels = labels.astype(np.int64).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataError(
                f"image {self.image_id}: boxes must have shape [N, 4], got {boxes.shape}"
            )
        if not (boxes.shape[0] == scores.shape[0] == labels.shape[0]):
            raise DataError(
                f"image {self.image_id}: boxes, scores and labels must have the same length, "
                f"got {boxes.shape[0]}, {scores.shape[0]}, {labels.shape[0]}"
            )
        if labels.size and labels.min() < 0:
            raise DataError(
                f"image {self.image_id}: labels must be >= 0, got {int(labels.min())}"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise DataError(f"image {self.image_id}: boxes and scores must be finite")
        self.boxes = boxes
        self.scores = scores
        self.labels = labels

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls, image_id: str) -> ImageDetections:
        """No detections for ``image_id`` (correctly shaped empty arrays)."""
        return cls(
            image_id,
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
        )

    def select(self, indices: np.ndarray) -> ImageDetections:
        """The detections at ``indices`` (int array or bool mask), in that order."""
        indices = np.asarray(indices)
        return ImageDetections(
            self.image_id, self.boxes[indices], self.scores[indices], self.labels[indices]
        )

    @classmethod
    def concatenate(cls, image_id: str, parts: Sequence[ImageDetections]) -> ImageDetections:
        """All detections of ``parts`` in order (parts first to last); ids must all match."""
        for part in parts:
            if part.image_id != image_id:
                raise DataError(
                    f"cannot pool detections of image {part.image_id} into image {image_id}"
                )
        if not parts:
            return cls.empty(image_id)
        return cls(
            image_id,
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
        )
