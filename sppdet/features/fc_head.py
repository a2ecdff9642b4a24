"""The fully connected layers above SPP: fc6, fc7 and the (K+1)-way fc8 (paper 4.1).

SPP-net fine-tunes only these layers, on pooled conv5 features read from the cache; the SVMs
use fc6 or fc7 outputs (after ReLU, as in R-CNN and the released code, where Caffe's in-place
ReLU overwrites the fc blobs).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from sppdet.errors import ConfigError, ModelError
from sppdet.io.checkpoints import check_checkpoint, read_checkpoint, save_checkpoint

LAYERS = ("pool5", "fc6", "fc7")
CHECKPOINT_FORMAT = "sppdet-fc-head"
CHECKPOINT_VERSION = 1


class FcHead(nn.Module):
    """fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> fc8.

    Args:
        in_dim: length of the SPP vector (channels x 50 for the default pyramid).
        num_classes: object classes K; fc8 has K + 1 outputs, index 0 is background.
        hidden: width of fc6 and fc7 (4096 in the paper).
        dropout: dropout probability after fc6 and fc7 (0.5 in the paper).
        seed: seed of the initialisation; fc8 is Gaussian with sigma 0.01 (paper), fc6/fc7
            Gaussian with sigma 0.005 and zero bias; `sppdet finetune` re-initialises fc6/fc7
            (He by default, see :class:`sppdet.training.finetune.config.FinetuneConfig`).
    """

    def __init__(self, in_dim: int, num_classes: int, *, hidden: int = 4096,
                 dropout: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 1 or hidden < 1:
            raise ConfigError(f"FcHead needs in_dim, num_classes and hidden >= 1, got "
                              f"{in_dim}, {num_classes}, {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.hidden = hidden
        self.dropout_p = dropout
        self.fc6 = nn.Linear(in_dim, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.fc8 = nn.Linear(hidden, num_classes + 1)
        self.dropout = nn.Dropout(dropout)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer, std in ((self.fc6, 0.005), (self.fc7, 0.005), (self.fc8, 0.01)):
                layer.weight.normal_(0.0, std, generator=generator)
                layer.bias.zero_()

    def forward(self, pooled: Tensor) -> Tensor:
        """``[N, in_dim]`` SPP vectors -> ``[N, K + 1]`` logits (column 0 = background)."""
        x = self.dropout(torch.relu(self.fc6(pooled)))
        x = self.dropout(torch.relu(self.fc7(x)))
        return self.fc8(x)

    @torch.no_grad()
    def features(self, pooled: Tensor, layer: str = "fc7") -> Tensor:
        """Features of ``layer`` for SVMs, without dropout: ``[N, in_dim]`` -> ``[N, D]``.

        ``pool5`` returns the input; ``fc6`` and ``fc7`` are after ReLU.
        """
        if layer not in LAYERS:
            raise ConfigError(f"layer must be one of {LAYERS}, got {layer!r}")
        if layer == "pool5":
            return pooled
        # The modules, not their weights: fc6/fc7 may be replaced by their SVD or int8 forms
        # (sppdet.features.fast_fc).
        x = torch.relu(self.fc6(pooled))
        if layer == "fc6":
            return x
        return torch.relu(self.fc7(x))

    def config(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "num_classes": self.num_classes, "hidden": self.hidden,
                "dropout": self.dropout_p}

    def save(self, path: str | os.PathLike[str], **meta: Any) -> None:
        """Save weights and config (plus ``meta``) to ``path`` (atomically, with ``torch.save``)."""
        save_checkpoint(path, {"config": self.config(), "state_dict": self.state_dict(),
                               "meta": meta}, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             map_location: str | torch.device = "cpu") -> tuple["FcHead", dict[str, Any]]:
        """Load a head saved by :meth:`save`; returns ``(head, meta)``.

        Raises:
            ModelError: the file is missing or is not an fc head checkpoint.
        """
        blob = read_checkpoint(path, what="fc checkpoint", map_location=map_location,
                               missing_hint="; run `sppdet finetune` first")
        if "format" in blob:  # files written before the format tag have the same layout
            check_checkpoint(blob, path, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                             what="fc checkpoint")
        try:
            head = cls(**blob["config"])
            head.load_state_dict(blob["state_dict"])
        except (KeyError, TypeError, RuntimeError, OSError) as exc:
            raise ModelError(f"{path}: not an sppdet fc checkpoint ({exc})") from exc
        head.eval()
        return head, dict(blob.get("meta", {}))
