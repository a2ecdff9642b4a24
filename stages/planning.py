"""The pipeline's plan for one configuration: the fine-tuning length, the artifacts' paths,
the forecast of which stages are up to date, and the cost estimate (:mod:`stages.plan`).

:func:`make_plan` is what ``pipeline`` prints before its first stage and ``pipeline
--plan-only`` prints alone; :func:`resolved_finetune` is what the ``finetune`` stage then runs
with (the same length, counted from the proposals once they exist).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sppdet.errors import SppdetError

from .layout import (detections_path, eval_dir, feature_variant, features_path, model_dir,
                     proposals_path)
from .params import DEFAULT_BACKBONE
from .pipeline_config import PipelineConfig, ResolvedConfig
from .plan import Plan, SplitFacts, build_plan, split_facts
from .recipes import FinetuneLength, RecipeChoice, count_positive_windows, finetune_length

#: ``sppdet.detector.tuning.TEST_SETTINGS_FILE`` (the tune step's output in the model folder).
TEST_SETTINGS_FILE = "test_settings.json"
#: ``sppdet.detector.tuning``'s IoU of hard NMS when none is given or chosen (the paper's).
DEFAULT_IOU_THRESHOLD = 0.3
#: Interval fields of fine-tuning that epochs rescale unless given explicitly.
INTERVAL_KEYS = ("val_every", "checkpoint_every")


def as_resolved(config: PipelineConfig | ResolvedConfig) -> ResolvedConfig:
    """A config built in code (the demo, the library) is taken as it is: its recipe field is
    not applied (its settings are already complete)."""
    if isinstance(config, ResolvedConfig):
        return config
    name = config.recipe if config.recipe != "auto" else "as given"
    return ResolvedConfig(config, RecipeChoice(name, "settings as given"), {})


def kept_intervals(resolved: ResolvedConfig) -> frozenset[str]:
    return frozenset(k for k in INTERVAL_KEYS if resolved.explicit(f"finetune.{k}"))


def resolved_finetune(resolved: ResolvedConfig, dataset: str | Path, finetune_split: str,
                      proposals: Path | None) -> FinetuneLength:
    """The fine-tuning config the run uses: the section with the pipeline's seed and, with
    ``finetune_epochs``, the iterations counted from ``proposals`` (estimated from the ground
    truth when ``proposals`` is None)."""
    config = resolved.config
    base = dataclasses.replace(config.finetune, seed=config.seed)
    if config.finetune_epochs is None:
        return finetune_length(base, None, positives=None, objects=0)
    counter = None
    if proposals is not None:
        def counter() -> int:
            return count_positive_windows(dataset, finetune_split, proposals, base)
    objects = split_facts(dataset, finetune_split).objects if proposals is None else 0
    return finetune_length(base, config.finetune_epochs, positives=counter, objects=objects,
                           keep=kept_intervals(resolved))


@dataclass(frozen=True)
class Expected:
    """What an up-to-date artifact's record holds: its path, a subset of its params, and the
    artifacts its inputs must still be (by digest)."""

    path: Path
    params: Mapping[str, Any]
    inputs: Mapping[str, Path]


def _subset(expected: Any, recorded: Any) -> bool:
    from sppdet.io.records import jsonable

    if isinstance(expected, Mapping):
        return isinstance(recorded, Mapping) and all(
            _subset(value, recorded.get(key)) for key, value in expected.items())
    return jsonable(expected) == recorded


def matches(expected: Expected) -> bool:
    """The forecast: ``expected.path`` is finished, its record holds ``expected.params`` and
    its inputs are the current ``expected.inputs``."""
    from sppdet.io.records import read_record, record_path

    try:
        if not (expected.path.is_file() and record_path(expected.path).is_file()):
            return False
        record = read_record(expected.path)
        if not _subset(dict(expected.params), record.params):
            return False
        for name, path in expected.inputs.items():
            ref = record.inputs.get(name)
            if ref is None or ref.digest != read_record(path).digest:
                return False
    except (SppdetError, OSError, ValueError):
        return False
    return True


def make_plan(dataset: str | Path, work_dir: Path, config: PipelineConfig | ResolvedConfig, *,
              device_type: str, force: bool = False,
              facts: Any = None) -> tuple[Plan, FinetuneLength]:
    """The plan of a run and the fine-tuning length it shows.

    Args:
        dataset, work_dir: the run's.
        config: the run's configuration (with the recipe and the sources of its keys).
        device_type: ``cpu`` or ``cuda``.
        force: every stage reruns (none is up to date).
        facts: split -> :class:`SplitFacts` (tests; default: read from the dataset).
    """
    from sppdet.io.hashing import file_sha256

    from .common import dataset_params
    from .training_inputs import finetune_splits
    from sppdet.data.voc import VOCDataset

    resolved = as_resolved(config)
    cfg = resolved.config
    work_dir = Path(work_dir)
    finetune_split, val_split = finetune_splits(dataset, cfg.finetune_split, cfg.val_split,
                                                fallback=cfg.train_split)
    c, p = cfg.cache_features, cfg.propose
    backbone = c.backbone or DEFAULT_BACKBONE
    digest = file_sha256(c.weights) if c.weights and Path(c.weights).is_file() else None
    splits = list(dict.fromkeys([cfg.train_split, cfg.test_split]))
    data = {split: dataset_params(VOCDataset(dataset, split)) for split in splits}
    props = {s: proposals_path(work_dir, dataset, s, p.method) for s in splits}
    feats = {s: features_path(work_dir, dataset, s, backbone, feature_variant(
        tuple(c.scales), c.flip and s == cfg.train_split, digest)) for s in splits}
    expected: dict[str, Expected] = {}
    for s in splits:
        expected[f"propose {s}"] = Expected(props[s], {
            "method": p.method, "method_params": p.method_options(), "data": data[s]}, {})
        expected[f"cache-features {s}"] = Expected(feats[s], {
            "scales": sorted(set(c.scales)), "flip": c.flip and s == cfg.train_split,
            "dtype": c.dtype, "compression": c.compression, "data": data[s]}, {})
    train, test = cfg.train_split, cfg.test_split
    props_ready = not force and matches(expected[f"propose {train}"])
    length = resolved_finetune(resolved, dataset, finetune_split,
                               props[train] if props_ready else None)
    models = model_dir(work_dir, cfg.name)
    train_in = {"proposals": props[train], "features": feats[train]}
    expected["finetune"] = Expected(models / "fc.pt", {"config": length.config.to_dict()}, {
        "proposals_train": props[train], "features_train": feats[train]})
    s, b, d = cfg.train_svm, cfg.train_bbox_reg, cfg.detect
    expected["train-svm"] = Expected(models / "svm.npz", {
        "layer": s.layer, "seed": cfg.seed, "data": data[train],
        "svm": {"C": s.C, "positive_weight": s.positive_weight, "bias_feature": s.bias_feature,
                "include_difficult": s.include_difficult,
                "max_cached_negatives": s.max_cached_negatives}},
        {**train_in, "fc": models / "fc.pt"})
    expected["train-bbox-reg"] = Expected(models / "bbox_reg.npz", {
        "min_iou": b.min_iou, "lambda": b.lambda_, "whiten": b.whiten, "seed": cfg.seed,
        "data": data[train]}, train_in)
    tune_images = None
    if cfg.tune.enabled and val_split:
        tune_images = (len(VOCDataset(dataset, finetune_split)), len(VOCDataset(dataset,
                                                                                 val_split)))
        expected["tune"] = Expected(models / TEST_SETTINGS_FILE, {
            "scorer": d.scorer, "bbox_reg": b.enabled, "metric": cfg.metric,
            "confidence": cfg.tune.confidence, "resamples": cfg.tune.resamples,
            "choose_scorer": cfg.tune.choose_scorer and d.scorer == "svm"}, {
            "fc": models / "fc.pt", "svm": models / "svm.npz",
            **({"bbox_reg": models / "bbox_reg.npz"} if b.enabled else {})})
    detections = detections_path(work_dir, cfg.name, dataset, test)
    # NMS given in the section is used for every class; else the tune step's choice (not
    # known before it runs), else hard NMS at the default IoU
    given = any(v is not None for v in (d.iou_threshold, d.nms_method, d.nms_sigma))
    nms = {} if tune_images and not given else {"nms": {
        "iou_threshold": DEFAULT_IOU_THRESHOLD if d.iou_threshold is None else d.iou_threshold,
        "max_per_image": d.max_per_image}}
    expected["detect"] = Expected(detections, {
        "scorer": d.scorer, "bbox_reg": b.enabled, "data": data[test], **nms}, {
        "proposals": props[test], "features": feats[test], "fc": models / "fc.pt",
        "svm": models / "svm.npz", **({"bbox_reg": models / "bbox_reg.npz"} if b.enabled
                                      else {})})
    expected["eval"] = Expected(eval_dir(work_dir, cfg.name, dataset, test) / "report.json",
                                {"metric": cfg.metric, "data": data[test]},
                                {"detections": detections})

    def is_current(stage: str) -> bool:
        return not force and stage in expected and matches(expected[stage])

    plan = build_plan(dataset, work_dir, cfg, device_type=device_type,
                      recipe=resolved.recipe.name, recipe_reason=resolved.recipe.reason,
                      sources=resolved.sources, finetune_note=length.reason,
                      finetune_iterations=length.config.iterations,
                      classes=len(VOCDataset(dataset, finetune_split).classes),
                      tune_images=tune_images,
                      is_current=is_current, facts=facts)
    return plan, length


def write_plan(path: Path, plan: Plan, actual: Mapping[str, float | None]) -> Path:
    """Record the plan (recipe, reasons, planned seconds and bytes) beside the model, with
    each stage's actual seconds (``None``: it was up to date)."""
    import json

    from sppdet.io.atomic import atomic_path

    values = plan.to_dict()
    for stage in values["stages"]:
        stage["actual_seconds"] = actual.get(stage["stage"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(values, indent=1) + "\n")
    return path


__all__ = ["Expected", "SplitFacts", "as_resolved", "make_plan", "matches",
           "resolved_finetune", "write_plan"]
