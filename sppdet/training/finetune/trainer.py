"""The fine-tuning loop: :class:`FcFinetuner`, with checkpoints a resumed run continues from."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sppdet.errors import ConfigError, ModelError
from sppdet.features.cache import FeatureCache
from sppdet.features.fc_head import FcHead
from sppdet.features.pretrained_fc import PretrainedFc, load_pretrained_fc
from sppdet.io.checkpoints import load_training_state, save_checkpoint
from sppdet.io.records import canonical_json
from sppdet.ops.spp import spp_output_dim
from sppdet.progress import get_logger, progress
from sppdet.training.finetune.compatibility import check_features_match, model_meta
from sppdet.training.finetune.config import FinetuneConfig, learning_rate
from sppdet.training.finetune.head_init import estimate_input_scale, init_head
from sppdet.training.finetune.sampling import ChunkSampler, pool_plan
from sppdet.training.finetune.validation import ValidationSet, build_validation_set, evaluate
from sppdet.training.finetune_windows import SplitWindows

log = get_logger("finetune")

CHECKPOINT_FORMAT = "sppdet-finetune-checkpoint"
CHECKPOINT_VERSION = 1


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
            saved = load_training_state(self.checkpoint_path, format=CHECKPOINT_FORMAT,
                                        version=CHECKPOINT_VERSION,
                                        what="fine-tuning checkpoint", identity=self.identity)
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
        buffer: torch.Tensor | None = None
        while iteration < total:
            chunk = sampler.chunk_of(iteration)
            first = chunk * sampler.iterations_per_chunk
            count = min(sampler.iterations_per_chunk, total - first)
            started = time.perf_counter()
            plan = sampler.sample_chunk(chunk, count)
            if buffer is None:  # one buffer for every chunk (pool_plan: bounded memory)
                buffer = torch.empty((sampler.iterations_per_chunk * sampler.batch_size,
                                      spp_output_dim(cache.channels, cfg.levels)),
                                     dtype=torch.float32, device=cache.device)
            features = pool_plan(cache, windows, plan.windows, plan.flip, plan.scales,
                                 levels=cfg.levels, out=buffer).to(self.device)
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
        save_checkpoint(self.checkpoint_path, saved, format=CHECKPOINT_FORMAT,
                        version=CHECKPOINT_VERSION, identity=self.identity)
        log.debug("checkpoint at iteration %d -> %s", state["iteration"], self.checkpoint_path)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
