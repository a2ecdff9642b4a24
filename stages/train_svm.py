"""Stage ``train-svm``: one linear SVM per class with hard-negative mining (REFERENCE.md 6).

Inputs: the split's proposals (``propose``), its conv5 cache (``cache-features``) and, for fc6
and fc7 features, the fine-tuned fc layers (``finetune``). Output: ``models/<name>/svm.npz``
(:class:`sppdet.training.svm.weights.SVMWeights`: weights ``[K, D]``, bias ``[K]``, trained mask,
feature_scale, layer, classes) with its record.

A window's feature is SPP at its best scale (the test-time rule), then fc6/fc7. Three steps:

1. one pass over the images for the ground-truth boxes (positives) and the feature-scale
   sample (200 random images x 200 random proposals, fixed by the seed; mean norm 20);
2. one pass over the images in which each image's negative candidates (proposals with IoU < 0.3
   to every box of a class, feature-map duplicates removed) are featurized once and fed to
   every class's hard-negative miner
   (:func:`sppdet.training.svm.shared.train_class_svms_shared`); with ``jobs > 1`` the
   classes are split into that many groups, each making its own pass;
3. writing the weights and the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sppdet.io.records import Record
from sppdet.data.voc import VOCDataset
from sppdet.errors import YOUR_CHOICE, ConfigError, DataError, Remedy
from sppdet.features.fc_head import LAYERS
from sppdet.parallel.executors import Executor
from sppdet.progress import get_logger
from sppdet.training.svm.estimator import HardNegativeSVM
from sppdet.training.svm.shared import train_class_svms_shared
from sppdet.training.svm.weights import SVMWeights
from sppdet.training.windows import (NEGATIVE_IOU, DistributedNegativeStream,
                                     SharedNegativeStream, collect_positives)
from sppdet.devices import resolve_device
from sppdet.features.window_features import WindowFeaturizer

from .common import (ClassStats, PerClassSummary, dataset_params, engine_line,
                     format_seconds)
from .runner import StageOutput
from .training_inputs import (InputPaths, image_truth, load_fc, open_inputs,
                              scale_from_norms, scale_params, scale_sample)

log = get_logger("train_svm")
STAGE = "train-svm"
STAGE_VERSION = 1
OUTPUT_NAME = "svm.npz"


@dataclass(kw_only=True)
class ClassSvmStats(ClassStats):
    """One class's training, as the summary shows it."""

    positives: int = 0
    negatives_cached: int = 0
    retrainings: int = 0
    objective: float = 0.0
    solver_seconds: float = 0.0
    mining_seconds: float = 0.0


@dataclass(kw_only=True)
class TrainSvmSummary(PerClassSummary):
    """What a train-svm run did (printed at the end, stored in the record's summary);
    ``classes`` hold :class:`ClassSvmStats`."""

    layer: str
    unique_windows: int = 0
    featurized_windows: int = 0
    jobs: int = 1
    positives_pool_seconds: float = 0.0
    positives_fc_seconds: float = 0.0
    positives_seconds: float = 0.0
    mining_pool_seconds: float = 0.0
    mining_fc_seconds: float = 0.0
    mining_select_seconds: float = 0.0
    mining_seconds: float = 0.0
    solver_seconds: float = 0.0
    engine: str = ""
    reruns: int = 0

    def to_text(self) -> str:
        if self.up_to_date:
            return f"SVMs are up to date: {self.path}"
        lines = [self.head_line("SVMs", self.layer)]
        lines += self.class_table(
            "positives  negatives cached  retrainings  objective  solver s  mining s",
            lambda c: f"{c.positives:>9}  {c.negatives_cached:>16}  {c.retrainings:>11}  "
                      f"{c.objective:>9.4f}  {c.solver_seconds:>8.1f}  {c.mining_seconds:>8.1f}",
            lambda c: f"{c.positives:>9}")
        lines.append(self.inputs_line(f"{self.unique_windows} distinct footprints, "
                                      f"{self.featurized_windows} windows featurized for mining"))
        lines.append(
            f"  time {format_seconds(self.seconds)}: positives + scale sample "
            f"{format_seconds(self.positives_seconds)} (pool {self.positives_pool_seconds:.1f} "
            f"s, fc {self.positives_fc_seconds:.1f} s); mining pass "
            f"{format_seconds(self.mining_seconds)} (pool {self.mining_pool_seconds:.1f} s, fc "
            f"{self.mining_fc_seconds:.1f} s, proposals/maps/matching "
            f"{self.mining_select_seconds:.1f} s, solver {self.solver_seconds:.1f} s); "
            f"{self.jobs} worker(s) on {self.device}")
        if self.engine:
            lines.append(engine_line(self.engine, self.reruns))
        lines += self.skipped_line("without an SVM get no detections")
        return "\n".join(lines)

    def to_record(self) -> dict[str, Any]:
        return {
            **self.record_fields(), "unique_windows": self.unique_windows,
            "featurized_windows": self.featurized_windows, "jobs": self.jobs,
            "seconds": {"total": self.seconds, "positives": self.positives_seconds,
                        "positives_pool": self.positives_pool_seconds,
                        "positives_fc": self.positives_fc_seconds,
                        "mining": self.mining_seconds, "mining_pool": self.mining_pool_seconds,
                        "mining_fc": self.mining_fc_seconds,
                        "mining_select": self.mining_select_seconds,
                        "solver": self.solver_seconds},
        }


def run(dataset: str | Path, split: str, out: Path, *, proposals: Path, features: Path,
        fc: Path | None, layer: str = "fc7", jobs: int = 1, seed: int = 0, C: float = 1e-3,
        positive_weight: float = 2.0, bias_feature: float = 10.0,
        include_difficult: bool = True, max_cached_negatives: int = 100_000,
        device: str = "auto", batch_size: int = 1024, force: bool = False,
        executor: Executor | None = None, mining: str = "images") -> TrainSvmSummary:
    """Train the per-class SVMs and write ``out`` (``svm.npz``) with its record.

    Args:
        dataset: VOC-layout dataset folder (the ground truth).
        split: the training split.
        out: the artifact path.
        proposals: the split's proposals artifact.
        features: the split's conv5 features artifact.
        fc: the fc checkpoint (``fc.pt``); required for ``fc6`` / ``fc7``, unused for pool5.
        layer: ``fc7`` (default, the paper's), ``fc6`` or ``pool5``.
        jobs: worker processes; the classes are split into that many groups and each group's
            worker computes the features once per image for its classes.
        seed: seed of the feature-scale sample.
        C, positive_weight, bias_feature: liblinear's settings (R-CNN: 1e-3, 2, 10).
        include_difficult: train on difficult ground-truth boxes too (the released code does).
        max_cached_negatives: cap of each class's negative cache.
        device: where pooling and the fc layers run (``auto``, ``cpu``, ``cuda[:N]``).
        batch_size: windows per fc forward pass.
        force: retrain even if ``out`` is up to date.
        executor: where the mining runs (e.g. a Dask cluster) instead of ``jobs`` processes.
        mining: with an executor, ``images`` (the workers featurize the images, the miners of
            every class run in this process) or ``classes`` (each worker mines a group of
            classes, featurizing every image itself).

    Raises:
        ConfigError: bad options. ArtifactMissingError: an input is missing.
        DataError: inputs that do not fit (backbone, classes, images), NaN/inf features, or
            no class could be trained.
    """
    if layer not in LAYERS:
        raise ConfigError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    if mining not in ("images", "classes"):
        raise ConfigError(f"mining must be 'images' or 'classes', got {mining!r}")
    estimator = HardNegativeSVM(C=C, positive_weight=positive_weight, bias_feature=bias_feature,
                                include_difficult=include_difficult,
                                max_cached_negatives=max_cached_negatives)
    estimator._check_params()
    start = time.perf_counter()
    out = Path(out)
    data = VOCDataset(dataset, split)
    torch_device = resolve_device(device)
    cache, reader, inputs = open_inputs(
        data, InputPaths(Path(proposals), Path(features), None), device=torch_device)
    try:
        head = None
        if layer != "pool5":
            if fc is None:
                raise ConfigError(f"layer {layer} needs the fc checkpoint",
                                  remedy=Remedy.rerun(verb="give it", fc=YOUR_CHOICE))
            head, inputs["fc"] = load_fc(Path(fc), data, cache)
        params = {
            "data": dataset_params(data), "classes": list(data.classes), "layer": layer,
            "seed": seed, "feature_scale": scale_params(), "negative_iou": NEGATIVE_IOU,
            "dedup": "feature-map footprint",
            "svm": {key: getattr(estimator, key) for key in (
                "C", "bias_feature", "positive_weight", "hard_threshold", "evict_threshold",
                "retrain_every", "epochs", "max_cached_negatives", "include_difficult", "tol",
                "max_iter", "random_state")},
        }
        output = StageOutput(out, Record(STAGE, params, inputs=inputs,
                                         stage_version=STAGE_VERSION), force=force)
        if output.is_current():
            return TrainSvmSummary(path=out, layer=layer, up_to_date=True)
        with output.writing():
            log.info("train-svm: %s split %s, %s features from %s, proposals %s -> %s",
                     data.root, split, layer, cache.path, reader.path, out)
            summary = TrainSvmSummary(path=out, layer=layer, jobs=jobs,
                                      device=str(torch_device))
            truth = image_truth(data)
            # Pass 1: positives and the feature-scale sample, in this process.
            featurizer = WindowFeaturizer(cache, head, layer, batch_size=batch_size)
            sample = scale_sample(reader, data.image_ids, seed)
            positives, difficult, sampled = collect_positives(
                featurizer, truth, data.classes, scale_windows=sample)
            feature_scale = scale_from_norms(sampled, layer)
            summary.feature_scale = feature_scale
            summary.positives_pool_seconds = featurizer.times.pool_seconds
            summary.positives_fc_seconds = featurizer.times.fc_seconds
            summary.positives_seconds = time.perf_counter() - start
            log.info("feature scale %.6g from %d sampled windows of %d images; %d positives",
                     feature_scale, sum(len(v) for v in sampled.values()), len(sampled),
                     sum(len(v) for v in positives.values()))
            # Pass 2: hard-negative mining, each image featurized once per worker.
            stream = SharedNegativeStream(
                features_path=str(cache.path), proposals_path=str(reader.path),
                fc_path=None if head is None else str(fc), layer=layer,
                classes=tuple(data.classes), truth=truth, batch_size=batch_size,
                device=str(torch_device))
            mining_start = time.perf_counter()
            groups = jobs
            if executor is not None and mining == "images":
                stream, groups = DistributedNegativeStream(stream, executor), 1
            elif executor is not None:
                groups = executor.threads
            svms = train_class_svms_shared(
                data.classes, positives, stream, estimator=estimator,
                difficult_by_class=difficult, feature_scale=feature_scale, n_jobs=groups,
                executor=executor)
            if executor is not None:
                summary.engine = f"{executor.description}, mining split by {mining}"
                summary.reruns = executor.last_run.reruns
            summary.mining_seconds = time.perf_counter() - mining_start
            _fill_stats(summary, svms, positives, difficult, include_difficult)
            if not svms.models:
                reasons = "; ".join(f"{name}: {why}" for name, why in svms.skipped.items())
                raise DataError(f"no class could be trained ({reasons}); nothing written")
            if groups > 1:  # the workers' logs stay in the workers: replay the retrainings
                _log_histories(svms)
            weights = SVMWeights.from_class_svms(svms, layer)
            summary.seconds = time.perf_counter() - start
            output.commit(weights.save, summary=summary.to_record())
            log.debug("%s", summary.to_text())
        return summary
    finally:
        cache.close()
        reader.close()


def _fill_stats(summary: TrainSvmSummary, svms: Any, positives: dict, difficult: dict,
                include_difficult: bool) -> None:
    for stats in svms.stream_stats:
        # Every worker passes over the same images; count them once, time them all.
        summary.images = max(summary.images, int(stats.get("images", 0)))
        summary.proposals = max(summary.proposals, int(stats.get("proposals", 0)))
        summary.unique_windows = max(summary.unique_windows, int(stats.get("unique_windows", 0)))
        summary.featurized_windows += int(stats.get("featurized_windows", 0))
        summary.mining_pool_seconds += float(stats.get("pool_seconds", 0.0))
        summary.mining_fc_seconds += float(stats.get("fc_seconds", 0.0))
        summary.mining_select_seconds += float(stats.get("select_seconds", 0.0))
    for name in svms.classes:
        n_pos = int(positives[name].shape[0])
        if not include_difficult:
            n_pos -= int(difficult[name].sum())
        stats = ClassSvmStats(name=name, positives=n_pos)
        model = svms.models.get(name)
        if model is None:
            stats.skipped = svms.skipped.get(name, "not trained")
        else:
            stats.negatives_cached = len(model.cached_negative_keys_)
            stats.retrainings = len(model.history_)
            stats.objective = float(model.history_[-1].objective.total)
            stats.solver_seconds = float(model.solver_seconds_)
            stats.mining_seconds = float(model.mining_seconds_)
            summary.solver_seconds += stats.solver_seconds
        summary.classes.append(stats)


def _log_histories(svms: Any) -> None:
    for name, model in svms.models.items():
        for i, r in enumerate(model.history_, 1):
            log.debug("%s: retrain %d (%s, image %d): %d pos, %d neg (%d new); objective %.4f; "
                     "evicted %d, cache %d; solver %.2f s", name, i, r.reason, r.images_seen,
                     r.num_positives, r.num_negatives, r.num_added, r.objective.total,
                     r.num_evicted, r.cache_size, r.solver_seconds)
