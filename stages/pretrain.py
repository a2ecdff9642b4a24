"""Stage ``pretrain``: train a paper trunk as an SPP-net classifier (paper section 3).

Input: a classification folder (one sub-folder per class) or a VOC-layout detection dataset,
whose objects become image-level examples (crops with context, plus background crops). Output,
in ``<work>/backbones/<name>/``:

* ``weights.pt``: the trunk with fc6/fc7, the file ``cache-features --backbone <b> --weights``
  reads (and ``finetune --init pretrained`` starts fc6/fc7 from); it carries the record;
* ``classifier.pt``: the whole classifier (trunk, fc6-fc8, classes) for ``sppdet classify``;
* ``history.json``, ``curve.png``: per-epoch losses and errors;
* ``weights.pt.log``: the log. While training, ``train-state.pt`` holds the state after each
  epoch; a rerun with the same settings resumes from it (removed once the weights are written).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.io.atomic import write_text_atomic
from sppdet.io.records import Record, canonical_json
from sppdet.backbones import build_backbone
from sppdet.backbones.paper_nets import PaperTrunk
from sppdet.classification.examples import (
    ExampleSet,
    holdout_split,
    load_example_images,
    load_example_set,
)
from sppdet.classification.model import SPPClassifier, save_classifier
from sppdet.classification.training import ClassifierTrainer, EpochStats, PretrainConfig
from sppdet.devices import resolve_device
from sppdet.errors import ConfigError, Remedy
from sppdet.progress import get_logger

from .common import format_seconds
from .runner import StageOutput

log = get_logger("pretrain")
STAGE = "pretrain"
STAGE_VERSION = 1
WEIGHTS_FILE = "weights.pt"
CLASSIFIER_FILE = "classifier.pt"
HISTORY_FILE = "history.json"
CURVE_FILE = "curve.png"
STATE_FILE = "train-state.pt"


def examples_fingerprint(examples: ExampleSet) -> str:
    """Hash of every example's id, label, region and file size (16 hex)."""
    digest = hashlib.sha256()
    for example in examples.examples:
        digest.update(f"{example.image_id}|{example.label}|{example.box}|".encode())
        digest.update(str(example.image_path.stat().st_size).encode())
    return digest.hexdigest()[:16]


@dataclass
class PretrainSummary:
    """What a pretrain run did (printed at the end)."""

    out_dir: Path
    backbone: str
    classes: tuple[str, ...]
    n_train: int
    n_val: int
    config: PretrainConfig
    history: list[EpochStats] = field(default_factory=list)
    resumed_from_epoch: int = 0
    seconds: float = 0.0
    up_to_date: bool = False

    @property
    def weights(self) -> Path:
        return self.out_dir / WEIGHTS_FILE

    @property
    def next_step(self) -> Remedy:
        """How the weights are used: cache a dataset's features with them."""
        return Remedy.rerun("cache-features", "DATASET", verb="run", backbone=self.backbone,
                            weights=str(self.weights))

    @property
    def remedies(self) -> tuple[Remedy, ...]:
        """The remedies :meth:`to_text` words (a front end words them its own way)."""
        return () if self.up_to_date else (self.next_step,)

    def to_text(self) -> str:
        if self.up_to_date:
            return f"pretrain: {self.weights} is up to date"
        last = self.history[-1] if self.history else None
        lines = [
            f"pretrain: {self.backbone} as a {len(self.classes)}-way SPP classifier "
            f"({', '.join(self.classes)})",
            f"  examples: {self.n_train} training, {self.n_val} held out",
            f"  {self.config.epochs} epochs, input sizes "
            f"{sorted({stats.input_size for stats in self.history})} "
            f"(multi-size: {self.config.multi_size}), levels {list(self.config.levels)}",
        ]
        if self.resumed_from_epoch:
            lines.append(f"  resumed after epoch {self.resumed_from_epoch}")
        if last is not None:
            lines.append(f"  last epoch: {last.to_text()}")
        lines += [
            f"  time: {format_seconds(self.seconds)}",
            f"  backbone weights: {self.weights}",
            f"  classifier: {self.out_dir / CLASSIFIER_FILE}; curves: {self.out_dir / CURVE_FILE}",
            f"  use it: {self.next_step.describe()}",
        ]
        return "\n".join(lines)


def _start_fc_from(trunk: PaperTrunk, model: SPPClassifier) -> None:
    """Copy fc6/fc7 of a starting checkpoint into ``model`` when their shapes fit."""
    stored = trunk.fc_layers()
    if stored is None:
        return
    fits = all(stored[fc].weight.shape == getattr(model, fc).weight.shape for fc in stored)
    if not fits:
        log.warning("the starting checkpoint's fc6/fc7 do not fit this network (levels or "
                    "hidden width differ); they start from a fresh initialisation")
        return
    for fc, layer in stored.items():
        getattr(model, fc).load_state_dict(layer.state_dict())
    log.info("fc6/fc7 start from the checkpoint %s", trunk.weights_path)


def plot_history(history: list[EpochStats], path: Path) -> None:
    """Training loss and training/validation top-1 error per epoch (PNG)."""
    from sppdet.plotting import pyplot, save_png

    plt = pyplot()

    epochs = [stats.epoch + 1 for stats in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [s.train_loss for s in history], label="train")
    if any(s.val_loss is not None for s in history):
        ax_loss.plot(epochs, [s.val_loss for s in history], label="held out (centre crop)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_err.plot(epochs, [100 * s.train_error for s in history], label="train")
    if any(s.val_error is not None for s in history):
        ax_err.plot(epochs, [100 * s.val_error for s in history], label="held out")
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("top-1 error (%)")
    ax_err.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def run(dataset: str | Path, work_dir: str | Path, *, split: str = "trainval",
        backbone: str = "zf5", weights: str | None = None, name: str | None = None,
        config: PretrainConfig = PretrainConfig(), classes: tuple[str, ...] | None = None,
        crop_options: dict[str, Any] | None = None, device: str = "auto", jobs: int = 1,
        force: bool = False) -> PretrainSummary:
    """Train ``backbone`` + SPP + fc6/fc7/fc8 on the examples of ``dataset``.

    Args:
        dataset: a VOC-layout dataset or a classification folder (``<root>/<split>/<class>/``
            or ``<root>/<class>/``).
        work_dir: the work dir; output goes to ``<work>/backbones/<name>/``.
        split: split of a VOC dataset, or sub-folder of a classification folder.
        backbone: one of the paper's trunks (zf5, convnet5, overfeat5, overfeat7).
        weights: a checkpoint to start the trunk (and fc6/fc7 when it has them) from.
        name: output name (default ``<backbone>-<dataset folder>``).
        config: training settings.
        classes: class names of a VOC dataset (default: discovered).
        crop_options: object/background crop settings for VOC datasets (see
            :func:`sppdet.classification.examples.voc_crop_examples`).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        jobs: processes that decode the images.
        force: retrain even if the output is up to date, discarding a partial run.
    """
    started = time.perf_counter()
    trunk = build_backbone(backbone, weights, seed=config.seed)
    if not isinstance(trunk, PaperTrunk):
        raise ConfigError(
            f"pretrain trains the paper's trunks (zf5, convnet5, overfeat5, overfeat7); "
            f"{backbone!r} comes with its own ImageNet weights")
    name = name or f"{backbone}-{Path(dataset).resolve().name}"
    out_dir = Path(work_dir) / "backbones" / name
    weights_out = out_dir / WEIGHTS_FILE
    examples = load_example_set(Path(dataset), split, classes=classes, **(crop_options or {}))
    train_set, val_set = holdout_split(examples, config.val_fraction, seed=config.seed)
    params = {
        "examples": examples.source,
        "examples_fingerprint": examples_fingerprint(examples),
        "classes": list(examples.classes),
        "backbone": trunk.describe(),
        "config": config.to_dict(),
    }
    output = StageOutput(weights_out, Record(stage=STAGE, params=params,
                                             stage_version=STAGE_VERSION), force=force)
    summary = PretrainSummary(out_dir, backbone, examples.classes, len(train_set),
                              len(val_set), config)
    if output.is_current():
        summary.up_to_date = True
        return summary
    state_path = out_dir / STATE_FILE
    with output.writing():
        if force and state_path.exists():
            state_path.unlink()
        log.info("%d classes, %d training and %d held-out examples (%s)",
                 len(examples.classes), len(train_set), len(val_set),
                 ", ".join(f"{k}: {v}" for k, v in examples.counts().items()))
        load_started = time.perf_counter()
        train_images = load_example_images(train_set, short_side=config.image_size, jobs=jobs)
        val_images = (load_example_images(val_set, short_side=config.image_size, jobs=jobs)
                      if len(val_set) else [])
        log.info("decoded %d images in %s", len(train_images) + len(val_images),
                 format_seconds(time.perf_counter() - load_started))
        model = SPPClassifier(trunk, len(examples.classes), levels=config.levels,
                              hidden=config.hidden, dropout=config.dropout, seed=config.seed)
        _start_fc_from(trunk, model)
        identity = hashlib.sha256(canonical_json(params).encode()).hexdigest()
        trainer = ClassifierTrainer(config, device=resolve_device(device),
                                    checkpoint_path=state_path, identity=identity)
        result = trainer.train(model, train_images, train_set.labels(), val_images,
                               val_set.labels() if len(val_set) else None)
        model.cpu().eval()
        summary.history = result.history
        summary.resumed_from_epoch = result.resumed_from_epoch
        history = [stats.__dict__ for stats in result.history]
        write_text_atomic(out_dir / HISTORY_FILE, json.dumps(history, indent=1) + "\n")
        plot_history(result.history, out_dir / CURVE_FILE)
        meta = {"config": config.to_dict(), "examples": examples.source,
                "classes": list(examples.classes), "history": history}
        save_classifier(model, out_dir / CLASSIFIER_FILE, classes=examples.classes, meta=meta)
        last = result.history[-1]
        output.commit(lambda tmp: trunk.save_weights(str(tmp), model.fc_layers()), summary={
            "epochs": len(result.history), "train_loss": last.train_loss,
            "train_error": last.train_error, "val_error": last.val_error,
            "n_train": len(train_set), "n_val": len(val_set)})
        state_path.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - started
    return summary
