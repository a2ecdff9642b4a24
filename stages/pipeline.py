"""Stage ``pipeline``: propose -> cache-features -> finetune -> train-svm -> train-bbox-reg ->
detect -> eval, for one dataset, a training split and a test split.

Every stage is called with its parameters and skips itself when its artifact's record already
matches (same parameters, same input digests). Because an artifact's digest covers its inputs'
digests, changing one stage's parameter reruns that stage and every stage after it, and nothing
before it, like make.

The whole run is described by a :class:`PipelineConfig`, which a YAML or JSON file can give
(sections ``propose``, ``cache_features``, ``finetune``, ``train_svm``, ``train_bbox_reg``,
``detect``, ``eval``; see ``docs/pipeline.example.yaml``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError
from sppdet.finetune import FinetuneConfig
from sppdet.progress import get_logger

from . import (cache_features, detect, evaluate, finetune, propose, train_bbox_reg,
               train_svm)
from .layout import detections_path, eval_dir, model_dir, proposals_path

log = get_logger("pipeline")

STAGES = ("propose", "cache-features", "finetune", "train-svm", "train-bbox-reg", "detect",
          "eval")


@dataclass
class ProposeOptions:
    method: str = "ss-fast"
    max_boxes: int = 2000
    max_size: int = 500
    min_size: float = 10.0


@dataclass
class CacheOptions:
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    scales: tuple[int, ...] = cache_features.PAPER_SCALES
    flip: bool = True
    dtype: str = "float16"
    compression: str = "lzf"


@dataclass
class SvmOptions:
    layer: str = "fc7"
    C: float = 1e-3
    positive_weight: float = 2.0
    bias_feature: float = 10.0
    include_difficult: bool = True


@dataclass
class BBoxRegOptions:
    enabled: bool = True
    min_iou: float = 0.5
    lambda_: float = 4000.0
    whiten: bool = True


@dataclass
class DetectOptions:
    scorer: str = "svm"
    iou_threshold: float = 0.3
    score_threshold: float | None = None
    max_per_image: int | None = 100


@dataclass
class PipelineConfig:
    """Everything a pipeline run needs besides the dataset and the work dir.

    Attributes:
        name: model name (``models/<name>/``, ``detections/<name>/``...).
        train_split: split the SVMs and box regressors train on (proposals and features are
            made for it; ``finetune_split`` and ``val_split`` must be subsets of it).
        test_split: split detected and evaluated.
        finetune_split: split the fc layers train on (``train`` when the dataset has
            train/val, so that ``val`` stays held out for checkpoint selection).
        val_split: held-out split for fine-tuning (``None``: no validation).
        metric: ``11point`` (VOC2007) or ``area``.
        jobs: worker processes for proposals and SVMs.
        device: ``auto``, ``cpu``, ``cuda[:N]``.
        seed: seed of every sampling stage.
    """

    name: str = "spp"
    train_split: str = "trainval"
    test_split: str = "test"
    finetune_split: str | None = "train"
    val_split: str | None = "val"
    metric: str = "11point"
    jobs: int = 1
    device: str = "auto"
    seed: int = 0
    propose: ProposeOptions = field(default_factory=ProposeOptions)
    cache_features: CacheOptions = field(default_factory=CacheOptions)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train_svm: SvmOptions = field(default_factory=SvmOptions)
    train_bbox_reg: BBoxRegOptions = field(default_factory=BBoxRegOptions)
    detect: DetectOptions = field(default_factory=DetectOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"propose": ProposeOptions, "cache_features": CacheOptions,
             "finetune": FinetuneConfig, "train_svm": SvmOptions,
             "train_bbox_reg": BBoxRegOptions, "detect": DetectOptions}


def config_from_dict(values: Mapping[str, Any], base: PipelineConfig | None = None,
                     source: str = "config") -> PipelineConfig:
    """Overlay ``values`` (nested dict, e.g. from YAML) on ``base`` (default: defaults).

    Raises:
        ConfigError: an unknown section or key, naming it and the known ones.
    """
    config = base or PipelineConfig()
    top = {f.name for f in dataclasses.fields(PipelineConfig)}
    for key, value in dict(values).items():
        if key not in top:
            raise ConfigError(f"{source}: unknown key {key!r}; known: {', '.join(sorted(top))}")
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: section {key!r} must be a mapping")
            section = getattr(config, key)
            known = {f.name for f in dataclasses.fields(section)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigError(f"{source}: unknown key(s) {unknown} in section {key!r}; "
                                  f"known: {', '.join(sorted(known))}")
            updates = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            setattr(config, key, dataclasses.replace(section, **updates))
        else:
            setattr(config, key, value)
    return config


def load_config(path: str | Path, base: PipelineConfig | None = None) -> PipelineConfig:
    """Read a YAML or JSON pipeline config file."""
    path = Path(path)
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the pipeline config ({exc})") from exc
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}: the pipeline config must be a mapping of sections")
    return config_from_dict(values, base, source=str(path))


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

    def to_text(self) -> str:
        lines = ["Pipeline stages:"]
        for r in self.results:
            state = "up to date" if r.up_to_date else f"{r.seconds:7.1f} s"
            lines.append(f"  {r.stage:<28} {state}")
        lines.append(f"  {'total':<28} {self.seconds:7.1f} s")
        return "\n".join(lines)


def run(dataset: str | Path, work_dir: Path, config: PipelineConfig, *, force: bool = False,
        on_stage: Callable[[StageResult], None] | None = None) -> PipelineSummary:
    """Run every stage in order; each one skips itself when its artifact is up to date.

    Args:
        dataset: VOC-layout dataset folder.
        work_dir: the work dir.
        config: the run's configuration.
        force: rebuild every artifact.
        on_stage: called after each stage with its :class:`StageResult`.
    """
    work_dir = Path(work_dir)
    summary = PipelineSummary()
    start = time.perf_counter()
    splits = Path(dataset) / "ImageSets" / "Main"
    finetune_split = config.finetune_split
    val_split = config.val_split
    if finetune_split and not (splits / f"{finetune_split}.txt").is_file():
        finetune_split = None
    if val_split and not (splits / f"{val_split}.txt").is_file():
        val_split = None
    if finetune_split is None:
        finetune_split, val_split = config.train_split, None
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

    p = config.propose
    method_options = {"max_boxes": p.max_boxes, "max_size": p.max_size}
    if p.method.startswith("ss-"):
        method_options["min_size"] = p.min_size
    c = config.cache_features
    props, feats = {}, {}
    for split in dict.fromkeys([config.train_split, config.test_split]):
        props[split] = proposals_path(work_dir, dataset, split, p.method)
        step(f"propose {split}", lambda split=split: propose.run(
            dataset, split, props[split], method=p.method, method_options=method_options,
            jobs=config.jobs, force=force))
    for split in dict.fromkeys([config.train_split, config.test_split]):
        flip = c.flip and split == config.train_split
        feats[split] = cache_features.default_out(
            work_dir, dataset, split, backbone_name=c.backbone, weights=c.weights,
            scales=tuple(c.scales), flip=flip)
        step(f"cache-features {split}", lambda split=split, flip=flip: cache_features.run(
            dataset, split, feats[split], backbone_name=c.backbone, weights=c.weights,
            scales=tuple(c.scales), flip=flip, dtype=c.dtype, compression=c.compression,
            device=config.device, force=force, seed=config.seed))
    models = model_dir(work_dir, config.name)
    train_props, train_feats = props[config.train_split], feats[config.train_split]
    fc_path = models / "fc.pt"
    ft_config = dataclasses.replace(config.finetune, seed=config.seed)
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
        include_difficult=s.include_difficult, device=config.device, force=force))
    b = config.train_bbox_reg
    if b.enabled:
        step("train-bbox-reg", lambda: train_bbox_reg.run(
            dataset, config.train_split, models / "bbox_reg.npz", proposals=train_props,
            features=train_feats, min_iou=b.min_iou, lambda_=b.lambda_, whiten=b.whiten,
            seed=config.seed, device=config.device, force=force))
    d = config.detect
    detections = detections_path(work_dir, config.name, dataset, config.test_split)
    step("detect", lambda: detect.run(
        dataset, config.test_split, detections, model_dir=models,
        proposals=props[config.test_split], features=feats[config.test_split],
        scorer=d.scorer, use_bbox_reg=b.enabled, iou_threshold=d.iou_threshold,
        score_threshold=d.score_threshold, max_per_image=d.max_per_image,
        device=config.device, force=force))
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
