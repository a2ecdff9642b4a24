"""Recipes: the base settings of a pipeline run, chosen for the machine.

A recipe is a whole :class:`~stages.pipeline_config.PipelineConfig` that a config file and the
command-line options are laid over (each key they give wins). Three names:

* ``paper``: the declared defaults exactly (:mod:`stages.params`; the paper's GPU schedule:
  five scales with flips, 90,000 fine-tuning iterations of a 4,096-wide fc6/fc7), so the
  records of work dirs made before recipes existed stay valid.
* ``cpu``: what a small CPU finishes in minutes (the settings of BENCHMARKS.md's BCCD and demo
  runs): EdgeBoxes proposals (:data:`CPU_PROPOSALS`), one scale (688) with flips, a 1,024-wide
  fc6/fc7 at learning rate 0.01, and a fine-tuning length in *epochs over the training
  windows* (:data:`CPU_EPOCHS`) instead of a fixed count of iterations.
* ``auto`` (the default): ``cpu`` when the run's device is the CPU, ``paper`` on a GPU.

Fine-tuning by epochs: the number of positive windows is counted from the training split's
proposals once the ``propose`` stage has made them (exactly as fine-tuning labels them:
ground-truth boxes and proposals with IoU >= ``fg_iou``), so the count, and with it the
iteration count recorded by ``finetune``, is the same on every rerun; before the proposals
exist the plan shows an estimate from the ground-truth boxes (:data:`POSITIVES_PER_OBJECT`).

Free of torch and numpy at import (the command line imports it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sppdet.errors import ConfigError
from sppdet.training.finetune.config import FinetuneConfig

#: The names ``--recipe`` takes.
RECIPES = ("auto", "paper", "cpu")
DEFAULT_RECIPE = "auto"

#: The cpu recipe's fine-tuning length, in passes over the positive windows of the training
#: split (a mini-batch holds ``batch_size * fg_fraction`` = 32 of them). BENCHMARKS.md: 1,200
#: iterations were enough on BCCD (35,700 positive windows on `train`: 1.1 epochs) and on the
#: demo (11,674: 3.3 epochs; 600 iterations, 1.6 epochs, lost 4.5 points of mAP); 3 epochs
#: give about those counts (BCCD 3,350, the demo 1,090).
CPU_EPOCHS = 3.0
#: The cpu recipe's proposals. BENCHMARKS.md, "Proposals": EdgeBoxes (built-in edges) takes
#: 0.15-0.18 s per image against ss-fast's 1.2-1.7 s, with the same recall at 2,000 boxes on the
#: VOC fixtures (0.978) and more on BCCD (0.995 against 0.953), and tighter boxes (recall at IoU
#: 0.7: 0.891 against 0.674 on VOC, 0.887 against 0.669 on BCCD); BCCD's test mAP with the same
#: model settings: 86.4 / 83.4 (two runs) against 80.3 with ss-fast ("BCCD (real data)").
#: The paper recipe keeps the paper's selective search.
CPU_PROPOSALS = "edgeboxes"
#: Bounds of the iteration count set by epochs: at least enough mini-batches for the learning
#: rate's three steps to settle (the demo lost 4.5 points at 600), at most the paper's schedule.
MIN_EPOCH_ITERATIONS = 600
MAX_EPOCH_ITERATIONS = 90_000
#: With epochs, validation and checkpoints come this many times over the run (BENCHMARKS.md's
#: runs: every 400 of 1,200 iterations).
VALIDATIONS_PER_RUN = 3
#: Positive windows per ground-truth object (the object itself and proposals with IoU >= 0.5),
#: for the plan's estimate before the proposals exist. Measured: BCCD `train` with 2,000
#: EdgeBoxes 12.7 (35,700 / 2,805 objects), the demo's `train` with 1,000 ss-fast boxes 20.7
#: (11,674 / 563); the mean of the two.
POSITIVES_PER_OBJECT = 16.0


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe a run uses and why.

    Attributes:
        name: ``paper`` or ``cpu`` (never ``auto``).
        reason: one line: how it was chosen (``--recipe``, the config file, or the device).
    """

    name: str
    reason: str


def choose_recipe(requested: str, device_type: str, *, source: str = "default") -> RecipeChoice:
    """Resolve ``auto`` by the device.

    Args:
        requested: ``auto``, ``paper`` or ``cpu``.
        device_type: the run's resolved device type (``cpu`` or ``cuda``).
        source: where ``requested`` came from (shown in the reason).

    Raises:
        ConfigError: an unknown recipe.
    """
    if requested not in RECIPES:
        raise ConfigError(f"unknown recipe {requested!r}; choose from {', '.join(RECIPES)}")
    if requested != "auto":
        return RecipeChoice(requested, f"from {source}")
    name = "cpu" if device_type == "cpu" else "paper"
    return RecipeChoice(name, f"auto ({source}), the device is {device_type}")


def recipe_values(name: str) -> dict[str, Any]:
    """The keys a recipe sets, as a config file's nested mapping (``{}`` for ``paper``)."""
    if name == "paper":
        return {}
    if name == "cpu":
        return {"finetune_epochs": CPU_EPOCHS,
                "propose": {"method": CPU_PROPOSALS},
                "cache_features": {"scales": (688,), "flip": True},
                "finetune": {"hidden": 1024, "lr": 0.01}}
    raise ConfigError(f"unknown recipe {name!r}; choose from paper, cpu")


def flat_keys(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of a nested mapping (``{"finetune": {"lr": 1}}`` -> ``["finetune.lr"]``)."""
    keys = []
    for key, value in values.items():
        if isinstance(value, Mapping) and key != "pretrain":
            keys.extend(flat_keys(value, f"{prefix}{key}."))
        else:
            keys.append(f"{prefix}{key}")
    return keys


def epoch_iterations(positives: int, epochs: float, config: FinetuneConfig) -> int:
    """Mini-batches for ``epochs`` passes over ``positives`` positive windows.

    ``ceil(epochs * positives / (batch_size * fg_fraction))``, clamped to
    [:data:`MIN_EPOCH_ITERATIONS`, :data:`MAX_EPOCH_ITERATIONS`]; a mini-batch holds
    ``fg_per_batch`` positives (at least 1 counted, so a batch of only negatives still ends).
    """
    per_batch = max(config.fg_per_batch, 1)
    wanted = math.ceil(epochs * max(positives, 0) / per_batch)
    return int(min(max(wanted, MIN_EPOCH_ITERATIONS), MAX_EPOCH_ITERATIONS))


def with_iterations(config: FinetuneConfig, iterations: int, *,
                    keep: frozenset[str] = frozenset()) -> FinetuneConfig:
    """``config`` with ``iterations`` and validation/checkpoint intervals of a third of the run
    (:data:`VALIDATIONS_PER_RUN`), except those in ``keep`` (given explicitly)."""
    interval = max(math.ceil(iterations / VALIDATIONS_PER_RUN), 1)
    changes: dict[str, Any] = {"iterations": iterations}
    for name in ("val_every", "checkpoint_every"):
        if name not in keep:
            changes[name] = interval
    return dataclasses.replace(config, **changes)


def count_positive_windows(dataset: str | Path, split: str, proposals: Path,
                           config: FinetuneConfig) -> int:
    """Positive windows of ``split`` as fine-tuning labels them (ground truth first, then
    proposals with IoU >= ``fg_iou``), counted from a finished proposals artifact.

    Raises:
        ArtifactError: ``proposals`` is not a finished proposals artifact.
    """
    from sppdet.data.voc import VOCDataset
    from sppdet.io.item_store import ItemReader
    from sppdet.progress import progress
    from sppdet.training.finetune_windows import build_split_windows
    from sppdet.training.windows import PROPOSALS_STAGE, read_proposals

    data = VOCDataset(dataset, split)
    with ItemReader(proposals, made_by=PROPOSALS_STAGE) as reader:
        def proposals_of(image_id: str) -> Any:
            return read_proposals(reader, image_id) if image_id in reader else None

        images = progress(data, total=len(data), desc="counting positive windows")
        windows = build_split_windows(images, proposals_of, len(data.classes),
                                      fg_iou=config.fg_iou, bg_iou_low=config.bg_iou_low,
                                      bg_iou_high=config.bg_iou_high,
                                      include_gt=config.include_gt)
    return int(windows.n_positive)


def estimate_positive_windows(objects: int) -> int:
    """The plan's estimate of the positive windows of a split with ``objects`` ground-truth
    objects, before its proposals exist (:data:`POSITIVES_PER_OBJECT` each)."""
    return int(round(objects * POSITIVES_PER_OBJECT))


@dataclass(frozen=True)
class FinetuneLength:
    """How long fine-tuning runs and how that was decided.

    Attributes:
        config: the fine-tuning config with its iterations (and intervals) resolved.
        reason: one line for the plan (``3 epochs over 35,700 positive windows``...; empty
            when the iterations are as configured).
        exact: False while the count is an estimate from the ground truth.
    """

    config: FinetuneConfig
    reason: str
    exact: bool = True


def finetune_length(config: FinetuneConfig, epochs: float | None, *,
                    positives: Callable[[], int] | None, objects: int,
                    keep: frozenset[str] = frozenset()) -> FinetuneLength:
    """Resolve the fine-tuning length.

    Args:
        config: the fine-tuning section (its ``iterations`` is used when ``epochs`` is None).
        epochs: passes over the positive windows, or None (``config.iterations`` as it is).
        positives: counts the positive windows (the proposals exist), or None (estimate from
            ``objects``).
        objects: ground-truth objects of the fine-tuning split.
        keep: interval fields given explicitly (not rescaled).
    """
    if epochs is None:
        return FinetuneLength(config, "")
    exact = positives is not None
    count = positives() if positives is not None else estimate_positive_windows(objects)
    iterations = epoch_iterations(count, epochs, config)
    what = (f"{count:,} positive windows" if exact else
            f"about {count:,} positive windows ({objects:,} objects x "
            f"{POSITIVES_PER_OBJECT:g}; counted once the proposals exist)")
    reason = f"{epochs:g} epochs over {what}, {config.fg_per_batch} per mini-batch"
    wanted = math.ceil(epochs * count / max(config.fg_per_batch, 1))
    if wanted != iterations:
        reason += (f" (clamped to [{MIN_EPOCH_ITERATIONS:,}, {MAX_EPOCH_ITERATIONS:,}] "
                   "iterations)")
    return FinetuneLength(with_iterations(config, iterations, keep=keep), reason, exact)


__all__ = ["CPU_EPOCHS", "DEFAULT_RECIPE", "FinetuneLength", "MAX_EPOCH_ITERATIONS",
           "MIN_EPOCH_ITERATIONS", "POSITIVES_PER_OBJECT", "RECIPES", "RecipeChoice",
           "VALIDATIONS_PER_RUN", "choose_recipe", "count_positive_windows", "epoch_iterations",
           "estimate_positive_windows", "finetune_length", "flat_keys", "recipe_values",
           "with_iterations"]
