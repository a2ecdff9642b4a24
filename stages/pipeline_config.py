"""The pipeline's configuration: :class:`PipelineConfig`, read from a YAML or JSON file.

A file holds top-level keys (``name``, ``train_split``, ``jobs``...) and one section per stage
(``pretrain``, ``propose``, ``cache_features``, ``finetune``, ``train_svm``,
``train_bbox_reg``, ``tune``, ``detect``; see ``docs/pipeline.example.yaml``). Each section is the
stage's parameter dataclass (:mod:`stages.params`; ``finetune`` is
:class:`~sppdet.training.finetune.config.FinetuneConfig`), whose defaults are the command
line's, and every value is checked against the field's type and rules: ``jobs: two`` or an
unknown key is an error naming the key and the file.

Free of torch and numpy: the ``pipeline`` command's options take their defaults from here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.classification.config import PretrainConfig
from sppdet.devices import check_device_name
from sppdet.errors import ConfigError, ParameterError
from sppdet.training.finetune.config import FinetuneConfig

from .params import (FINETUNE_SPLIT, METRICS, PAPER_TRUNKS, TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT,
                     BBoxRegOptions, CacheOptions, DetectOptions, PretrainOptions,
                     ProposeOptions, SvmOptions, TuneOptions, check_section, param,
                     unknown_keys_message)
from .recipes import (DEFAULT_RECIPE, RECIPES, RecipeChoice, choose_recipe, flat_keys,
                      recipe_values)


def _device_name(value: str) -> None:
    try:
        check_device_name(value)
    except ParameterError:
        raise ValueError("expected auto, cpu, cuda or cuda:N") from None


@dataclass
class PipelineConfig:
    """Everything a pipeline run needs besides the dataset and the work dir.

    Attributes:
        name: model name (``models/<name>/``, ``detections/<name>/``...).
        train_split: split the SVMs and box regressors train on (proposals and features are
            made for it; ``finetune_split`` and ``val_split`` must be subsets of it).
        test_split: split detected and evaluated.
        finetune_split: split the fc layers train on (``train`` when the dataset has it, so
            that ``val`` stays held out for checkpoint selection; else ``train_split``).
        val_split: held-out split for fine-tuning (``None``: no validation).
        metric: ``11point`` (VOC2007) or ``area``.
        jobs: worker processes for proposals and SVMs (with ``dask: local``, the workers of
            the local cluster).
        dask: run proposals, SVM mining and detection on Dask: ``local``, a scheduler address
            (``tcp://host:8786``) or a scheduler file; ``None`` runs them on this machine.
        device: ``auto``, ``cpu``, ``cuda[:N]``.
        seed: seed of every sampling stage (and of pretraining unless its section sets one).
        recipe: the base settings the file and the options are laid over: ``paper``,
            ``cpu`` or ``auto`` (``cpu`` on the CPU, ``paper`` on a GPU); see
            :mod:`stages.recipes`. :func:`resolve_config` applies it (and then holds the
            recipe used); a config built in code or by :func:`load_config` is run as it is.
        finetune_epochs: fine-tune for this many passes over the training split's positive
            windows instead of ``finetune.iterations`` (``None``: the iterations as given).
        pretrain: the optional pretraining step (``None``: none; the features come from
            ``cache_features.backbone`` and ``weights``).
    """

    name: str = "spp"
    train_split: str = TRAIN_SPLIT
    test_split: str = TEST_SPLIT
    finetune_split: str | None = FINETUNE_SPLIT
    val_split: str | None = VAL_SPLIT
    metric: str = param(METRICS[0], choices=METRICS)
    jobs: int = param(1, min=1)
    dask: str | None = None
    device: str = param("auto", check=_device_name)
    seed: int = 0
    recipe: str = param(DEFAULT_RECIPE, choices=RECIPES)
    finetune_epochs: float | None = param(None, min=0, min_open=True)
    propose: ProposeOptions = field(default_factory=ProposeOptions)
    cache_features: CacheOptions = field(default_factory=CacheOptions)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    train_svm: SvmOptions = field(default_factory=SvmOptions)
    train_bbox_reg: BBoxRegOptions = field(default_factory=BBoxRegOptions)
    tune: TuneOptions = field(default_factory=TuneOptions)
    detect: DetectOptions = field(default_factory=DetectOptions)
    pretrain: PretrainOptions | None = None

    def to_dict(self) -> dict[str, Any]:
        """The nested mapping a config file holds (:func:`config_from_dict` reads it back)."""
        values = dataclasses.asdict(self)
        values["pretrain"] = None if self.pretrain is None else self.pretrain.to_dict()
        return values


#: Section name -> its dataclass.
SECTIONS: dict[str, type] = {"propose": ProposeOptions, "cache_features": CacheOptions,
                             "finetune": FinetuneConfig, "train_svm": SvmOptions,
                             "train_bbox_reg": BBoxRegOptions, "tune": TuneOptions,
                             "detect": DetectOptions}


def _replace(section: Any, updates: Mapping[str, Any], source: str, name: str) -> Any:
    """``dataclasses.replace`` whose validation errors name the file and the section."""
    try:
        return dataclasses.replace(section, **updates)
    except ConfigError as exc:
        raise ConfigError(f"{source}: section {name!r}: {exc}") from exc


def config_from_dict(values: Mapping[str, Any], base: PipelineConfig | None = None,
                     source: str = "config") -> PipelineConfig:
    """Overlay ``values`` (nested dict, e.g. from YAML) on ``base`` (default: defaults).

    Raises:
        ConfigError: an unknown section or key, or a value of the wrong type or out of range;
            the message names ``source``, the section and the key.
    """
    config = base or PipelineConfig()
    top = check_section(PipelineConfig, {k: v for k, v in values.items()
                                         if k not in SECTIONS and k != "pretrain"},
                        source=source, section=None, skip=())
    for key, value in values.items():
        if key == "pretrain":
            config.pretrain = pretrain_from_dict(value, config.pretrain, source)
        elif key in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: section {key!r} must be a mapping, got "
                                  f"{value!r}")
            updates = check_section(SECTIONS[key], value, source=source, section=key)
            setattr(config, key, _replace(getattr(config, key), updates, source, key))
    return dataclasses.replace(config, **top)


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
        raise ConfigError(unknown_keys_message(unknown, own | trained, source=source,
                                               section="pretrain"))
    mine = check_section(PretrainOptions, {k: v for k, v in values.items() if k in own},
                         source=source, section="pretrain", skip=("training",))
    theirs = check_section(PretrainConfig, {k: v for k, v in values.items() if k in trained},
                           source=source, section="pretrain", skip=("seed",))
    training = _replace(options.training, theirs, source, "pretrain")
    return dataclasses.replace(options, training=training, **mine)


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
            "crop_options": pre.crop_options(seed)}


#: The demo's recipe (``sppdet demo``): the paper's pipeline scaled to a 2-core CPU: the
#: EfficientNet-Lite0 trunk with its packaged ImageNet weights (no download), one scale, 1,000
#: selective-search boxes per image, a narrower fc6/fc7 fine-tuned for fewer iterations.
DEMO_PIPELINE = PipelineConfig(
    name="demo",
    jobs=2,
    propose=ProposeOptions(method="ss-fast", max_boxes=1000, max_size=500),
    cache_features=CacheOptions(backbone="efficientnet_lite0", scales=(480,), flip=True),
    finetune=FinetuneConfig(iterations=1200, hidden=1024, lr=0.01, val_every=400,
                            checkpoint_every=400),
    detect=DetectOptions(scorer="svm"),
)
#: Test images the demo draws its detections on.
DEMO_FIGURES = 6


def load_config(path: str | Path, base: PipelineConfig | None = None) -> PipelineConfig:
    """Read a YAML or JSON pipeline config file.

    Raises:
        ConfigError: the file cannot be read or parsed, is not a mapping, or holds an unknown
            key or a bad value (the message names the file and the key).
    """
    return config_from_dict(read_config_values(path), base, source=str(path))


def read_config_values(path: str | Path) -> dict[str, Any]:
    """The nested mapping of a YAML or JSON pipeline config file, unchecked.

    Raises:
        ConfigError: the file cannot be read or parsed, or is not a mapping.
    """
    import yaml  # here: only a run with a config file needs it

    path = Path(path)
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the pipeline config ({exc})") from exc
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}: the pipeline config must be a mapping of sections")
    return dict(values)


@dataclass
class ResolvedConfig:
    """A run's configuration with the recipe applied, and where each setting came from.

    Attributes:
        config: the configuration.
        recipe: the recipe used and why.
        sources: dotted key (``finetune.lr``) -> what set it (``recipe cpu``, a file, an
            option); keys absent are the declared defaults.
    """

    config: PipelineConfig
    recipe: RecipeChoice
    sources: dict[str, str] = field(default_factory=dict)

    def explicit(self, key: str) -> bool:
        """The key was given by a config file or an option (not a default or the recipe)."""
        return key in self.sources and not self.sources[key].startswith("recipe")


def resolve_config(layers: list[tuple[str, Mapping[str, Any]]],
                   device_type: Callable[[str], str]) -> ResolvedConfig:
    """Lay the recipe, then each of ``layers`` (a config file, the options) over the defaults.

    The recipe is the last layer's ``recipe`` key (default ``auto``); ``auto`` asks
    ``device_type`` for the type (``cpu``/``cuda``) of the run's ``device`` (the last layer's,
    default ``auto``). Fine-tuning iterations given by a layer replace the recipe's epochs.

    Args:
        layers: ``(label, nested mapping)`` in increasing priority, e.g.
            ``[("config.yaml", {...}), ("--iterations", {"finetune": {"iterations": 900}})]``;
            the label names the source in messages and in the plan.
        device_type: device name -> its type.

    Raises:
        ConfigError: an unknown recipe, key or bad value (naming the layer), or both
            ``finetune.iterations`` and ``finetune_epochs`` given.
    """
    def last(key: str, default: Any) -> tuple[Any, str]:
        for label, values in reversed(layers):
            if key in values:
                return values[key], label
        return default, "default"

    requested, source = last("recipe", DEFAULT_RECIPE)
    device, _ = last("device", "auto")
    if requested not in RECIPES:
        raise ConfigError(f"{source}: unknown recipe {requested!r}; choose from "
                          f"{', '.join(RECIPES)}")
    choice = choose_recipe(requested, device_type(device) if requested == "auto" else "",
                           source=source)
    base_values = recipe_values(choice.name)
    config = config_from_dict(base_values, None, source=f"recipe {choice.name}")
    sources = {key: f"recipe {choice.name}" for key in flat_keys(base_values)}
    for label, values in layers:
        config = config_from_dict(values, config, source=label)
        sources.update({key: label for key in flat_keys(values)})
    config.recipe = choice.name  # the recipe used, never "auto"
    resolved = ResolvedConfig(config, choice, sources)
    if resolved.explicit("finetune.iterations"):
        if resolved.explicit("finetune_epochs"):
            raise ConfigError(
                f"finetune.iterations ({sources['finetune.iterations']}) and finetune_epochs "
                f"({sources['finetune_epochs']}) both give the fine-tuning length: give one")
        if config.finetune_epochs is not None:
            config.finetune_epochs = None
            sources.pop("finetune_epochs", None)
    return resolved
