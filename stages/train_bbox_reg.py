"""Stage ``train-bbox-reg``: one ridge box regressor per class on pool5 features (REFERENCE.md 7).

Inputs: the split's proposals (``propose``) and conv5 cache (``cache-features``). Output:
``models/<name>/bbox_reg.npz`` (:meth:`sppdet.training.bbox_regression.BBoxRegressor.save`) with its
record.

Training windows: the proposals and the ground-truth boxes of each image whose best-matching
ground truth (any class) overlaps them by IoU > ``min_iou`` (SPP-net: 0.5), with that box's
class and targets (R-CNN appendix C). Features: SPP at the window's best scale (pool5), scaled
to mean norm 20 (measured on 200 random images x 200 random proposals, fixed by the seed).
Only the selected windows are pooled; they are kept on disk class by class while the pass runs
(a temporary file next to the output), so memory holds one class at a time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.records import Record
from sppdet.training.bbox_regression import BBoxRegressor
from sppdet.training.box_targets import paired_iou
from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError, DataError
from sppdet.progress import get_logger
from sppdet.training.windows import RegressionWindowStore, collect_regression_windows
from sppdet.devices import resolve_device
from sppdet.features.window_features import WindowFeaturizer

from .common import ClassStats, PerClassSummary, dataset_params, format_seconds
from .runner import StageOutput
from .training_inputs import (InputPaths, image_truth, open_inputs, sample_norms,
                              scale_from_norms, scale_params, scale_sample)

log = get_logger("train_bbox_reg")
STAGE = "train-bbox-reg"
STAGE_VERSION = 1
OUTPUT_NAME = "bbox_reg.npz"


@dataclass(kw_only=True)
class ClassRegStats(ClassStats):
    """One class's regressor, as the summary shows it.

    ``iou_before`` / ``iou_after``: mean IoU of the training windows with their ground truth
    before and after applying the regressor (a check that it learnt to move boxes).
    """

    windows: int = 0
    iou_before: float = 0.0
    iou_after: float = 0.0


@dataclass(kw_only=True)
class TrainBBoxRegSummary(PerClassSummary):
    """What a train-bbox-reg run did; ``classes`` hold :class:`ClassRegStats`."""

    windows: int = 0
    pool_seconds: float = 0.0
    solve_seconds: float = 0.0

    def to_text(self) -> str:
        if self.up_to_date:
            return f"Box regressors are up to date: {self.path}"
        lines = [self.head_line("Box regressors", "pool5")]
        lines += self.class_table(
            "windows  mean IoU before -> after (training windows)",
            lambda c: f"{c.windows:>7}  {c.iou_before:.3f} -> {c.iou_after:.3f}",
            lambda c: f"{c.windows:>7}")
        lines.append(self.inputs_line(f"{self.windows} training windows"))
        lines.append(f"  time {format_seconds(self.seconds)}: pooling {self.pool_seconds:.1f} s, "
                     f"solving {self.solve_seconds:.1f} s, on {self.device}")
        lines += self.skipped_line("without a regressor keep their boxes")
        return "\n".join(lines)

    def to_record(self) -> dict[str, Any]:
        return {
            **self.record_fields(), "windows": self.windows,
            "seconds": {"total": self.seconds, "pool": self.pool_seconds,
                        "solve": self.solve_seconds},
        }


def run(dataset: str | Path, split: str, out: Path, *, proposals: Path, features: Path,
        min_iou: float = 0.5, lambda_: float = 4000.0, whiten: bool = True, seed: int = 0,
        device: str = "auto", max_bytes_in_memory: int = 1 << 30,
        force: bool = False) -> TrainBBoxRegSummary:
    """Train the per-class box regressors and write ``out`` (``bbox_reg.npz``).

    Args:
        dataset: VOC-layout dataset folder.
        split: the training split.
        out: the artifact path.
        proposals: the split's proposals artifact.
        features: the split's conv5 features artifact.
        min_iou: a window trains the regressor if its IoU with its ground truth is above this
            (SPP-net 0.5; R-CNN 0.6).
        lambda_: ridge penalty (SPP-net 4000; R-CNN 1000).
        whiten: centre and scale the targets per class (the released code does).
        seed: seed of the feature-scale sample.
        device: where pooling runs.
        max_bytes_in_memory: a class whose windows need more than this (as float64) is solved
            chunk by chunk (see :meth:`BBoxRegressor.fit_windows`).
        force: retrain even if ``out`` is up to date.
    """
    if not 0.0 <= min_iou < 1.0:
        raise ConfigError(f"min_iou must be in [0, 1), got {min_iou}")
    if not (np.isfinite(lambda_) and lambda_ >= 0):
        raise ConfigError(f"lambda must be a number >= 0, got {lambda_}")
    start = time.perf_counter()
    out = Path(out)
    data = VOCDataset(dataset, split)
    torch_device = resolve_device(device)
    cache, reader, inputs = open_inputs(
        data, InputPaths(Path(proposals), Path(features), None), device=torch_device)
    try:
        params = {"data": dataset_params(data), "classes": list(data.classes),
                  "layer": "pool5", "min_iou": min_iou, "lambda": lambda_, "whiten": whiten,
                  "include_gt": True, "seed": seed, "feature_scale": scale_params()}
        output = StageOutput(out, Record(STAGE, params, inputs=inputs,
                                         stage_version=STAGE_VERSION), force=force)
        if output.is_current():
            return TrainBBoxRegSummary(path=out, up_to_date=True)
        with output.writing():
            log.info("train-bbox-reg: %s split %s, pool5 features from %s, proposals %s -> %s",
                     data.root, split, cache.path, reader.path, out)
            summary = TrainBBoxRegSummary(path=out, device=str(torch_device))
            featurizer = WindowFeaturizer(cache, None, "pool5")
            norms = sample_norms(featurizer, scale_sample(reader, data.image_ids, seed))
            feature_scale = scale_from_norms(norms, "pool5")
            summary.feature_scale = feature_scale
            # float16 maps pool to float16-exact values: storing them as float16 is lossless.
            dtype = np.float16 if str(cache.record.params.get("dtype")) == "float16" \
                else np.float32
            tmp_path = out.with_name(f".{out.name}.windows.{os.getpid()}.h5")
            with RegressionWindowStore(tmp_path, featurizer.dim, feature_dtype=dtype) as store:
                stats = collect_regression_windows(featurizer, reader, image_truth(data),
                                                   data.classes, store)
                summary.images = stats["images"]
                summary.proposals = stats["proposals"]
                summary.windows = stats["windows"]
                summary.pool_seconds = featurizer.times.pool_seconds
                solve_start = time.perf_counter()
                model = BBoxRegressor(lambda_=lambda_, min_iou=min_iou, whiten=whiten)
                model.fit_windows(store, data.classes, feature_scale=feature_scale,
                                  max_bytes_in_memory=max_bytes_in_memory)
                summary.solve_seconds = time.perf_counter() - solve_start
                summary.classes = _class_stats(model, store, data.classes)
            if not model.classes_:
                reasons = "; ".join(f"{n}: {why}" for n, why in model.skipped_.items())
                raise DataError(f"no class has a training window ({reasons}); nothing written")
            summary.seconds = time.perf_counter() - start
            output.commit(lambda tmp: model.save(tmp, list(data.classes)),
                          summary=summary.to_record())
            log.debug("%s", summary.to_text())
        return summary
    finally:
        cache.close()
        reader.close()


def _class_stats(model: BBoxRegressor, store: RegressionWindowStore,
                 classes: tuple[str, ...]) -> list[ClassRegStats]:
    """Per class: windows, and the mean IoU of its training windows before / after."""
    counts = store.counts()
    out = []
    for name in classes:
        stats = ClassRegStats(name=name, windows=int(counts.get(name, 0)))
        if name in model.skipped_:
            stats.skipped = model.skipped_[name]
        else:
            before, after = [], []
            for features, proposals, gt_boxes in store.chunks(name):
                before.append(paired_iou(proposals, gt_boxes))
                after.append(paired_iou(model.predict(name, features, proposals), gt_boxes))
            stats.iou_before = float(np.concatenate(before).mean())
            stats.iou_after = float(np.concatenate(after).mean())
            log.info("class %r: %d windows, mean IoU %.3f -> %.3f", name, stats.windows,
                     stats.iou_before, stats.iou_after)
        out.append(stats)
    return out
