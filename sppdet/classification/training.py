"""Training an :class:`~sppdet.classification.model.SPPClassifier` (paper 3.1): single-size and
multi-size training, SGD with the learning rate divided by 10 on plateau, resumable.

Input sizes per epoch (``multi_size``):

* ``"off"``: every epoch at ``crop_size`` (the paper's single-size training, 224);
* ``"alternate"``: even epochs (0-based) at ``crop_size``, odd epochs at ``small_size`` -- the
  paper's multi-size training, "each full epoch on 224, then 180";
* ``"random"``: each epoch one size drawn uniformly from ``[small_size, crop_size]`` (the
  paper's variant, 3.1.3).

The smaller input is always the ``crop_size`` crop resized (same content, lower resolution),
as in the paper. All sizes share every weight: it is one network, SPP makes fc6's input length
independent of the map size.

Determinism: the epoch's order comes from ``(seed, epoch)``, each batch's crops, flips and
colour jitter from ``(seed, epoch, batch)``, and dropout from a seed per epoch, so a run resumed
from its end-of-epoch checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from sppdet.io.checkpoints import load_training_state, save_checkpoint
from sppdet.classification.augment import center_crop, train_view
from sppdet.classification.model import SPPClassifier, image_tensor
from sppdet.errors import ConfigError, DataError, ModelError
from sppdet.progress import get_logger, progress
from sppdet.ops.spp import DEFAULT_LEVELS

log = get_logger("pretrain")

MULTI_SIZE_MODES = ("off", "alternate", "random")
TRAIN_STATE_FORMAT = "sppdet-pretrain-state"
# States written before the version tag have none and read as version 0 (same layout).
TRAIN_STATE_VERSION = 1


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
        rng = np.random.default_rng([self.seed, epoch, 0x5153])
        return int(rng.integers(self.small_size, self.crop_size + 1))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["levels"] = list(self.levels)
        data["lr_drop_epochs"] = list(self.lr_drop_epochs)
        return data


@dataclass
class EpochStats:
    """One epoch of training: its input size, rate, losses and errors (fractions)."""

    epoch: int
    input_size: int
    lr: float
    train_loss: float
    train_error: float
    val_loss: float | None
    val_error: float | None
    seconds: float

    def to_text(self) -> str:
        text = (f"epoch {self.epoch + 1}: input {self.input_size}, lr {self.lr:.3g}, "
                f"train loss {self.train_loss:.4f} error {100 * self.train_error:.2f}%")
        if self.val_error is not None:
            text += f", val loss {self.val_loss:.4f} error {100 * self.val_error:.2f}%"
        return text + f" ({self.seconds:.0f} s)"


@dataclass
class TrainResult:
    """What :meth:`ClassifierTrainer.train` did."""

    history: list[EpochStats] = field(default_factory=list)
    resumed_from_epoch: int = 0
    seconds: float = 0.0


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if name.endswith("bias") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for dropout, restoring the caller's state afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class ClassifierTrainer:
    """SGD training of an :class:`SPPClassifier` on in-memory example images.

    Args:
        config: the settings.
        device: where to train.
        checkpoint_path: training state written at the end of every epoch (and read to
            resume); None disables it.
        identity: a string that identifies the run (settings + inputs); a checkpoint of
            another identity is refused, never silently resumed.
    """

    def __init__(self, config: PretrainConfig, *, device: str | torch.device = "cpu",
                 checkpoint_path: str | Path | None = None, identity: str = "") -> None:
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.identity = identity

    # ------------------------------------------------------------------ batches
    def batches(self, images: Sequence[np.ndarray],
                epoch: int) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        """The epoch's batches: ``(example indices, augmented [s, s, 3] uint8 views)``.

        Depends only on ``(config, epoch, images)``; the views have the epoch's input size.
        """
        cfg = self.config
        size = cfg.input_size(epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(images))
        for batch, start in enumerate(range(0, len(order), cfg.batch_size)):
            rows = order[start:start + cfg.batch_size]
            rng = np.random.default_rng([cfg.seed, epoch, batch + 1])
            views = [train_view(images[i], cfg.crop_size, size, rng, flip=cfg.flip,
                                jitter=cfg.jitter) for i in rows]
            yield rows, views

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def centre_crop_loss(self, model: SPPClassifier, images: Sequence[np.ndarray],
                         labels: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy and top-1 error (fraction) of the centre crops."""
        model.eval()
        total_loss, wrong = 0.0, 0
        step = self.config.batch_size
        for start in range(0, len(images), step):
            crops = [center_crop(image, self.config.crop_size)
                     for image in images[start:start + step]]
            target = torch.as_tensor(labels[start:start + step], device=self.device)
            logits = model(image_tensor(model, crops).to(self.device))
            total_loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            wrong += int((logits.argmax(1) != target).sum())
        return total_loss / max(len(images), 1), wrong / max(len(images), 1)

    # ------------------------------------------------------------------ training
    def train(self, model: SPPClassifier, images: Sequence[np.ndarray], labels: np.ndarray,
              val_images: Sequence[np.ndarray] = (), val_labels: np.ndarray | None = None, *,
              on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
        """Train ``model`` in place for ``config.epochs`` epochs (resuming when possible).

        Args:
            model: the classifier (its trunk and fc layers all train).
            images: ``[h, w, 3]`` uint8 RGB examples, shorter side ``>= crop_size``.
            labels: int ``[N]`` class indices.
            val_images, val_labels: held-out examples (centre crops) whose top-1 error drives
                the rate drops; without them the training loss does.
            on_epoch: called with each finished epoch's stats (after its checkpoint).

        Returns:
            the history of all epochs (including those of a resumed run).

        Raises:
            DataError: no examples, labels out of range, or images too small for the crop.
            StaleArtifactError: a checkpoint of another run is in the way.
        """
        cfg = self.config
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        val_labels = (np.zeros(0, np.int64) if val_labels is None
                      else np.asarray(val_labels, dtype=np.int64).reshape(-1))
        self._check_examples(model, images, labels, "training")
        if len(val_images):
            self._check_examples(model, val_images, val_labels, "validation")
        model.to(self.device)
        optimizer = torch.optim.SGD(_parameter_groups(model, cfg.weight_decay), lr=cfg.lr,
                                    momentum=cfg.momentum)
        if cfg.lr_drop_epochs:
            scheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=list(cfg.lr_drop_epochs), gamma=cfg.lr_factor)
        else:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
        result = TrainResult()
        start_epoch = self._resume(model, optimizer, scheduler, result)
        started = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs):
            epoch_started = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            train_loss, train_error = self._train_epoch(model, optimizer, images, labels, epoch)
            val_loss = val_error = None
            if len(val_images):
                val_loss, val_error = self.centre_crop_loss(model, val_images, val_labels)
            if not math.isfinite(train_loss):
                raise ModelError(f"training diverged in epoch {epoch + 1} (loss {train_loss}); "
                                 f"lower the learning rate (now {lr:g})")
            if cfg.lr_drop_epochs:
                scheduler.step()
            else:
                scheduler.step(val_error if val_error is not None else train_loss)
            stats = EpochStats(epoch, cfg.input_size(epoch), lr, train_loss, train_error,
                               val_loss, val_error, time.perf_counter() - epoch_started)
            result.history.append(stats)
            log.info(stats.to_text())
            self._save_state(model, optimizer, scheduler, epoch + 1, result.history)
            if on_epoch is not None:
                on_epoch(stats)
        result.seconds = time.perf_counter() - started
        model.eval()
        return result

    def _train_epoch(self, model: SPPClassifier, optimizer: torch.optim.Optimizer,
                     images: Sequence[np.ndarray], labels: np.ndarray,
                     epoch: int) -> tuple[float, float]:
        cfg = self.config
        model.train()
        total_loss, wrong, seen = 0.0, 0, 0
        n_batches = math.ceil(len(images) / cfg.batch_size)
        with _seeded_torch(cfg.seed * 1_000_003 + epoch, self.device):
            for rows, views in progress(self.batches(images, epoch), total=n_batches,
                                        desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch"):
                target = torch.as_tensor(labels[rows], device=self.device)
                logits = model(image_tensor(model, views).to(self.device))
                loss = nn.functional.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(rows)
                wrong += int((logits.detach().argmax(1) != target).sum())
                seen += len(rows)
        return total_loss / seen, wrong / seen

    def _check_examples(self, model: SPPClassifier, images: Sequence[np.ndarray],
                        labels: np.ndarray, what: str) -> None:
        if not len(images):
            raise DataError(f"no {what} examples")
        if len(images) != len(labels):
            raise DataError(f"{len(images)} {what} images but {len(labels)} labels")
        if labels.min() < 0 or labels.max() >= model.num_classes:
            raise DataError(f"{what} labels must lie in [0, {model.num_classes}), got "
                            f"[{labels.min()}, {labels.max()}]")
        crop = self.config.crop_size
        small = [i for i, image in enumerate(images) if min(image.shape[:2]) < crop]
        if small:
            raise DataError(f"{len(small)} {what} image(s) have a side shorter than the crop "
                            f"size {self.config.crop_size} (first: example {small[0]}, "
                            f"{images[small[0]].shape[:2]}); store them at image_size "
                            f">= crop_size")

    # ------------------------------------------------------------------ checkpoints
    def _save_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epochs_done: int, history: list[EpochStats]) -> None:
        if self.checkpoint_path is None:
            return
        state = {
            "epochs_done": epochs_done,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": [asdict(stats) for stats in history],
        }
        save_checkpoint(self.checkpoint_path, state, format=TRAIN_STATE_FORMAT,
                        version=TRAIN_STATE_VERSION, identity=self.identity)

    def _resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                result: TrainResult) -> int:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return 0
        state = load_training_state(path, format=TRAIN_STATE_FORMAT, version=TRAIN_STATE_VERSION,
                                    what="pretraining checkpoint", identity=self.identity,
                                    map_location=self.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        result.history = [EpochStats(**stats) for stats in state["history"]]
        result.resumed_from_epoch = int(state["epochs_done"])
        log.info("resuming after epoch %d from %s", result.resumed_from_epoch, path)
        return result.resumed_from_epoch


__all__ = ["ClassifierTrainer", "EpochStats", "MULTI_SIZE_MODES", "PretrainConfig",
           "TrainResult"]
