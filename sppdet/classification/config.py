"""Settings of classifier training (:class:`PretrainConfig`) and the named choices of the
classification code (test modes, representations, view sets).

Free of torch and numpy, so that the pipeline config and the command line's options (whose
defaults and choices come from here) load in an instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sppdet.errors import ConfigError
from sppdet.ops.spp_levels import DEFAULT_LEVELS

#: Input sizes per epoch of :class:`PretrainConfig` (``sppdet.classification.training``).
MULTI_SIZE_MODES = ("off", "alternate", "random")
#: Test modes of ``sppdet.classification.evaluate`` (paper 3.1.4-3.1.5).
MODES = ("crop", "full", "multiview")
#: Representations :meth:`SPPClassifier.representation` gives (paper 3.2).
REPRESENTATIONS = ("spp", "fc6", "fc7")
#: View sets of :func:`~sppdet.classification.model.view_windows` (paper 3.1.5).
VIEW_SETS = ("1", "10", "18")
VIEW_MAPPINGS = ("crop", "paper")


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of classifier training (defaults: the paper's recipe, 3.1).

    Attributes:
        epochs: passes over the training examples.
        batch_size: examples per SGD step (128 in the paper; 64 suits a CPU).
        lr: starting learning rate (0.01, paper).
        momentum: SGD momentum (0.9).
        weight_decay: L2 decay of weights (5e-4); biases have none.
        lr_factor: the rate is multiplied by this when the validation error stops improving
            (0.1: "divided by 10 when the error plateaus").
        lr_patience: epochs without improvement before the rate drops.
        lr_drop_epochs: a fixed schedule instead: the (0-based) epochs from which the rate is
            multiplied by ``lr_factor`` once more, e.g. ``(8, 11)``; empty (**default**) = on
            plateau. A fixed schedule makes runs that differ in one setting comparable (a
            plateau schedule reacts to each run's own noisy held-out error).
        crop_size: training crop side in pixels (224).
        image_size: examples are stored with their shorter side at this many pixels; training
            crops are cut from them (256). Also the full-image test size.
        multi_size: ``"off"``, ``"alternate"`` or ``"random"`` (module docstring).
        small_size: the other input size of multi-size training (180).
        flip: random horizontal mirroring.
        jitter: colour jitter strength (brightness, contrast, saturation in ``[1-s, 1+s]``).
        levels: pyramid levels; ``(6,)`` is the no-SPP baseline.
        hidden: width of fc6 and fc7 (4096).
        dropout: dropout after fc6 and fc7 (0.5).
        val_fraction: share of each class held out to watch the error (drives the rate drops).
        seed: seeds the initialisation, the hold-out, the order, augmentation and dropout.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_factor: float = 0.1
    lr_patience: int = 2
    lr_drop_epochs: tuple[int, ...] = ()
    crop_size: int = 224
    image_size: int = 256
    multi_size: str = "off"
    small_size: int = 180
    flip: bool = True
    jitter: float = 0.2
    levels: tuple[int, ...] = DEFAULT_LEVELS
    hidden: int = 4096
    dropout: float = 0.5
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(int(n) for n in self.levels))
        object.__setattr__(self, "lr_drop_epochs", tuple(int(n) for n in self.lr_drop_epochs))
        if any(n < 1 for n in self.lr_drop_epochs) or \
                list(self.lr_drop_epochs) != sorted(set(self.lr_drop_epochs)):
            raise ConfigError(f"lr_drop_epochs must be increasing epochs >= 1, got "
                              f"{self.lr_drop_epochs}")
        for name in ("epochs", "batch_size", "crop_size", "image_size", "small_size", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.lr_patience < 0:
            raise ConfigError(f"lr_patience must be >= 0, got {self.lr_patience}")
        if self.multi_size not in MULTI_SIZE_MODES:
            raise ConfigError(f"multi_size must be one of {MULTI_SIZE_MODES}, "
                              f"got {self.multi_size!r}")
        if self.image_size < self.crop_size:
            raise ConfigError(f"image_size ({self.image_size}) must be >= crop_size "
                              f"({self.crop_size}): crops are cut from the stored images")
        if self.multi_size != "off" and not self.small_size < self.crop_size:
            raise ConfigError(f"multi-size training needs small_size < crop_size, got "
                              f"{self.small_size} and {self.crop_size}")
        if not self.lr > 0 or not 0 < self.lr_factor < 1:
            raise ConfigError(f"lr must be > 0 and lr_factor in (0, 1), got {self.lr}, "
                              f"{self.lr_factor}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(f"momentum must be in [0, 1) and weight_decay >= 0, got "
                              f"{self.momentum}, {self.weight_decay}")
        if not 0 <= self.jitter < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"jitter and dropout must be in [0, 1), got {self.jitter}, "
                              f"{self.dropout}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def input_size(self, epoch: int) -> int:
        """Network input side (pixels) of 0-based ``epoch``."""
        if self.multi_size == "off":
            return self.crop_size
        if self.multi_size == "alternate":
            return self.crop_size if epoch % 2 == 0 else self.small_size
        import numpy as np  # here: the config itself loads without numpy

        rng = np.random.default_rng([self.seed, epoch, 0x5153])
        return int(rng.integers(self.small_size, self.crop_size + 1))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        data["lr_drop_epochs"] = list(self.lr_drop_epochs)
        return data
