"""Stage ``finetune``: fc6, fc7 and a new (K+1)-way fc8 trained on cached SPP features.

Inputs: the proposals and the feature cache of the training split, and of a held-out
validation split (``val`` by default; never the test split). Output:
``models/<name>/fc.pt`` (:meth:`sppdet.features.fc_head.FcHead.save`, with the backbone, scales,
levels and classes in its meta) and its record, the training curve ``fc.curve.png`` and the
log ``fc.pt.log``. With ``init: pretrained`` fc6/fc7 start from the weights file the training
features were cached with (its SHA-256 is checked and named in the record). While training,
``fc.train-state.pt`` holds a checkpoint every ``checkpoint_every`` iterations; a rerun with
the same settings resumes from it (and it is removed once ``fc.pt`` is written).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.item_store import ItemReader
from sppdet.io.records import Record, input_ref, read_record
from sppdet.data.voc import VOCDataset
from sppdet.devices import resolve_device
from sppdet.errors import ConfigError, DataError, Remedy, StaleArtifactError
from sppdet.features.cache import FEATURES_STAGE, FeatureCache
from sppdet.training.finetune.compatibility import check_features_match, model_meta
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.plot import plot_training_curve
from sppdet.training.finetune.trainer import FcFinetuner
from sppdet.features.pretrained_fc import load_pretrained_fc, pretrained_weights_file
from sppdet.progress import get_logger
from sppdet.training.finetune_windows import SplitWindows, build_split_windows

from .common import dataset_params, format_seconds
from .runner import StageOutput

log = get_logger("finetune")
STAGE = "finetune"
STAGE_VERSION = 1
PROPOSALS_STAGE = "propose"
MODEL_FILE = "fc.pt"
CURVE_FILE = "fc.curve.png"
CHECKPOINT_FILE = "fc.train-state.pt"


@dataclass
class WindowStats:
    """Labelled windows of one split."""

    split: str
    images: int
    positives: int
    negatives: int
    skipped: dict[str, str] = field(default_factory=dict)
    per_class: dict[str, int] = field(default_factory=dict)

    def to_text(self) -> str:
        text = (f"{self.split}: {self.images} images, {self.positives} positive and "
                f"{self.negatives} negative windows")
        if self.skipped:
            text += f"; {len(self.skipped)} image(s) skipped"
        return text


@dataclass
class FinetuneSummary:
    """What a finetune run did (printed at the end, stored in the record)."""

    path: Path
    curve_path: Path | None = None
    iterations: int = 0
    iterations_run: int = 0
    seconds: float = 0.0
    ms_per_iteration: float = 0.0
    ms_pooling_per_iteration: float = 0.0
    ms_step_per_iteration: float = 0.0
    device: str = "cpu"
    best_iteration: int = 0
    best_val: dict[str, float] | None = None
    select_by: str = "loss"
    train: WindowStats | None = None
    val: WindowStats | None = None
    resumed_from: int | None = None
    init_from: str | None = None
    short_batches: int = 0
    warnings: list[str] = field(default_factory=list)
    up_to_date: bool = False

    def to_text(self) -> str:
        if self.up_to_date:
            return f"fc layers are up to date: {self.path}"
        lines = [f"Fine-tuned fc6/fc7/fc8 for {self.iterations} iterations -> {self.path}"]
        run = f"{self.iterations_run} iterations in {format_seconds(self.seconds)} on " \
              f"{self.device}"
        if self.resumed_from is not None:
            run += f" (resumed at iteration {self.resumed_from})"
        if self.iterations_run:
            run += (f"; {self.ms_per_iteration:.0f} ms per iteration (pooling "
                    f"{self.ms_pooling_per_iteration:.0f}, fc step "
                    f"{self.ms_step_per_iteration:.0f})")
        lines.append("  " + run)
        if self.init_from is not None:
            lines.append(f"  fc6/fc7 started from {self.init_from}")
        for stats in (self.train, self.val):
            if stats is not None:
                lines.append("  " + stats.to_text())
        if self.best_val is not None:
            val = self.best_val
            lines.append(f"  selected iteration {self.best_iteration} (best validation "
                         f"{self.select_by}): loss {val['loss']:.4f}, accuracy "
                         f"{100 * val['accuracy']:.1f} %, positives "
                         f"{100 * val['fg_accuracy']:.1f} %, negatives "
                         f"{100 * val['bg_accuracy']:.1f} %")
        else:
            lines.append(f"  no validation: kept the last iteration ({self.best_iteration})")
        if self.short_batches:
            lines.append(f"  {self.short_batches} mini-batch(es) held fewer positives than "
                         "asked (too few in their images)")
        if self.curve_path is not None:
            lines.append(f"  training curve: {self.curve_path}")
        lines += [f"  Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def default_val_split(dataset: str | Path) -> str | None:
    """``val`` when the dataset has that split, else ``None`` (no validation)."""
    return "val" if (Path(dataset) / "ImageSets" / "Main" / "val.txt").is_file() else None


def _check_input(path: Path, made_by: str, data: VOCDataset, what: str) -> Record:
    """The record of an input artifact; refuse one made by another stage or on other data."""
    record = read_record(path, made_by=made_by)
    if record.stage != made_by:
        raise ConfigError(f"{path} was made by `sppdet {record.stage}`, not by `sppdet "
                          f"{made_by}`; give the {what} file")
    made_on = record.params.get("data")
    if isinstance(made_on, Mapping):
        here = dataset_params(data)
        if made_on.get("dataset") != here["dataset"]:
            raise ConfigError(f"{path} was made on {made_on.get('dataset')}, not on "
                              f"{here['dataset']}; give the {what} of this dataset")
        if made_on.get("split") != data.split:
            # an artifact of a superset split (trainval for train and val) serves when it is
            # current for its own split; images it lacks are reported where they are read
            try:
                here = dataset_params(VOCDataset(data.root, str(made_on.get("split")),
                                                 data.classes))
            except DataError as exc:
                raise ConfigError(f"{path} was made on split '{made_on.get('split')}', which "
                                  f"cannot be read any more ({exc}); give the {what} of split "
                                  f"'{data.split}'") from exc
        if made_on.get("fingerprint") not in (None, here["fingerprint"]):
            raise StaleArtifactError(f"{path} was made before the annotations or images of "
                                     f"split '{made_on.get('split')}' changed",
                                     remedy=Remedy.rerun(made_by, purpose=" for it", force=True))
    return record


def _split_windows(data: VOCDataset, proposals: Path, cache: FeatureCache,
                   config: FinetuneConfig) -> SplitWindows:
    sizes = {a.image_id: (a.width, a.height) for a in data}
    with ItemReader(proposals, made_by=PROPOSALS_STAGE) as reader:
        def proposals_of(image_id: str) -> np.ndarray | None:
            if image_id not in reader:
                return None
            group = reader.group(image_id)
            width, height = int(group.attrs["width"]), int(group.attrs["height"])
            if (width, height) != sizes[image_id]:
                raise DataError(f"{proposals}: image {image_id} is {width}x{height} in the "
                                f"proposals but {sizes[image_id][0]}x{sizes[image_id][1]} in "
                                "the dataset", remedy=Remedy.rerun(PROPOSALS_STAGE, force=True))
            return group["boxes"][()]

        windows = build_split_windows(data, proposals_of, len(data.classes),
                                      fg_iou=config.fg_iou, bg_iou_low=config.bg_iou_low,
                                      bg_iou_high=config.bg_iou_high,
                                      include_gt=config.include_gt,
                                      has_features=lambda image_id: image_id in cache)
    # an artifact without any of the split's images is the wrong file, not a few failed images
    for path, reason in ((cache.path, "not in the features artifact"),
                         (proposals, "not in the proposals artifact")):
        if sum(r == reason for r in windows.skipped.values()) == len(data):
            raise ConfigError(f"{path} holds none of the {len(data)} images of split "
                              f"'{data.split}' (e.g. {data.image_ids[0]}); give the artifact "
                              "of that split")
    return windows


def _stats(split: str, windows: SplitWindows, classes: tuple[str, ...]) -> WindowStats:
    counts = windows.class_counts()
    return WindowStats(split=split, images=windows.n_images, positives=windows.n_positive,
                       negatives=windows.n_negative, skipped=dict(windows.skipped),
                       per_class={name: int(counts[i + 1]) for i, name in enumerate(classes)})


def _window_warnings(stats: WindowStats, config: FinetuneConfig) -> list[str]:
    warnings = []
    empty = [name for name, count in stats.per_class.items() if count == 0]
    if empty:
        warnings.append(f"no positive window of class(es) {', '.join(empty)} in split "
                        f"'{stats.split}': fc8 learns nothing for them")
    if 0 < stats.positives < config.fg_per_batch:
        warnings.append(f"split '{stats.split}' has only {stats.positives} positive windows, "
                        f"fewer than the {config.fg_per_batch} a mini-batch asks for; "
                        "mini-batches take what exists and fill up with negatives")
    elif stats.positives == 0:
        warnings.append(f"split '{stats.split}' has no positive window at all: training sees "
                        "only background")
    if stats.skipped:
        reasons: dict[str, int] = {}
        for reason in stats.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        listed = "; ".join(f"{count} {reason}" for reason, count in reasons.items())
        example = ", ".join(list(stats.skipped)[:5])
        warnings.append(f"{len(stats.skipped)} image(s) of split '{stats.split}' left out "
                        f"({listed}), e.g. {example}")
    return warnings


def run(dataset: str | Path, out: Path, *, train_split: str, train_proposals: Path,
        train_features: Path, val_split: str | None = None,
        val_proposals: Path | None = None, val_features: Path | None = None,
        config: FinetuneConfig | None = None, classes: tuple[str, ...] | None = None,
        device: str = "auto", force: bool = False,
        on_iteration: Callable[[int], None] | None = None) -> FinetuneSummary:
    """Fine-tune the fc layers on ``train_split`` and write ``out`` (``models/<name>/fc.pt``).

    Args:
        dataset: VOC-layout dataset folder.
        out: the model file.
        train_split: split to train on.
        train_proposals, train_features: its proposals and features artifacts.
        val_split: held-out split for validation and checkpoint selection (``None``: none;
            the last iteration is kept). Must differ from ``train_split`` and from ``test``.
        val_proposals, val_features: its artifacts (needed with ``val_split``).
        config: hyper-parameters (:class:`~sppdet.training.finetune.config.FinetuneConfig`).
        classes: class list (default: the dataset's).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; features are pooled there too.
        force: retrain even if ``out`` is up to date, discarding any checkpoint.
        on_iteration: called with the number of finished iterations (progress, tests).

    Raises:
        ConfigError: bad settings; val features of another backbone than the training ones;
            ``init="pretrained"`` with training features whose weights file has no fc6/fc7
            (or a ``hidden`` other than its fc6's width).
        ArtifactMissingError / StaleArtifactError: missing or outdated inputs (the message
            names the command to rerun), including a weights file changed since the training
            features were cached (``init="pretrained"``).
        ModelError: ``init="pretrained"`` and the recorded weights file is missing, or its
            fc6 does not take the pooled features' length.
        DataError: no training windows; NaN or inf in a cached map (names the image).
    """
    config = config or FinetuneConfig()
    out = Path(out)
    if val_split is not None:
        if val_split == train_split:
            raise ConfigError(f"the validation split must differ from the training split "
                              f"('{train_split}')")
        if val_split == "test":
            raise ConfigError("the test split cannot be the validation split: choosing the "
                              "model on test windows biases the test result; use 'val'")
        if val_proposals is None or val_features is None:
            raise ConfigError("validation needs the val split's proposals and features")
    torch_device = resolve_device(device)
    data_train = VOCDataset(dataset, train_split, classes)
    data_val = VOCDataset(dataset, val_split, data_train.classes) if val_split else None

    records = {"proposals_train": _check_input(Path(train_proposals), PROPOSALS_STAGE,
                                               data_train, "proposals"),
               "features_train": _check_input(Path(train_features), FEATURES_STAGE,
                                              data_train, "features")}
    paths = {"proposals_train": Path(train_proposals), "features_train": Path(train_features)}
    if data_val is not None:
        records["proposals_val"] = _check_input(Path(val_proposals), PROPOSALS_STAGE,
                                                data_val, "proposals")
        records["features_val"] = _check_input(Path(val_features), FEATURES_STAGE, data_val,
                                               "features")
        paths["proposals_val"] = Path(val_proposals)
        paths["features_val"] = Path(val_features)
    inputs = {name: input_ref(path) for name, path in paths.items()}

    with contextlib.ExitStack() as stack:
        train_cache = stack.enter_context(FeatureCache(train_features, device=torch_device))
        val_cache = None
        if data_val is not None:
            val_cache = stack.enter_context(FeatureCache(val_features, device=torch_device))
            try:
                check_features_match(model_meta(train_cache, data_train.classes,
                                                config.levels), val_cache,
                                     model_path=f"the training features {train_features}")
            except ConfigError as exc:
                raise ConfigError(f"training and validation features do not match: {exc.message}",
                                  remedy=exc.remedy) from exc
        meta = model_meta(train_cache, data_train.classes, config.levels)
        params = {"config": config.to_dict(), **meta,
                  "train": dataset_params(data_train),
                  "val": dataset_params(data_val) if data_val is not None else None}
        if config.init == "pretrained":
            # checked before the up-to-date test: a changed file makes the features stale
            weights_path, weights_sha256 = pretrained_weights_file(
                train_cache.record.params["backbone"], source=train_features)
            params["init_weights"] = {"path": weights_path, "sha256": weights_sha256}
        output = StageOutput(out, Record(STAGE, params, inputs=inputs,
                                         stage_version=STAGE_VERSION), force=force)
        if output.is_current():
            return FinetuneSummary(path=out, up_to_date=True)

        checkpoint = out.with_name(CHECKPOINT_FILE)
        stack.enter_context(output.writing())
        if force and checkpoint.exists():
            checkpoint.unlink()
        pretrained = None
        if config.init == "pretrained":
            pretrained = load_pretrained_fc(train_cache.record.params["backbone"],
                                            source=train_features)
        log.debug("finetune %s: train %s, val %s, %s", dataset, train_split, val_split,
                  config.to_dict())

        train_windows = _split_windows(data_train, Path(train_proposals), train_cache, config)
        summary = FinetuneSummary(path=out, iterations=config.iterations,
                                  device=str(torch_device), select_by=config.select_by)
        if pretrained is not None:
            summary.init_from = (f"{pretrained.weights_path} (SHA-256 "
                                 f"{pretrained.weights_sha256[:12]}...)")
        summary.train = _stats(train_split, train_windows, data_train.classes)
        summary.warnings += _window_warnings(summary.train, config)
        val_windows = None
        if data_val is not None:
            val_windows = _split_windows(data_val, Path(val_proposals), val_cache, config)
            summary.val = _stats(val_split, val_windows, data_val.classes)
            summary.warnings += [w for w in _window_warnings(summary.val, config)
                                 if "fc8 learns" not in w]
            shared = set(train_windows.image_ids) & set(val_windows.image_ids)
            if shared:
                summary.warnings.append(
                    f"{len(shared)} validation image(s) are also training images (e.g. "
                    f"{sorted(shared)[0]}): validation is not held out; train on 'train' to "
                    "validate on 'val'")
            if not len(val_windows):
                summary.warnings.append(f"split '{val_split}' has no usable window: no "
                                        "validation, the last iteration is kept")
                val_windows, val_cache = None, None
        else:
            summary.warnings.append("no validation split: the last iteration is kept")
        for warning in summary.warnings:
            log.warning("%s", warning)
        log.info("%s", summary.train.to_text())
        if summary.val is not None:
            log.info("%s", summary.val.to_text())

        trainer = FcFinetuner(config, device=torch_device, checkpoint_path=checkpoint,
                              identity=output.record.digest, callback=on_iteration)
        trainer.fit(train_windows, train_cache, val_windows=val_windows, val_cache=val_cache,
                    pretrained_fc=pretrained)

        timing = trainer.timing_
        summary.iterations_run = timing.iterations
        summary.seconds = timing.seconds_total
        summary.ms_per_iteration = timing.ms_per_iteration
        summary.ms_pooling_per_iteration = timing.ms_pooling_per_iteration
        summary.ms_step_per_iteration = timing.ms_step_per_iteration
        summary.best_iteration = trainer.best_iteration_
        summary.best_val = trainer.best_val_
        summary.resumed_from = trainer.resumed_from_
        summary.short_batches = trainer.short_batches_
        output.commit(lambda tmp: trainer.head_.save(tmp, **meta, finetune={
            "best_iteration": trainer.best_iteration_, "best_val": trainer.best_val_,
            "select_by": config.select_by, "iterations": config.iterations,
            "input_scale": trainer.input_scale_, "init": config.init,
            "pretrained_fc": trainer.pretrained_fc_}), summary=_record_summary(summary, trainer))
        summary.curve_path = plot_training_curve(
            trainer.history_, trainer.val_history_, out.with_name(CURVE_FILE),
            title=f"fine-tuning {out.parent.name} ({meta['backbone'].get('name')})",
            best_iteration=trainer.best_iteration_ if trainer.best_val_ else None)
        checkpoint.unlink(missing_ok=True)
        log.debug("%s", summary.to_text())
        return summary


def _record_summary(summary: FinetuneSummary, trainer: FcFinetuner) -> dict[str, Any]:
    return {
        "iterations_run": summary.iterations_run,
        "seconds": round(summary.seconds, 3),
        "ms_per_iteration": round(summary.ms_per_iteration, 3),
        "device": summary.device,
        "best_iteration": summary.best_iteration,
        "best_val": summary.best_val,
        "resumed_from": summary.resumed_from,
        "short_batches": summary.short_batches,
        "input_scale": trainer.input_scale_,
        "pretrained_fc": trainer.pretrained_fc_,
        "windows": {s.split: {"images": s.images, "positives": s.positives,
                              "negatives": s.negatives, "per_class": s.per_class,
                              "skipped": len(s.skipped)}
                    for s in (summary.train, summary.val) if s is not None},
        "history": trainer.history_,
        "val_history": trainer.val_history_,
        "warnings": summary.warnings,
    }
