"""A new fc head initialised as the config says, and the scale of its inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sppdet.errors import ConfigError
from sppdet.features.cache import FeatureCache
from sppdet.features.fc_head import FcHead
from sppdet.features.pretrained_fc import PretrainedFc, check_pretrained_shapes
from sppdet.ops.spp import DEFAULT_LEVELS
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.sampling import pool_plan
from sppdet.training.finetune.validation import sample_validation_windows
from sppdet.training.finetune_windows import SplitWindows


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
        pretrained_fc: the fc6/fc7 to copy
            (:func:`sppdet.features.pretrained_fc.load_pretrained_fc`);
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
