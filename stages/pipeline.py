"""Stage ``pipeline``: [pretrain ->] propose -> cache-features -> finetune -> train-svm ->
train-bbox-reg -> tune -> detect -> eval, for one dataset, a training split and a test split.

Every stage is called with its parameters and skips itself when its artifact's record already
matches (same parameters, same input digests). Because an artifact's digest covers its inputs'
digests, changing one stage's parameter reruns that stage and every stage after it, and nothing
before it, like make.

The whole run is described by a :class:`PipelineConfig`, which a YAML or JSON file can give
(sections ``pretrain``, ``propose``, ``cache_features``, ``finetune``, ``train_svm``,
``train_bbox_reg``, ``tune``, ``detect``; see ``docs/pipeline.example.yaml``), laid over a
recipe (:mod:`stages.recipes`). Before any stage runs, the plan (:mod:`stages.planning`) gives
each stage's settings, expected time and disk; a plan whose artifacts do not fit the free disk
is refused then, with nothing written. The plan, with each stage's actual time, is kept as
``models/<name>/plan.json``.

The ``tune`` step (:mod:`stages.tune_detect`) chooses each class's NMS and operating point on
the validation split that fine-tuning held out, and detect uses them (unless the ``detect``
section sets NMS values); without a validation split it is skipped with a note.

With a ``pretrain`` section, a paper trunk is first trained as an SPP classifier on the
dataset's object crops (:mod:`stages.pretrain`), and its ``weights.pt`` computes the features
(and, with ``finetune.init: pretrained``, gives fc6/fc7). The features record holds that file's
SHA-256, so retraining it reruns every later stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError
from sppdet.progress import get_logger

from . import (cache_features, detect, evaluate, finetune, planning, pretrain, propose,
               train_bbox_reg, train_svm, tune_detect)
from .layout import detections_path, eval_dir, model_dir, proposals_path
from .params import (DEFAULT_BACKBONE, PAPER_TRUNKS,  # noqa: F401 (re-exported)
                     BBoxRegOptions, CacheOptions, DetectOptions, PretrainOptions,
                     ProposeOptions, SvmOptions)
from .pipeline_config import (PipelineConfig, ResolvedConfig,  # noqa: F401 (re-exported)
                              check_config, config_from_dict, load_config, pretrain_arguments,
                              pretrain_from_dict)
from .plan import Plan, check_disk
from .training_inputs import finetune_splits

log = get_logger("pipeline")

STAGES = ("pretrain", "propose", "cache-features", "finetune", "train-svm", "train-bbox-reg",
          "tune", "detect", "eval")


@dataclass
class StageResult:
    stage: str
    seconds: float
    up_to_date: bool
    text: str


@dataclass
class PipelineSummary:
    results: list[StageResult] = field(default_factory=list)
    eval_summary: Any = None
    detections: Path | None = None
    seconds: float = 0.0
    plan: Plan | None = None

    def to_text(self) -> str:
        planned = {s.stage: s for s in self.plan.stages} if self.plan else {}
        lines = ["Pipeline stages:"]
        for r in self.results:
            state = "up to date" if r.up_to_date else f"{r.seconds:7.1f} s"
            step = planned.get(r.stage)
            if step is not None and not r.up_to_date and step.seconds is not None:
                state += f"  (planned {step.seconds:.0f} s)"
            lines.append(f"  {r.stage:<28} {state}")
        total = f"  {'total':<28} {self.seconds:7.1f} s"
        if self.plan is not None:
            total += f"  (planned {self.plan.seconds:.0f} s)"
        lines.append(total)
        return "\n".join(lines)


def run(dataset: str | Path, work_dir: Path, config: PipelineConfig | ResolvedConfig, *,
        force: bool = False, on_stage: Callable[[StageResult], None] | None = None,
        on_plan: Callable[[Plan], None] | None = None) -> PipelineSummary:
    """Plan, then run every stage in order; each one skips itself when its artifact is up to
    date.

    Args:
        dataset: VOC-layout dataset folder.
        work_dir: the work dir.
        config: the run's configuration (a :class:`ResolvedConfig` also says its recipe and
            where each key came from, for the plan).
        force: rebuild every artifact.
        on_stage: called after each stage with its :class:`StageResult`.
        on_plan: called with the plan before any stage runs.

    Raises:
        StorageError: the plan's new artifacts need more disk than the work dir has free
            (before any stage runs; nothing is written).
        ClusterError: ``config.dask`` names a scheduler that cannot be reached (before any
            stage runs).
    """
    from sppdet.devices import resolve_device
    from sppdet.parallel.dask_cluster import open_executor

    resolved = planning.as_resolved(config)
    check_config(resolved.config)
    plan, _ = planning.make_plan(dataset, work_dir, resolved, force=force,
                                 device_type=resolve_device(resolved.config.device).type)
    if on_plan is not None:
        on_plan(plan)
    check_disk(plan)
    with open_executor(resolved.config.dask, jobs=resolved.config.jobs) as executor:
        summary = _run(dataset, work_dir, resolved, force=force, on_stage=on_stage,
                       executor=executor)
    summary.plan = plan
    planning.write_plan(model_dir(work_dir, resolved.config.name) / "plan.json", plan,
                        {r.stage: None if r.up_to_date else r.seconds for r in summary.results})
    return summary


def _run(dataset: str | Path, work_dir: Path, resolved: ResolvedConfig, *, force: bool,
         on_stage: Callable[[StageResult], None] | None, executor: Any) -> PipelineSummary:
    config = resolved.config
    work_dir = Path(work_dir)
    summary = PipelineSummary()
    start = time.perf_counter()
    finetune_split, val_split = finetune_splits(dataset, config.finetune_split,
                                                config.val_split, fallback=config.train_split)
    _check_subset(dataset, config.train_split, [finetune_split, val_split])

    def step(stage: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = call()
        record = StageResult(stage=stage, seconds=time.perf_counter() - t0,
                             up_to_date=bool(getattr(result, "up_to_date", False)),
                             text=result.to_text() if hasattr(result, "to_text") else "")
        summary.results.append(record)
        if on_stage is not None:
            on_stage(record)
        return result

    c = config.cache_features
    backbone, weights = c.backbone or DEFAULT_BACKBONE, c.weights
    if config.pretrain is not None:
        pretrained = step("pretrain", lambda: pretrain.run(
            dataset, work_dir, **pretrain_arguments(config), device=config.device,
            jobs=config.jobs, force=force))
        backbone, weights = config.pretrain.backbone, str(pretrained.weights.resolve())

    p = config.propose
    method_options = p.method_options()
    props, feats = {}, {}
    for split in dict.fromkeys([config.train_split, config.test_split]):
        props[split] = proposals_path(work_dir, dataset, split, p.method)
        step(f"propose {split}", lambda split=split: propose.run(
            dataset, split, props[split], method=p.method, method_options=method_options,
            jobs=config.jobs, force=force, executor=executor))
    for split in dict.fromkeys([config.train_split, config.test_split]):
        flip = c.flip and split == config.train_split
        feats[split] = cache_features.default_out(
            work_dir, dataset, split, backbone_name=backbone, weights=weights,
            scales=tuple(c.scales), flip=flip)
        step(f"cache-features {split}", lambda split=split, flip=flip: cache_features.run(
            dataset, split, feats[split], backbone_name=backbone, weights=weights,
            scales=tuple(c.scales), flip=flip, dtype=c.dtype, compression=c.compression,
            device=config.device, force=force, seed=config.seed))
    models = model_dir(work_dir, config.name)
    train_props, train_feats = props[config.train_split], feats[config.train_split]
    fc_path = models / "fc.pt"
    # with finetune_epochs, the length is counted from the proposals made above
    ft_config = planning.resolved_finetune(resolved, dataset, finetune_split, train_props).config
    step("finetune", lambda: finetune.run(
        dataset, fc_path, train_split=finetune_split, train_proposals=train_props,
        train_features=train_feats, val_split=val_split,
        val_proposals=train_props if val_split else None,
        val_features=train_feats if val_split else None, config=ft_config,
        device=config.device, force=force))
    s = config.train_svm
    step("train-svm", lambda: train_svm.run(
        dataset, config.train_split, models / "svm.npz", proposals=train_props,
        features=train_feats, fc=fc_path, layer=s.layer, jobs=config.jobs, seed=config.seed,
        C=s.C, positive_weight=s.positive_weight, bias_feature=s.bias_feature,
        include_difficult=s.include_difficult, max_cached_negatives=s.max_cached_negatives,
        device=config.device, force=force, executor=executor))
    b = config.train_bbox_reg
    if b.enabled:
        step("train-bbox-reg", lambda: train_bbox_reg.run(
            dataset, config.train_split, models / "bbox_reg.npz", proposals=train_props,
            features=train_feats, min_iou=b.min_iou, lambda_=b.lambda_, whiten=b.whiten,
            seed=config.seed, device=config.device, force=force))
    d = config.detect
    if config.tune.enabled:
        step("tune", lambda: tune_detect.run(
            dataset, models, scorer=d.scorer, use_bbox_reg=b.enabled,
            score_threshold=d.score_threshold, max_per_image=d.max_per_image,
            metric=config.metric, jobs=config.jobs, device=config.device, force=force,
            executor=executor, confidence=config.tune.confidence,
            resamples=config.tune.resamples, choose_scorer=config.tune.choose_scorer))
    detections = detections_path(work_dir, config.name, dataset, config.test_split)
    step("detect", lambda: detect.run(
        dataset, config.test_split, detections, model_dir=models,
        proposals=props[config.test_split], features=feats[config.test_split],
        # svm: the model's detector, with the tune step's per-class scorers; softmax: every
        # class (the tune step chose for that)
        scorer=None if d.scorer == "svm" else d.scorer, use_bbox_reg=b.enabled,
        iou_threshold=d.iou_threshold, score_threshold=d.score_threshold,
        max_per_image=d.max_per_image, nms_method=d.nms_method, nms_sigma=d.nms_sigma,
        use_test_settings=config.tune.enabled,
        device=config.device, force=force, jobs=config.jobs, executor=executor))
    summary.detections = detections
    out_dir = eval_dir(work_dir, config.name, dataset, config.test_split)
    summary.eval_summary = step("eval", lambda: evaluate.run(
        dataset, config.test_split, detections, out_dir, metric=config.metric,
        force=force))
    summary.seconds = time.perf_counter() - start
    return summary


def _check_subset(dataset: str | Path, superset: str, subsets: list[str | None]) -> None:
    """The fine-tuning and validation splits must lie inside the training split."""
    wanted = [s for s in subsets if s and s != superset]
    if not wanted:
        return
    ids = set(VOCDataset(dataset, superset).image_ids)
    for split in wanted:
        outside = [i for i in VOCDataset(dataset, split).image_ids if i not in ids]
        if outside:
            raise ConfigError(f"split '{split}' has {len(outside)} image(s) outside the "
                              f"training split '{superset}' (e.g. {outside[:3]}); the pipeline "
                              "computes proposals and features for the training split only")
