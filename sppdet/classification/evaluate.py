"""Testing an SPP classifier three ways (paper 3.1.4-3.1.5, table 3) and full-image features.

* ``crop``: the centre ``crop_size`` crop of each example (stored at shorter side
  ``image_size``);
* ``full``: the whole stored example, pooled over its whole conv map;
* ``multiview``: :func:`~sppdet.classification.model.multi_view_probabilities`.

Errors are fractions of examples whose true class is not among the top ``k`` softmax scores;
ties are broken towards the lower class index (a stable sort), so a constant score vector
predicts class 0.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from sppdet.classification.augment import center_crop
from sppdet.classification.model import (
    SPPClassifier,
    ViewSettings,
    image_tensor,
    multi_view_probabilities,
)
from sppdet.classification.config import MODES  # re-exported
from sppdet.errors import ConfigError, DataError
from sppdet.progress import progress

MODE_TITLES = {
    "crop": "centre {crop} crop",
    "full": "full image (shorter side {image})",
    "multiview": "{views} views x {scales} scale(s) from one map per scale",
}


def topk_error(probabilities: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is not among the ``k`` highest scores (0.0 for no rows).

    Args:
        probabilities: ``[N, K]`` scores.
        labels: int ``[N]``.
        k: 1 for top-1, 5 for top-5; ``k >= K`` gives 0.
    """
    scores = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise DataError(f"scores [N, K] and labels [N] do not match: {scores.shape}, "
                        f"{labels.shape}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not len(labels):
        return 0.0
    # stable sort of the negated scores: ties keep the lower class index first
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(~(top == labels[:, None]).any(axis=1)))


@dataclass
class ModeResult:
    """Errors of one test mode.

    Attributes:
        mode: ``crop``, ``full`` or ``multiview``.
        title: what the mode does, in words.
        top1_error, top5_error: fractions; ``top5_error`` is None when there are 5 classes or
            fewer (it would always be 0).
        per_class_error: top-1 error of each class's examples (classes without examples left out).
        seconds: wall time of the mode.
    """

    mode: str
    title: str
    n_examples: int
    top1_error: float
    top5_error: float | None
    per_class_error: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"mode": self.mode, "title": self.title, "n_examples": self.n_examples,
                "top1_error": self.top1_error, "top5_error": self.top5_error,
                "per_class_error": self.per_class_error, "seconds": self.seconds}


@torch.no_grad()
def predict(model: SPPClassifier, images: Sequence[np.ndarray], mode: str, *,
            crop_size: int = 224, views: ViewSettings = ViewSettings(),
            device: str | torch.device = "cpu", batch_size: int = 32) -> np.ndarray:
    """Softmax scores ``[N, K]`` (float32) of ``images`` (``[h, w, 3]`` uint8 RGB) in ``mode``."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    model.eval().to(device)
    out = np.zeros((len(images), model.num_classes), dtype=np.float32)
    if mode == "multiview":
        for i in progress(range(len(images)), total=len(images), desc="multi-view"):
            out[i] = multi_view_probabilities(model, images[i], views, device=device).numpy()
        return out
    if mode == "crop":
        small = [i for i, image in enumerate(images) if min(image.shape[:2]) < crop_size]
        if small:
            raise DataError(f"example {small[0]} ({images[small[0]].shape[:2]}) is smaller than "
                            f"the {crop_size} crop")
        inputs = [center_crop(image, crop_size) for image in images]
    else:
        inputs = list(images)
    # full images differ in size: batch those of one size together
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, image in enumerate(inputs):
        by_shape[image.shape].append(i)
    batches = [rows[start:start + batch_size] for rows in by_shape.values()
               for start in range(0, len(rows), batch_size)]
    for rows in progress(batches, total=len(batches), desc=mode, unit="batch"):
        logits = model(image_tensor(model, [inputs[i] for i in rows]).to(device))
        out[rows] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return out


def evaluate_modes(model: SPPClassifier, images: Sequence[np.ndarray], labels: np.ndarray,
                   classes: Sequence[str], *, modes: Sequence[str] = MODES,
                   crop_size: int = 224, image_size: int = 256,
                   views: ViewSettings = ViewSettings(), device: str | torch.device = "cpu",
                   ) -> tuple[list[ModeResult], dict[str, np.ndarray]]:
    """Top-1/top-5 errors of each mode; also returns each mode's scores ``[N, K]``."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    if len(classes) != model.num_classes:
        raise ConfigError(f"{len(classes)} class names for a {model.num_classes}-way model")
    results, scores = [], {}
    for mode in modes:
        started = time.perf_counter()
        probabilities = predict(model, images, mode, crop_size=crop_size, views=views,
                                device=device)
        per_class = {}
        for index, name in enumerate(classes):
            rows = labels == index
            if rows.any():
                per_class[name] = topk_error(probabilities[rows], labels[rows], 1)
        title = MODE_TITLES[mode].format(crop=crop_size, image=image_size,
                                         views=views.views_per_image // len(views.scales),
                                         scales=len(views.scales))
        results.append(ModeResult(
            mode=mode, title=title, n_examples=len(labels),
            top1_error=topk_error(probabilities, labels, 1),
            top5_error=topk_error(probabilities, labels, 5) if len(classes) > 5 else None,
            per_class_error=per_class, seconds=time.perf_counter() - started))
        scores[mode] = probabilities
    return results, scores


def results_markdown(results: Sequence[ModeResult]) -> str:
    """The modes side by side as a Markdown table (errors in %)."""
    lines = ["| test | top-1 error (%) | top-5 error (%) | examples | seconds |",
             "|---|---:|---:|---:|---:|"]
    for result in results:
        top5 = "-" if result.top5_error is None else f"{100 * result.top5_error:.2f}"
        lines.append(f"| {result.title} | {100 * result.top1_error:.2f} | {top5} | "
                     f"{result.n_examples} | {result.seconds:.1f} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def image_representations(model: SPPClassifier, images: Sequence[np.ndarray], *,
                          layer: str = "spp", device: str | torch.device = "cpu"
                          ) -> np.ndarray:
    """Full-image features (paper 3.2) of each image: ``[N, D]`` float32.

    Each image is run whole (images of one size batched together); ``layer`` is ``"spp"``
    (the pooled conv5 vector), ``"fc6"`` or ``"fc7"``.
    """
    model.eval().to(device)
    out: np.ndarray | None = None
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        by_shape[image.shape].append(i)
    for rows in progress(list(by_shape.values()), desc=f"{layer} features", unit="size"):
        for start in range(0, len(rows), 16):
            chunk = rows[start:start + 16]
            features = model.representation(
                image_tensor(model, [images[i] for i in chunk]).to(device), layer)
            if out is None:
                out = np.zeros((len(images), features.shape[1]), dtype=np.float32)
            out[chunk] = features.float().cpu().numpy()
    if out is None:
        dim = {"spp": model.in_dim}.get(layer, model.hidden)
        return np.zeros((0, dim), dtype=np.float32)
    return out
