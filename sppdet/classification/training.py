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
from sppdet.classification.config import MULTI_SIZE_MODES, PretrainConfig  # re-exported
from sppdet.classification.model import SPPClassifier, image_tensor
from sppdet.errors import DataError, ModelError
from sppdet.progress import get_logger, progress

log = get_logger("pretrain")

TRAIN_STATE_FORMAT = "sppdet-pretrain-state"
# States written before the version tag have none and read as version 0 (same layout).
TRAIN_STATE_VERSION = 1


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
