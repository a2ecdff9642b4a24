"""Stage ``pipeline``: [pretrain ->] propose -> cache-features -> finetune -> train-svm ->
train-bbox-reg -> detect -> eval, for one dataset, a training split and a test split.

Every stage is called with its parameters and skips itself when its artifact's record already
matches (same parameters, same input digests). Because an artifact's digest covers its inputs'
digests, changing one stage's parameter reruns that stage and every stage after it, and nothing
before it, like make.

The whole run is described by a :class:`PipelineConfig`, which a YAML or JSON file can give
(sections ``pretrain``, ``propose``, ``cache_features``, ``finetune``, ``train_svm``,
``train_bbox_reg``, ``detect``; see ``docs/pipeline.example.yaml``).

With a ``pretrain`` section, a paper trunk is first trained as an SPP classifier on the
dataset's object crops (:mod:`stages.pretrain`), and its ``weights.pt`` computes the features
(and, with ``finetune.init: pretrained``, gives fc6/fc7). The features record holds that file's
SHA-256, so retraining it reruns every later stage.
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

from sppdet.backbones import BACKBONES
from sppdet.backbones.paper_nets import PaperTrunk
from sppdet.classification.training import PretrainConfig
from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.progress import get_logger

from . import (cache_features, detect, evaluate, finetune, pretrain, propose,
               train_bbox_reg, train_svm)
from .layout import detections_path, eval_dir, model_dir, proposals_path

log = get_logger("pipeline")

STAGES = ("pretrain", "propose", "cache-features", "finetune", "train-svm", "train-bbox-reg",
          "detect", "eval")
DEFAULT_BACKBONE = "efficientnet_lite0"
PAPER_TRUNKS = tuple(name for name, make in BACKBONES.items()
                     if isinstance(make, type) and issubclass(make, PaperTrunk))


@dataclass
class PretrainOptions:
    """The optional first step: train a paper trunk as an SPP classifier (``stages.pretrain``)
    on the dataset's object and background crops; its ``weights.pt`` then computes the features.

    In a config file the ``pretrain`` section holds these keys and, beside them (flattened),
    the fields of :class:`~sppdet.classification.training.PretrainConfig` (``epochs``,
    ``batch_size``, ``crop_size``, ``hidden``, ``levels``...), which go to ``training``.

    Attributes:
        split: split whose objects become examples (``None``: the pipeline's ``train_split``).
        backbone: the paper trunk to train (zf5, convnet5, overfeat5, overfeat7); the
            features are computed with it.
        name: output folder ``<work>/backbones/<name>/`` (``None``:
            ``<pipeline name>-<backbone>``).
        context: context added around each object, as a fraction of its width/height per side.
        background_per_image: background crops per image (0: no background class).
        include_difficult: also crop objects marked difficult.
        seed: seed of the training and of the background crops (``None``: the pipeline's
            ``seed``).
        training: training settings; its ``seed`` is replaced by the resolved seed above.
    """

    split: str | None = None
    backbone: str = "zf5"
    name: str | None = None
    context: float = 0.1
    background_per_image: int = 1
    include_difficult: bool = False
    seed: int | None = None
    training: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping a config file's ``pretrain`` section holds."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "training"}
        training = self.training.to_dict()
        training.pop("seed")
        return {**values, **training}


@dataclass
class ProposeOptions:
    method: str = "ss-fast"
    max_boxes: int = 2000
    max_size: int = 500
    min_size: float = 10.0


@dataclass
class CacheOptions:
    """``backbone``: ``None`` is efficientnet_lite0, or the pretrain section's backbone when
    there is one (which then also gives the weights: ``weights`` must stay ``None``)."""

    backbone: str | None = None
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
        seed: seed of every sampling stage (and of pretraining unless its section sets one).
        pretrain: the optional pretraining step (``None``: none; the features come from
            ``cache_features.backbone`` and ``weights``).
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
    pretrain: PretrainOptions | None = None

    def to_dict(self) -> dict[str, Any]:
        """The nested mapping a config file holds (:func:`config_from_dict` reads it back)."""
        values = dataclasses.asdict(self)
        values["pretrain"] = None if self.pretrain is None else self.pretrain.to_dict()
        return values


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
        if key == "pretrain":
            config.pretrain = pretrain_from_dict(value, config.pretrain, source)
        elif key in _SECTIONS:
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


def pretrain_from_dict(values: Mapping[str, Any] | None, base: PretrainOptions | None = None,
                       source: str = "config") -> PretrainOptions | None:
    """The ``pretrain`` section: ``None`` (no pretraining) or a flat mapping of
    :class:`PretrainOptions` keys and :class:`PretrainConfig` fields, overlaid on ``base``
    (default: defaults). ``{}`` pretrains with every default.

    Raises:
        ConfigError: not a mapping, an unknown key (naming the known ones), or a bad value.
    """
    if values is None:
        return None
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source}: section 'pretrain' must be a mapping (or null for no "
                          f"pretraining), got {values!r}")
    options = base or PretrainOptions()
    own = {f.name for f in dataclasses.fields(PretrainOptions)} - {"training"}
    trained = {f.name for f in dataclasses.fields(PretrainConfig)} - {"seed"}
    unknown = sorted(set(values) - own - trained)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in section 'pretrain'; "
                          f"known: {', '.join(sorted(own | trained))}")
    updates = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        training = dataclasses.replace(
            options.training, **{k: v for k, v in updates.items() if k in trained})
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{source}: section 'pretrain': {exc}") from exc
    return dataclasses.replace(options, training=training,
                               **{k: v for k, v in updates.items() if k in own})


def check_config(config: PipelineConfig) -> None:
    """Cross-section rules, checked before any stage runs.

    With a ``pretrain`` section: its backbone is one of the paper's trunks; the features
    come from its output, so ``cache_features.weights`` must be unset and
    ``cache_features.backbone`` unset or equal to it; with ``finetune.init: pretrained``,
    ``finetune.hidden`` and ``finetune.levels`` must equal the pretrained fc6's.

    Raises:
        ConfigError: naming the keys and values that disagree.
    """
    pre = config.pretrain
    if pre is None:
        return
    if pre.backbone not in PAPER_TRUNKS:
        raise ConfigError(f"pretrain.backbone must be one of the paper's trunks "
                          f"({', '.join(PAPER_TRUNKS)}), got {pre.backbone!r}")
    cache = config.cache_features
    if cache.weights is not None:
        raise ConfigError(
            f"cache_features.weights ({cache.weights}) and a pretrain section both give the "
            f"features' weights; with a pretrain section the features are computed with its "
            f"output (backbones/<name>/weights.pt): remove one of the two")
    if cache.backbone is not None and cache.backbone != pre.backbone:
        raise ConfigError(
            f"cache_features.backbone is {cache.backbone!r} but the pretrain section trains "
            f"{pre.backbone!r}, whose weights compute the features: leave "
            f"cache_features.backbone out or set it to {pre.backbone!r}")
    ft = config.finetune
    if ft.init == "pretrained":
        if ft.hidden != pre.training.hidden:
            raise ConfigError(
                f"finetune.init 'pretrained' starts fc6/fc7 from the pretrain output, whose "
                f"width is pretrain.hidden = {pre.training.hidden}, but finetune.hidden is "
                f"{ft.hidden}: set them equal")
        if tuple(ft.levels) != tuple(pre.training.levels):
            raise ConfigError(
                f"finetune.init 'pretrained' starts fc6 from the pretrain output, pooled with "
                f"pretrain.levels = {list(pre.training.levels)}, but finetune.levels is "
                f"{list(ft.levels)}: set them equal")


def pretrain_arguments(config: PipelineConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`stages.pretrain.run` for ``config.pretrain``, with its
    defaults resolved: split ``train_split``, name ``<name>-<backbone>``, and the seed (of the
    training and of the background crops) the pipeline's unless the section sets one.

    Raises:
        ConfigError: ``config`` has no pretrain section.
    """
    pre = config.pretrain
    if pre is None:
        raise ConfigError("the pipeline config has no pretrain section")
    seed = config.seed if pre.seed is None else pre.seed
    return {"split": pre.split or config.train_split, "backbone": pre.backbone,
            "name": pre.name or f"{config.name}-{pre.backbone}",
            "config": dataclasses.replace(pre.training, seed=seed),
            "crop_options": {"context": pre.context,
                             "background_per_image": pre.background_per_image,
                             "include_difficult": pre.include_difficult, "seed": seed}}


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
    check_config(config)
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

    c = config.cache_features
    backbone, weights = c.backbone or DEFAULT_BACKBONE, c.weights
    if config.pretrain is not None:
        pretrained = step("pretrain", lambda: pretrain.run(
            dataset, work_dir, **pretrain_arguments(config), device=config.device,
            jobs=config.jobs, force=force))
        backbone, weights = config.pretrain.backbone, str(pretrained.weights.resolve())

    p = config.propose
    method_options = {"max_boxes": p.max_boxes, "max_size": p.max_size}
    if p.method.startswith("ss-"):
        method_options["min_size"] = p.min_size
    props, feats = {}, {}
    for split in dict.fromkeys([config.train_split, config.test_split]):
        props[split] = proposals_path(work_dir, dataset, split, p.method)
        step(f"propose {split}", lambda split=split: propose.run(
            dataset, split, props[split], method=p.method, method_options=method_options,
            jobs=config.jobs, force=force))
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
