"""Hyper-parameters of fc fine-tuning, the window labelling bands and the learning-rate
schedule (REFERENCE section 5).

Free of torch and numpy: the pipeline config and the command line's options (whose defaults
come from here) load in an instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sppdet.errors import ConfigError
from sppdet.ops.spp_levels import DEFAULT_LEVELS

#: Paper 4.1: positives have IoU >= 0.5 with a ground-truth box.
FG_IOU = 0.5
#: Paper 4.1: negatives have IoU in [0.1, 0.5).
BG_IOU_LOW = 0.1
BG_IOU_HIGH = 0.5


def check_thresholds(fg_iou: float, bg_iou_low: float, bg_iou_high: float) -> None:
    """Refuse IoU bands that are out of [0, 1] or let a window be positive and negative."""
    if not 0.0 < fg_iou <= 1.0:
        raise ConfigError(f"fg_iou must be in (0, 1], got {fg_iou}")
    if not 0.0 <= bg_iou_low < bg_iou_high <= 1.0:
        raise ConfigError(f"the negative band [bg_iou_low, bg_iou_high) must satisfy "
                          f"0 <= low < high <= 1, got [{bg_iou_low}, {bg_iou_high})")
    if bg_iou_high > fg_iou:
        raise ConfigError(f"bg_iou_high ({bg_iou_high}) must not exceed fg_iou ({fg_iou}): a "
                          "window would be both positive and negative")


SELECT_BY = ("loss", "accuracy", "last")
INITS = ("he", "gaussian", "pretrained")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of fine-tuning (defaults: the released code, REFERENCE section 5).

    Attributes:
        iterations: mini-batches in total (released code: 3 x 30,000).
        batch_size: windows per mini-batch (128).
        fg_fraction: share of positives in a mini-batch (0.25, i.e. 32 of 128).
        lr: learning rate of the first step (1e-3).
        lr_steps: the iterations are split into this many equal parts; the rate is multiplied
            by ``lr_gamma`` at the start of each part after the first (3 parts: 1e-3, 1e-4,
            1e-5).
        lr_gamma: factor between parts (0.1).
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay of the weights (5e-4); biases have none (Caffe nets).
        bias_lr_mult: biases learn at this multiple of ``lr`` (2, the Caffe nets' setting).
        hidden: width of fc6 and fc7 (4096 in the paper). With ``init="pretrained"`` it must
            equal the pretrained fc6's width, else :func:`init_head` raises a ConfigError
            that names the value to pass. It does not follow that width by itself: a config
            field means the same under every init and is recorded as given, and a default
            cannot be told from an explicit ``--hidden 4096`` (which must not be silently
            overridden).
        dropout: dropout after fc6 and fc7 (0.5).
        init: initialisation of fc6 and fc7. ``"pretrained"`` is the paper's: copy fc6/fc7
            from the weights file recorded in the training features artifact (the
            ``cache-features --weights`` file, e.g. from ``sppdet pretrain``), which must
            still have the recorded SHA-256 and hold fc6/fc7 of matching shapes
            (:func:`sppdet.features.pretrained_fc.load_pretrained_fc`); the default trunk
            (EfficientNet-Lite0 cut at stride 16) has no such layers, so the other choices
            start random: ``"he"`` (**default**; zero-mean Gaussian with std
            ``sqrt(2 / fan_in)``, He et al. 2015, for ReLU layers) or ``"gaussian"`` (std
            0.005, the Caffe fc default of the era, which learns very slowly from scratch).
            fc8 is always new, Gaussian with std 0.01 (paper).
        scale_inputs: multiply every pooled vector by one factor, estimated on a fixed sample
            of training windows, so that its values have a root mean square of 1 (the He
            initialisation assumes inputs of that size; conv5 of EfficientNet-Lite0 has an RMS
            of about 7, which makes a learning rate of 1e-2 diverge). The factor is folded
            into fc6's weights when the model is saved, so the saved head takes raw pooled
            features. Off: features as cached (as the paper, whose fc6 came pretrained).
            Always off with ``init="pretrained"`` (set to False by the constructor; the
            recorded input scale is 1.0): the pretrained fc6 was trained on raw pooled
            features, and rescaling them would change what it computes.
        flip: use mirrored maps for half of the images when the cache holds them.
        images_per_chunk: images whose windows feed one chunk of mini-batches.
        iterations_per_chunk: mini-batches planned and pooled together.
        val_every: validate every this many iterations (and at the end); 0 = only at the end.
        val_windows: windows in the fixed validation sample (same positive share).
        val_images: at most this many validation images are sampled from (0 = all).
        select_by: which checkpoint becomes the model: lowest validation ``loss``
            (**default**), highest validation ``accuracy``, or the ``last`` iteration.
        checkpoint_every: save the training state every this many iterations (0 = never).
        log_every: log the mean training loss every this many iterations.
        seed: seeds the fc initialisation, the sampler and dropout.
        levels: SPP pyramid levels (fixed once a model is trained).
        fg_iou, bg_iou_low, bg_iou_high: window labelling bands (recorded here; applied by
            :func:`sppdet.training.windows.build_split_windows`).
        include_gt: ground-truth boxes are training windows (released code).
    """

    iterations: int = 90_000
    batch_size: int = 128
    fg_fraction: float = 0.25
    lr: float = 1e-3
    lr_steps: int = 3
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 2.0
    hidden: int = 4096
    dropout: float = 0.5
    init: str = "he"
    scale_inputs: bool = True
    flip: bool = True
    images_per_chunk: int = 64
    iterations_per_chunk: int = 32
    val_every: int = 1000
    val_windows: int = 4096
    val_images: int = 500
    select_by: str = "loss"
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    levels: tuple[int, ...] = DEFAULT_LEVELS
    fg_iou: float = FG_IOU
    bg_iou_low: float = BG_IOU_LOW
    bg_iou_high: float = BG_IOU_HIGH
    include_gt: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(int(n) for n in self.levels))
        positive = ("iterations", "batch_size", "lr_steps", "hidden", "images_per_chunk",
                    "iterations_per_chunk", "val_windows", "log_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("val_every", "val_images", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise ConfigError(f"fg_fraction must be in [0, 1], got {self.fg_fraction}")
        for name in ("lr", "lr_gamma", "bias_lr_mult"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init == "pretrained":
            # the pretrained fc6 expects raw pooled features (see the docstring)
            object.__setattr__(self, "scale_inputs", False)
        if self.select_by not in SELECT_BY:
            raise ConfigError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        check_thresholds(self.fg_iou, self.bg_iou_low, self.bg_iou_high)

    @property
    def fg_per_batch(self) -> int:
        return int(round(self.fg_fraction * self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def learning_rate(iteration: int, config: FinetuneConfig) -> float:
    """Base learning rate of 0-based ``iteration``: ``lr * gamma ** part`` over equal parts."""
    part = min(iteration * config.lr_steps // config.iterations, config.lr_steps - 1)
    return config.lr * config.lr_gamma ** part
