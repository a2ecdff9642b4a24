"""Fine-tuning fc6, fc7 and a new (K+1)-way fc8 on cached SPP features (paper 4.1).

The conv layers are frozen, so training reads pooled conv5 features from the feature cache
(:class:`~sppdet.features.cache.FeatureCache`) and trains only :class:`~sppdet.features.fc_head.FcHead`.
Settings follow the released code (REFERENCE section 5): mini-batches of 128 windows with 25 %
positives drawn across many images, a random cached scale per window, mirrored images, SGD
with momentum 0.9 and weight decay 5e-4, dropout 0.5, and the learning rate 1e-3, 1e-4, 1e-5
for equal thirds of the iterations (the released code runs 3 x 30k; the paper gives 1e-4 for
250k then 1e-5 for 50k). As in the released Caffe nets, biases learn at twice the rate and have
no weight decay. Unlike the released code, the checkpoint is chosen on a held-out validation
split, never on test windows.

The paper fine-tunes fc6 and fc7 starting from the pretrained network. sppdet does that with
``init="pretrained"``: fc6/fc7 are copied from the weights file the training features were
cached with (a paper trunk saved with its fc layers, e.g. by ``sppdet pretrain``;
:mod:`sppdet.features.pretrained_fc`), and features are used as cached. Without such a file (the default
EfficientNet-Lite0 trunk has no fc layers of these shapes) fc6 and fc7 start random, with two
departures: He initialisation instead of Gaussian std 0.005, and pooled features scaled by one
factor (estimated on training windows, folded into fc6 when saving) so their values have an
RMS of 1. All are options of :class:`FinetuneConfig`.

**Sampling** (:class:`ChunkSampler`). Pooling windows from the cache is the cost of an
iteration on a CPU (an image's maps at every scale are decoded before any window is pooled),
so mini-batches are planned a *chunk* of iterations at a time: a chunk takes
``images_per_chunk`` images (consecutive images of a fresh random permutation of the split per
pass, so every image is visited once per pass), decides once per image whether it is mirrored
(50 %), and then draws each of its mini-batches uniformly from the windows of those images:
``round(fg_fraction * batch_size)`` positives without replacement, the rest negatives (with
replacement only when the chunk has too few). Each window gets a uniformly random cached scale.
All features of the chunk are pooled image by image (each image's maps decoded once) into one
buffer on the training device. Every random choice of chunk ``k`` comes from a generator seeded
with ``(seed, k)``, so the plan of an iteration never depends on how a run was interrupted;
the released code's window data layer instead draws every window uniformly from the whole
split, which would decode about one image per window.

**Resuming.** A checkpoint (every ``checkpoint_every`` iterations) holds the weights, the
optimizer's momentum, the iteration, the sampler state (its seed and next iteration: the plan
of every later chunk is a function of them), the torch RNG state (dropout masks), the best
validation result and the loss history; a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sppdet.io.artifacts import atomic_path, canonical_json
from sppdet.errors import ConfigError, DataError, ModelError, StaleArtifactError
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.features.pretrained_fc import PretrainedFc, check_pretrained_shapes, load_pretrained_fc
from sppdet.progress import get_logger, progress
from sppdet.ops.spp import DEFAULT_LEVELS, spp_output_dim
from sppdet.training.finetune_config import INITS, SELECT_BY, FinetuneConfig  # re-exported
from sppdet.training.finetune_windows import SplitWindows

log = get_logger("finetune")

CHECKPOINT_FORMAT = "sppdet-finetune-checkpoint"
CHECKPOINT_VERSION = 1


def learning_rate(iteration: int, config: FinetuneConfig) -> float:
    """Base learning rate of 0-based ``iteration``: ``lr * gamma ** part`` over equal parts."""
    part = min(iteration * config.lr_steps // config.iterations, config.lr_steps - 1)
    return config.lr * config.lr_gamma ** part


# ---------------------------------------------------------------------------------------------
# Sampling


@dataclass
class ChunkPlan:
    """The mini-batches of one chunk.

    Attributes:
        chunk: chunk number.
        first_iteration: 0-based iteration of the first mini-batch.
        windows: int64 ``[T, B]``, rows of :class:`SplitWindows` per mini-batch slot.
        flip: bool ``[T, B]``, the slot is pooled from the mirrored image.
        scales: int64 ``[T, B]``, the scale each slot is pooled at.
        n_fg: int64 ``[T]``, positives in each mini-batch.
        images: int64 ``[G]``, the chunk's images (index into ``SplitWindows.image_ids``).
    """

    chunk: int
    first_iteration: int
    windows: np.ndarray
    flip: np.ndarray
    scales: np.ndarray
    n_fg: np.ndarray
    images: np.ndarray

    @property
    def n_iterations(self) -> int:
        return int(self.windows.shape[0])


class ChunkSampler:
    """Plans mini-batches chunk by chunk (module docstring: images, then windows).

    Args:
        windows: the labelled windows of the training split.
        scales: the cached scales a window's scale is drawn from.
        batch_size, fg_fraction, images_per_chunk, iterations_per_chunk: as in
            :class:`FinetuneConfig`.
        flip: mirror half of each chunk's images.
        seed: the plan of chunk ``k`` depends only on ``(seed, k)`` and the settings above.
    """

    def __init__(self, windows: SplitWindows, scales: Sequence[int], *, batch_size: int = 128,
                 fg_fraction: float = 0.25, images_per_chunk: int = 64,
                 iterations_per_chunk: int = 32, flip: bool = True, seed: int = 0) -> None:
        if windows.n_images == 0 or len(windows) == 0:
            raise DataError("no training windows: no image has a proposal or ground-truth box "
                            "in the positive or negative IoU band")
        if not scales:
            raise ConfigError("the sampler needs at least one scale")
        self.windows = windows
        self.scales = np.asarray(sorted(int(s) for s in scales), dtype=np.int64)
        self.batch_size = int(batch_size)
        self.fg_per_batch = int(round(fg_fraction * batch_size))
        self.images_per_chunk = min(int(images_per_chunk), windows.n_images)
        self.iterations_per_chunk = int(iterations_per_chunk)
        self.flip = bool(flip)
        self.seed = int(seed)
        self._is_fg = windows.labels > 0

    def state(self, next_iteration: int) -> dict[str, int]:
        """Everything a resumed run needs to continue the same plan."""
        return {"seed": self.seed, "next_iteration": int(next_iteration)}

    def chunk_of(self, iteration: int) -> int:
        return int(iteration) // self.iterations_per_chunk

    def chunk_images(self, chunk: int) -> np.ndarray:
        """Images of ``chunk``: positions ``[k G, (k + 1) G)`` of the concatenated passes, each
        pass a permutation seeded with ``(seed, 0, pass)``; sorted, duplicates removed."""
        n = self.windows.n_images
        start = chunk * self.images_per_chunk
        positions = np.arange(start, start + self.images_per_chunk)
        passes = positions // n
        out = np.empty(len(positions), dtype=np.int64)
        for p in np.unique(passes):
            order = np.random.default_rng([self.seed, 0, int(p)]).permutation(n)
            mask = passes == p
            out[mask] = order[positions[mask] - p * n]
        return np.unique(out)

    def sample_chunk(self, chunk: int, n_iterations: int | None = None) -> ChunkPlan:
        """The first ``n_iterations`` (default all) mini-batches of ``chunk``.

        Mini-batches are drawn one after another from one generator, so a shorter plan is a
        prefix of the full one.
        """
        count = self.iterations_per_chunk if n_iterations is None else int(n_iterations)
        if not 1 <= count <= self.iterations_per_chunk:
            raise ConfigError(f"a chunk has 1..{self.iterations_per_chunk} iterations, "
                              f"asked for {count}")
        rng = np.random.default_rng([self.seed, 1, int(chunk)])
        images = self.chunk_images(chunk)
        flipped_images = (rng.random(len(images)) < 0.5) if self.flip else \
            np.zeros(len(images), dtype=bool)
        rows = np.concatenate([np.arange(self.windows.starts[i], self.windows.starts[i + 1])
                               for i in images])
        fg_pool = rows[self._is_fg[rows]]
        bg_pool = rows[~self._is_fg[rows]]
        image_flip = np.zeros(self.windows.n_images, dtype=bool)
        image_flip[images] = flipped_images
        batch = self.batch_size
        windows = np.empty((count, batch), dtype=np.int64)
        scales = np.empty((count, batch), dtype=np.int64)
        n_fg = np.empty(count, dtype=np.int64)
        for t in range(count):
            take_fg = min(self.fg_per_batch, len(fg_pool))
            if not len(bg_pool):
                take_fg = batch
            fg = fg_pool[rng.choice(len(fg_pool), take_fg, replace=take_fg > len(fg_pool))] \
                if take_fg else np.zeros(0, dtype=np.int64)
            need_bg = batch - take_fg
            bg = bg_pool[rng.choice(len(bg_pool), need_bg, replace=need_bg > len(bg_pool))] \
                if need_bg else np.zeros(0, dtype=np.int64)
            windows[t] = np.concatenate([fg, bg])
            scales[t] = self.scales[rng.integers(0, len(self.scales), size=batch)]
            n_fg[t] = take_fg
        flip = image_flip[self.windows.image_index[windows]]
        return ChunkPlan(chunk=int(chunk), first_iteration=int(chunk) * self.iterations_per_chunk,
                         windows=windows, flip=flip, scales=scales, n_fg=n_fg, images=images)


def pool_plan(cache: FeatureCache, windows: SplitWindows, plan_windows: np.ndarray,
              flip: np.ndarray, scales: np.ndarray | None, *,
              levels: Sequence[int] = DEFAULT_LEVELS) -> Tensor:
    """SPP features of planned windows, pooled image by image (each image decoded once).

    Args:
        cache: the split's feature cache (pooling runs on its device).
        windows: the split's labelled windows.
        plan_windows: int ``[...]`` rows of ``windows``.
        flip: bool, same shape: pool from the mirrored maps.
        scales: int, same shape: the scale of each slot; ``None`` for the paper's best scale
            per window (test-time rule).
        levels: pyramid levels.

    Returns:
        float32 ``[plan_windows.size, C * sum(n * n)]`` on the cache's device, rows in the
        flattened order of ``plan_windows``.
    """
    flat = np.asarray(plan_windows, dtype=np.int64).reshape(-1)
    flip_flat = np.asarray(flip, dtype=bool).reshape(-1)
    scale_flat = None if scales is None else np.asarray(scales, dtype=np.int64).reshape(-1)
    out = torch.empty((len(flat), spp_output_dim(cache.channels, levels)), dtype=torch.float32,
                      device=cache.device)
    if not len(flat):
        return out
    image_of = windows.image_index[flat]
    order = np.lexsort((flip_flat, image_of))  # by image, then flip
    key = image_of[order].astype(np.int64) * 2 + flip_flat[order]
    bounds = np.flatnonzero(np.diff(key)) + 1
    for group in np.split(order, bounds):
        image_id = windows.image_ids[int(image_of[group[0]])]
        flipped = bool(flip_flat[group[0]])
        if scale_flat is None:
            parts = [(group, "best")]
        else:
            parts = [(group[scale_flat[group] == s], int(s)) for s in np.unique(scale_flat[group])]
        for rows, scale in parts:
            pooled = cache.pool(image_id, windows.boxes[flat[rows]], scale=scale, flip=flipped,
                                levels=levels)
            out[torch.from_numpy(rows).to(out.device)] = pooled
    return out


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass
class ValidationSet:
    """A fixed sample of validation windows and their pooled features.

    Attributes:
        features: float32 ``[V, D]`` on the training device.
        labels: int64 ``[V]`` on the training device.
        n_images: images the windows come from.
    """

    features: Tensor
    labels: Tensor
    n_images: int

    @property
    def n_positive(self) -> int:
        return int((self.labels > 0).sum())


def sample_validation_windows(windows: SplitWindows, *, n_windows: int, fg_fraction: float,
                              max_images: int = 0, seed: int = 0) -> np.ndarray:
    """Rows of a fixed validation sample: up to ``max_images`` images (0 = all), then
    ``round(fg_fraction * n_windows)`` positives and the rest negatives, uniformly without
    replacement (fewer when the images hold fewer). Sorted."""
    rng = np.random.default_rng([seed, 2])
    images = np.arange(windows.n_images)
    if max_images and windows.n_images > max_images:
        images = np.sort(rng.choice(windows.n_images, max_images, replace=False))
    rows = np.concatenate([np.arange(windows.starts[i], windows.starts[i + 1]) for i in images]) \
        if len(images) else np.zeros(0, np.int64)
    fg = rows[windows.labels[rows] > 0]
    bg = rows[windows.labels[rows] == 0]
    want_fg = int(round(fg_fraction * n_windows))
    n_fg = min(want_fg, len(fg))
    n_bg = min(n_windows - n_fg, len(bg))
    chosen = np.concatenate([rng.choice(fg, n_fg, replace=False),
                             rng.choice(bg, n_bg, replace=False)])
    return np.sort(chosen)


def build_validation_set(cache: FeatureCache, windows: SplitWindows, config: FinetuneConfig,
                         device: torch.device) -> ValidationSet:
    """Pool the validation sample at the best scale of each window, unmirrored (test rule)."""
    rows = sample_validation_windows(windows, n_windows=config.val_windows,
                                     fg_fraction=config.fg_fraction,
                                     max_images=config.val_images, seed=config.seed)
    features = pool_plan(cache, windows, rows, np.zeros(len(rows), bool), None,
                         levels=config.levels).to(device)
    labels = torch.from_numpy(windows.labels[rows]).to(device)
    n_images = len(np.unique(windows.image_index[rows]))
    return ValidationSet(features=features, labels=labels, n_images=n_images)


@torch.no_grad()
def evaluate(head: FcHead, val: ValidationSet, batch_size: int = 1024) -> dict[str, float]:
    """Loss and accuracies of ``head`` (eval mode) on a validation set.

    Returns:
        ``loss`` (mean softmax cross-entropy), ``accuracy`` (all windows), ``fg_accuracy``
        (positives given their own class), ``bg_accuracy`` (negatives called background);
        NaN for an accuracy over no windows.
    """
    was_training = head.training
    head.eval()
    losses, correct = [], []
    for start in range(0, len(val.labels), batch_size):
        logits = head(val.features[start:start + batch_size])
        labels = val.labels[start:start + batch_size]
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
        correct.append(logits.argmax(dim=1) == labels)
    head.train(was_training)
    if not losses:
        return {"loss": math.nan, "accuracy": math.nan, "fg_accuracy": math.nan,
                "bg_accuracy": math.nan}
    loss = torch.cat(losses)
    hits = torch.cat(correct)
    fg = val.labels > 0

    def mean(values: Tensor) -> float:
        return float(values.float().mean()) if values.numel() else math.nan

    return {"loss": mean(loss), "accuracy": mean(hits), "fg_accuracy": mean(hits[fg]),
            "bg_accuracy": mean(hits[~fg])}


# ---------------------------------------------------------------------------------------------
# Checkpoints and compatibility


def backbone_identity(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a backbone's features: its description without where the weights file
    happens to live (``weights_path``, ``weights_source``)."""
    return {k: v for k, v in backbone.items() if k not in ("weights_path", "weights_source")}


def model_meta(cache: FeatureCache, classes: Sequence[str],
               levels: Sequence[int]) -> dict[str, Any]:
    """What an fc checkpoint needs to refuse features it was not trained on."""
    params = cache.record.params
    return {"backbone": params["backbone"], "stride": cache.stride, "channels": cache.channels,
            "scales": list(cache.scales), "levels": [int(n) for n in levels],
            "classes": list(classes), "in_dim": spp_output_dim(cache.channels, levels)}


def check_features_match(meta: Mapping[str, Any], cache: FeatureCache, *,
                         model_path: str | os.PathLike[str] = "the fc model") -> None:
    """Refuse a feature cache that an fc model was not trained on.

    Args:
        meta: the model's meta (:func:`model_meta`, stored in ``fc.pt``).
        cache: the features to use with it.
        model_path: named in the message.

    Raises:
        ConfigError: another backbone (or other weights), stride or channel count; the message
            says what to rerun.
    """
    mine = backbone_identity(meta["backbone"])
    theirs = backbone_identity(cache.record.params["backbone"])
    if mine != theirs:
        raise ConfigError(
            f"{cache.path} holds features of backbone {theirs.get('name')!r} "
            f"({theirs.get('weights')}), but {model_path} was fine-tuned on backbone "
            f"{mine.get('name')!r} ({mine.get('weights')}); rerun `sppdet cache-features "
            f"--backbone {mine.get('name')}` for this split, or `sppdet finetune` on features "
            f"of {theirs.get('name')!r}")
    if int(meta["channels"]) != cache.channels or int(meta["stride"]) != cache.stride:
        raise ConfigError(
            f"{cache.path} has {cache.channels} channels at stride {cache.stride}, but "
            f"{model_path} expects {meta['channels']} at stride {meta['stride']}; rerun "
            f"`sppdet cache-features` with the model's backbone")


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, identity: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the training checkpoint ({exc}); delete it or "
                         "rerun with --force") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not an sppdet fine-tuning checkpoint; delete it or rerun "
                         "with --force")
    if state.get("identity") != identity:
        raise StaleArtifactError(
            f"{path} is a checkpoint of a run with other settings or inputs; rerun with those "
            "settings to resume it, or with --force to start over")
    return state


# ---------------------------------------------------------------------------------------------
# Training


def estimate_input_scale(cache: FeatureCache, windows: SplitWindows, *, n_windows: int = 2048,
                         max_images: int = 100, seed: int = 0,
                         levels: Sequence[int] = DEFAULT_LEVELS) -> float:
    """``1 / RMS`` of the pooled values of a fixed sample of windows (best scale, unmirrored).

    The sample is :func:`sample_validation_windows` with a quarter positives over at most
    ``max_images`` images; 1.0 when there is nothing to measure or every value is 0.
    """
    rows = sample_validation_windows(windows, n_windows=n_windows, fg_fraction=0.25,
                                     max_images=max_images, seed=seed)
    if not len(rows):
        return 1.0
    pooled = pool_plan(cache, windows, rows, np.zeros(len(rows), bool), None, levels=levels)
    rms = float(pooled.double().pow(2).mean().sqrt())
    return 1.0 / rms if rms > 0 and math.isfinite(rms) else 1.0


def init_head(in_dim: int, num_classes: int, config: FinetuneConfig,
              pretrained_fc: PretrainedFc | None = None) -> FcHead:
    """A new :class:`FcHead` initialised as ``config.init`` says (seeded by ``config.seed``).

    Args:
        in_dim: length of the pooled vectors.
        num_classes: object classes K (fc8 has K + 1 outputs).
        config: ``init``, ``hidden``, ``dropout``, ``seed`` and ``levels`` are used.
        pretrained_fc: the fc6/fc7 to copy (:func:`sppdet.features.pretrained_fc.load_pretrained_fc`);
            required with ``init="pretrained"``, refused otherwise.

    Returns:
        The head; fc8 is Gaussian with std 0.01 and zero bias under every init (paper).

    Raises:
        ConfigError: ``pretrained_fc`` missing with ``init="pretrained"`` or given without
            it; the pretrained fc6's width differs from ``config.hidden``.
        ModelError: the pretrained fc6 does not take ``in_dim`` inputs.
    """
    if (config.init == "pretrained") != (pretrained_fc is not None):
        raise ConfigError("init 'pretrained' needs the pretrained fc6/fc7 and other inits take "
                          f"none; got init {config.init!r} with"
                          f"{'' if pretrained_fc is not None else 'out'} pretrained layers")
    if pretrained_fc is not None:
        check_pretrained_shapes(pretrained_fc.fc6, in_dim=in_dim, levels=config.levels,
                                hidden=config.hidden, weights_path=pretrained_fc.weights_path)
    head = FcHead(in_dim, num_classes, hidden=config.hidden, dropout=config.dropout,
                  seed=config.seed)
    if pretrained_fc is not None:
        with torch.no_grad():
            for mine, theirs in ((head.fc6, pretrained_fc.fc6), (head.fc7, pretrained_fc.fc7)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
    elif config.init == "he":
        generator = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            for layer in (head.fc6, head.fc7):
                # He et al. 2015, eq. 10: Var[w] = 2 / fan_in keeps ReLU activations' scale
                layer.weight.normal_(0.0, math.sqrt(2.0 / layer.in_features),
                                     generator=generator)
    return head


@dataclass
class Timing:
    """Where the time of a run went (this process only, not earlier runs of a resumed one)."""

    iterations: int = 0
    seconds_total: float = 0.0
    seconds_pooling: float = 0.0
    seconds_steps: float = 0.0
    seconds_validation: float = 0.0

    @property
    def ms_per_iteration(self) -> float:
        return 1000.0 * self.seconds_total / self.iterations if self.iterations else 0.0

    @property
    def ms_pooling_per_iteration(self) -> float:
        return 1000.0 * self.seconds_pooling / self.iterations if self.iterations else 0.0

    @property
    def ms_step_per_iteration(self) -> float:
        return 1000.0 * self.seconds_steps / self.iterations if self.iterations else 0.0


class FcFinetuner:
    """Fine-tunes an :class:`FcHead` on SPP features from a feature cache (estimator style).

    Args:
        config: hyper-parameters.
        device: the training device (the caches should pool on it too).
        checkpoint_path: where the training state is saved every ``checkpoint_every``
            iterations; an existing checkpoint of the same ``identity`` is resumed.
        identity: text naming the run's settings and inputs (e.g. the output record's
            digest); a checkpoint of another identity is refused. Default: the config, and
            with ``init="pretrained"`` the SHA-256 of the weights file fc6/fc7 come from.
        callback: called with the number of finished iterations after each one (tests use it
            to interrupt a run).

    Attributes (after :meth:`fit`):
        head_: the selected fc head (CPU, eval mode).
        best_iteration_: iterations done when the selected weights were taken.
        best_val_: validation metrics of the selected weights (``None`` without validation).
        history_: training log entries ``{iteration, loss, accuracy, lr}`` (means over the
            preceding ``log_every`` iterations).
        val_history_: ``{iteration, loss, accuracy, fg_accuracy, bg_accuracy}`` per validation.
        input_scale_: the factor pooled features were multiplied by in training (folded into
            ``head_.fc6.weight``; 1.0 without ``scale_inputs``).
        pretrained_fc_: :meth:`PretrainedFc.describe` of the layers fc6/fc7 started from
            (weights file and SHA-256), or ``None`` for a random init.
        resumed_from_: the iteration a checkpoint was resumed at, or ``None``.
        short_batches_: mini-batches with fewer positives than asked (their chunk had too few).
        timing_: :class:`Timing`.
        val_set_: the :class:`ValidationSet` used (``None`` without validation).
    """

    def __init__(self, config: FinetuneConfig, *, device: str | torch.device = "cpu",
                 checkpoint_path: str | os.PathLike[str] | None = None,
                 identity: str | None = None,
                 callback: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self._identity_given = identity is not None
        self.identity = identity if identity is not None else canonical_json(config.to_dict())
        self.callback = callback

    # -- helpers --------------------------------------------------------------------------
    def _optimizer(self, head: FcHead) -> torch.optim.SGD:
        cfg = self.config
        weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in head.named_parameters() if n.endswith("bias")]
        return torch.optim.SGD([
            {"params": weights, "lr_mult": 1.0, "weight_decay": cfg.weight_decay},
            {"params": biases, "lr_mult": cfg.bias_lr_mult, "weight_decay": 0.0},
        ], lr=cfg.lr, momentum=cfg.momentum)

    def _better(self, metrics: dict[str, float], best: dict[str, float] | None) -> bool:
        if best is None:
            return True
        if not math.isfinite(metrics["loss"]):
            return False
        if self.config.select_by == "accuracy":
            return metrics["accuracy"] > best["accuracy"]
        if self.config.select_by == "loss":
            return metrics["loss"] < best["loss"]
        return True  # "last"

    # -- training -------------------------------------------------------------------------
    def fit(self, train_windows: SplitWindows, train_cache: FeatureCache, *,
            val_windows: SplitWindows | None = None,
            val_cache: FeatureCache | None = None,
            pretrained_fc: PretrainedFc | None = None) -> "FcFinetuner":
        """Train from scratch or from the checkpoint; see the class docstring for results.

        Args:
            train_windows, train_cache: the training split's windows and features.
            val_windows, val_cache: the validation split's (both or neither).
            pretrained_fc: with ``init="pretrained"``, the fc6/fc7 to start from; ``None``
                loads them from the weights file recorded in ``train_cache``
                (:func:`sppdet.features.pretrained_fc.load_pretrained_fc`).

        Raises:
            DataError: no training windows; NaN or inf in a cached map (names the image).
            ConfigError: validation windows without their cache, or a cache whose features
                differ from the training cache's; ``init="pretrained"`` with features cached
                without fc6/fc7 in their weights file, or a ``hidden`` other than fc6's width.
            ModelError: the recorded weights file is missing; the pretrained fc6 does not
                take the pooled features' length.
            StaleArtifactError: a checkpoint of another run is in the way; the recorded
                weights file changed since the features were cached.
        """
        cfg = self.config
        if (val_windows is None) != (val_cache is None):
            raise ConfigError("validation needs both the windows and the feature cache")
        if val_cache is not None:
            check_features_match(model_meta(train_cache, [], cfg.levels), val_cache,
                                 model_path=f"the training features {train_cache.path}")
        num_classes = train_windows.num_classes
        flip = cfg.flip and train_cache.has_flip
        sampler = ChunkSampler(train_windows, train_cache.scales, batch_size=cfg.batch_size,
                               fg_fraction=cfg.fg_fraction,
                               images_per_chunk=cfg.images_per_chunk,
                               iterations_per_chunk=cfg.iterations_per_chunk, flip=flip,
                               seed=cfg.seed)
        in_dim = spp_output_dim(train_cache.channels, cfg.levels)
        if cfg.init == "pretrained" and pretrained_fc is None:
            pretrained_fc = load_pretrained_fc(train_cache.record.params["backbone"],
                                               source=train_cache.path)
        head = init_head(in_dim, num_classes, cfg, pretrained_fc).to(self.device)
        self.pretrained_fc_ = pretrained_fc.describe() if pretrained_fc is not None else None
        if pretrained_fc is not None and not self._identity_given:
            self.identity = canonical_json({"config": cfg.to_dict(),
                                            "pretrained_fc": self.pretrained_fc_})
        optimizer = self._optimizer(head)
        timing = Timing()
        start_time = time.perf_counter()

        saved = None
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            saved = _load_checkpoint(self.checkpoint_path, self.identity)
        if saved is not None:
            input_scale = float(saved["input_scale"])
        elif cfg.scale_inputs:
            started = time.perf_counter()
            input_scale = estimate_input_scale(train_cache, train_windows, seed=cfg.seed,
                                               levels=cfg.levels)
            timing.seconds_pooling += time.perf_counter() - started
            log.info("input scale: x %.4g (pooled values to RMS 1)", input_scale)
        else:
            input_scale = 1.0
        self._input_scale = input_scale

        val_set = None
        if val_windows is not None and len(val_windows):
            started = time.perf_counter()
            val_set = build_validation_set(val_cache, val_windows, cfg, self.device)
            if input_scale != 1.0:
                val_set.features.mul_(input_scale)
            timing.seconds_validation += time.perf_counter() - started
            log.info("validation: %d windows (%d positive) from %d images",
                     len(val_set.labels), val_set.n_positive, val_set.n_images)

        state: dict[str, Any] = {"iteration": 0, "best": None, "history": [],
                                 "val_history": [], "accumulator": [0.0, 0.0, 0],
                                 "short_batches": 0}
        resumed_from = None
        rng_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            if saved is not None:
                head.load_state_dict(saved["model"])
                optimizer.load_state_dict(saved["optimizer"])
                torch.set_rng_state(saved["torch_rng"])
                if self.device.type == "cuda" and saved.get("cuda_rng") is not None:
                    torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
                for key in state:
                    state[key] = saved[key]
                resumed_from = int(saved["iteration"])
                log.info("resuming from %s at iteration %d", self.checkpoint_path, resumed_from)
            else:
                torch.manual_seed(cfg.seed)
                if self.device.type == "cuda":
                    with torch.cuda.device(self.device):
                        torch.cuda.manual_seed(cfg.seed)
            self._train(head, optimizer, sampler, train_windows, train_cache, val_set, state,
                        timing)

        timing.seconds_total = time.perf_counter() - start_time
        best = state["best"]
        if best is None:  # no validation: the last weights
            best = {"iteration": state["iteration"], "val": None,
                    "model": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}
        final = FcHead(in_dim, num_classes, hidden=cfg.hidden, dropout=cfg.dropout)
        final.load_state_dict(best["model"])
        with torch.no_grad():
            final.fc6.weight.mul_(input_scale)  # fc6(s x) = (s W) x + b: takes raw features
        final.eval()
        self.head_ = final
        self.best_iteration_ = int(best["iteration"])
        self.best_val_ = best["val"]
        self.history_ = list(state["history"])
        self.val_history_ = list(state["val_history"])
        self.resumed_from_ = resumed_from
        self.input_scale_ = input_scale
        self.short_batches_ = int(state["short_batches"])
        self.timing_ = timing
        self.val_set_ = val_set
        return self

    def _train(self, head: FcHead, optimizer: torch.optim.SGD, sampler: ChunkSampler,
               windows: SplitWindows, cache: FeatureCache, val_set: ValidationSet | None,
               state: dict[str, Any], timing: Timing) -> None:
        cfg = self.config
        total = cfg.iterations
        iteration = int(state["iteration"])
        labels_all = torch.from_numpy(windows.labels).to(self.device)
        head.train()
        bar = progress(range(iteration, total), total=total - iteration, desc="finetune",
                       unit="it")
        bar_iter = iter(bar)
        while iteration < total:
            chunk = sampler.chunk_of(iteration)
            first = chunk * sampler.iterations_per_chunk
            count = min(sampler.iterations_per_chunk, total - first)
            started = time.perf_counter()
            plan = sampler.sample_chunk(chunk, count)
            features = pool_plan(cache, windows, plan.windows, plan.flip, plan.scales,
                                 levels=cfg.levels).to(self.device)
            if self._input_scale != 1.0:
                features.mul_(self._input_scale)
            labels = labels_all[torch.from_numpy(plan.windows.reshape(-1)).to(self.device)]
            timing.seconds_pooling += time.perf_counter() - started
            batch = cfg.batch_size
            for t in range(iteration - first, count):
                started = time.perf_counter()
                rate = learning_rate(iteration, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = rate * group["lr_mult"]
                x = features[t * batch:(t + 1) * batch]
                y = labels[t * batch:(t + 1) * batch]
                logits = head(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise ModelError(f"fine-tuning diverged at iteration {iteration + 1} (loss "
                                     f"{loss_value}); lower the learning rate (now {rate:g})")
                acc = state["accumulator"]
                acc[0] += loss_value
                acc[1] += float((logits.detach().argmax(dim=1) == y).float().mean())
                acc[2] += 1
                if plan.n_fg[t] < sampler.fg_per_batch:
                    state["short_batches"] += 1
                iteration += 1
                state["iteration"] = iteration
                timing.iterations += 1
                timing.seconds_steps += time.perf_counter() - started
                next(bar_iter, None)
                if iteration % cfg.log_every == 0 or iteration == total:
                    entry = {"iteration": iteration, "loss": acc[0] / acc[2],
                             "accuracy": acc[1] / acc[2], "lr": rate}
                    state["history"].append(entry)
                    state["accumulator"] = [0.0, 0.0, 0]
                    log.info("iteration %d: loss %.4f, accuracy %.3f, lr %g", iteration,
                             entry["loss"], entry["accuracy"], rate)
                if val_set is not None and (iteration == total or (
                        cfg.val_every and iteration % cfg.val_every == 0)):
                    self._validate(head, val_set, state, iteration, timing)
                if (self.checkpoint_path is not None and cfg.checkpoint_every
                        and iteration % cfg.checkpoint_every == 0 and iteration < total):
                    self._checkpoint(head, optimizer, sampler, state)
                if self.callback is not None:
                    self.callback(iteration)
        for _ in bar_iter:  # close the progress bar
            pass

    def _validate(self, head: FcHead, val_set: ValidationSet, state: dict[str, Any],
                  iteration: int, timing: Timing) -> None:
        started = time.perf_counter()
        metrics = evaluate(head, val_set)
        timing.seconds_validation += time.perf_counter() - started
        state["val_history"].append({"iteration": iteration, **metrics})
        best = state["best"]
        if self._better(metrics, None if best is None else best["val"]):
            state["best"] = {"iteration": iteration, "val": metrics,
                             "model": {k: v.detach().cpu().clone()
                                       for k, v in head.state_dict().items()}}
        log.info("validation at %d: loss %.4f, accuracy %.3f, positives %.3f, negatives %.3f",
                 iteration, metrics["loss"], metrics["accuracy"], metrics["fg_accuracy"],
                 metrics["bg_accuracy"])

    def _checkpoint(self, head: FcHead, optimizer: torch.optim.SGD, sampler: ChunkSampler,
                    state: dict[str, Any]) -> None:
        saved = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "identity": self.identity,
            "model": {k: v.detach().cpu() for k, v in head.state_dict().items()},
            "optimizer": _to_cpu(optimizer.state_dict()),
            "sampler": sampler.state(state["iteration"]),
            "input_scale": self._input_scale,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda" else None,
            **copy.deepcopy({k: v for k, v in state.items() if k != "best"}),
            "best": state["best"],
        }
        _save_checkpoint(self.checkpoint_path, saved)
        log.debug("checkpoint at iteration %d -> %s", state["iteration"], self.checkpoint_path)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Training curve


def plot_training_curve(history: Sequence[Mapping[str, float]],
                        val_history: Sequence[Mapping[str, float]],
                        path: str | os.PathLike[str], *, title: str = "fine-tuning",
                        best_iteration: int | None = None) -> Path:
    """Write a PNG: training and validation loss (left), accuracies (right) vs iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if history:
        its = [h["iteration"] for h in history]
        ax_loss.plot(its, [h["loss"] for h in history], label="train (mean over log interval)")
        ax_acc.plot(its, [h["accuracy"] for h in history], label="train")
    if val_history:
        its = [v["iteration"] for v in val_history]
        ax_loss.plot(its, [v["loss"] for v in val_history], "o-", label="validation")
        ax_acc.plot(its, [v["accuracy"] for v in val_history], "o-", label="validation")
        ax_acc.plot(its, [v["fg_accuracy"] for v in val_history], "s--",
                    label="validation, positives")
    if best_iteration is not None:
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_iteration, color="grey", linestyle=":", label="selected")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("softmax loss")
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0.0, 1.0)
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "ChunkPlan", "ChunkSampler", "FcFinetuner", "FinetuneConfig", "Timing", "ValidationSet",
    "backbone_identity", "build_validation_set", "check_features_match",
    "estimate_input_scale", "evaluate", "init_head",
    "learning_rate", "model_meta", "plot_training_curve", "pool_plan",
    "sample_validation_windows",
]
