"""The fixed validation sample of fine-tuning and the metrics of a head on it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sppdet.features.cache import FeatureCache
from sppdet.features.fc_head import FcHead
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.sampling import pool_plan
from sppdet.training.finetune_windows import SplitWindows


@dataclass
class ValidationSet:
    """A fixed sample of validation windows and their pooled features.

    Attributes:
        features: float32 ``[V, D]`` on the training device.
        labels: int64 ``[V]`` on the training device.
        n_images: images the windows come from.
    """

    features: Tensor
    labels: Tensor
    n_images: int

    @property
    def n_positive(self) -> int:
        return int((self.labels > 0).sum())


def sample_validation_windows(windows: SplitWindows, *, n_windows: int, fg_fraction: float,
                              max_images: int = 0, seed: int = 0) -> np.ndarray:
    """Rows of a fixed validation sample: up to ``max_images`` images (0 = all), then
    ``round(fg_fraction * n_windows)`` positives and the rest negatives, uniformly without
    replacement (fewer when the images hold fewer). Sorted."""
    rng = np.random.default_rng([seed, 2])
    images = np.arange(windows.n_images)
    if max_images and windows.n_images > max_images:
        images = np.sort(rng.choice(windows.n_images, max_images, replace=False))
    rows = np.concatenate([np.arange(windows.starts[i], windows.starts[i + 1]) for i in images]) \
        if len(images) else np.zeros(0, np.int64)
    fg = rows[windows.labels[rows] > 0]
    bg = rows[windows.labels[rows] == 0]
    want_fg = int(round(fg_fraction * n_windows))
    n_fg = min(want_fg, len(fg))
    n_bg = min(n_windows - n_fg, len(bg))
    chosen = np.concatenate([rng.choice(fg, n_fg, replace=False),
                             rng.choice(bg, n_bg, replace=False)])
    return np.sort(chosen)


def build_validation_set(cache: FeatureCache, windows: SplitWindows, config: FinetuneConfig,
                         device: torch.device) -> ValidationSet:
    """Pool the validation sample at the best scale of each window, unmirrored (test rule)."""
    rows = sample_validation_windows(windows, n_windows=config.val_windows,
                                     fg_fraction=config.fg_fraction,
                                     max_images=config.val_images, seed=config.seed)
    features = pool_plan(cache, windows, rows, np.zeros(len(rows), bool), None,
                         levels=config.levels).to(device)
    labels = torch.from_numpy(windows.labels[rows]).to(device)
    n_images = len(np.unique(windows.image_index[rows]))
    return ValidationSet(features=features, labels=labels, n_images=n_images)


@torch.no_grad()
def evaluate(head: FcHead, val: ValidationSet, batch_size: int = 1024) -> dict[str, float]:
    """Loss and accuracies of ``head`` (eval mode) on a validation set.

    Returns:
        ``loss`` (mean softmax cross-entropy), ``accuracy`` (all windows), ``fg_accuracy``
        (positives given their own class), ``bg_accuracy`` (negatives called background);
        NaN for an accuracy over no windows.
    """
    was_training = head.training
    head.eval()
    losses, correct = [], []
    for start in range(0, len(val.labels), batch_size):
        logits = head(val.features[start:start + batch_size])
        labels = val.labels[start:start + batch_size]
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
        correct.append(logits.argmax(dim=1) == labels)
    head.train(was_training)
    if not losses:
        return {"loss": math.nan, "accuracy": math.nan, "fg_accuracy": math.nan,
                "bg_accuracy": math.nan}
    loss = torch.cat(losses)
    hits = torch.cat(correct)
    fg = val.labels > 0

    def mean(values: Tensor) -> float:
        return float(values.float().mean()) if values.numel() else math.nan

    return {"loss": mean(loss), "accuracy": mean(hits), "fg_accuracy": mean(hits[fg]),
            "bg_accuracy": mean(hits[~fg])}
