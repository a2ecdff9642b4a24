"""The pretrained fc6/fc7 that fine-tuning starts from (paper 4.1, REFERENCE sections 1 and 5).

The paper fine-tunes fc6 and fc7 starting from the network pretrained on ImageNet. In sppdet a
paper trunk pretrained as an SPP classifier is saved with its fc6/fc7
(:meth:`sppdet.backbones.paper_nets.PaperTrunk.save_weights`); ``cache-features --weights FILE``
computes conv5 maps with that trunk and records ``FILE`` (its path and SHA-256) in the features
artifact. The fc layers are taken from that same file, so fc6 sees the features it was
pretrained on: the pooled vector layout (:func:`sppdet.ops.spp.spp_pool`, levels (6, 3, 2, 1) by
default) is the same in pretraining and detection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from sppdet.backbones import build_backbone
from sppdet.io.hashing import file_sha256
from sppdet.errors import (YOUR_CHOICE, ConfigError, ModelError, ParameterError, Remedy,
                           StaleArtifactError)
from sppdet.features.cache import FEATURES_STAGE

NEEDS_FC = ("init 'pretrained' needs features cached with a weights file that holds fc6/fc7, "
            "e.g. the weights.pt of `sppdet pretrain` given to `sppdet cache-features`")


@dataclass(frozen=True)
class PretrainedFc:
    """fc6 and fc7 read from a backbone's weights file.

    Attributes:
        fc6: ``nn.Linear`` ``in_dim -> hidden``.
        fc7: ``nn.Linear`` ``hidden -> hidden``.
        backbone: backbone name.
        weights_path: the weights file (absolute path as recorded).
        weights_sha256: hex SHA-256 of its bytes (equal to the recorded one).
    """

    fc6: nn.Linear
    fc7: nn.Linear
    backbone: str
    weights_path: str
    weights_sha256: str

    def describe(self) -> dict[str, Any]:
        """What an artifact record names: backbone, file, digest and the layers' shapes."""
        return {"backbone": self.backbone, "weights_path": self.weights_path,
                "weights_sha256": self.weights_sha256,
                "fc6": [self.fc6.in_features, self.fc6.out_features],
                "fc7": [self.fc7.in_features, self.fc7.out_features]}


def pretrained_weights_file(backbone: Mapping[str, Any], *,
                            source: str | os.PathLike[str] = "the features artifact"
                            ) -> tuple[str, str]:
    """The weights file a features artifact was computed with, checked to be unchanged.

    Args:
        backbone: the ``backbone`` entry of a features record
            (:meth:`sppdet.backbones.base.Backbone.describe`).
        source: the features artifact, named in messages.

    Returns:
        ``(weights_path, weights_sha256)``.

    Raises:
        ConfigError: the features were computed without a weights file (random init).
        ModelError: the recorded file does not exist any more (names it).
        StaleArtifactError: the file's bytes differ from those the features were computed
            with (another SHA-256): the cache must be rebuilt.
    """
    name = backbone.get("name")
    path = backbone.get("weights_path")
    recorded = backbone.get("weights_sha256")
    if not path or not recorded:
        raise ConfigError(f"{source} holds features of backbone {name!r} with "
                          f"{backbone.get('weights')!r} weights, not from a weights file; "
                          f"{NEEDS_FC}")
    if not os.path.isfile(path):
        raise ModelError(f"weights file {path} of backbone {name!r}, recorded in {source}, "
                         "does not exist any more",
                         remedy=Remedy.rerun(FEATURES_STAGE, alternative="put it back",
                                             purpose=" with its new place", backbone=name,
                                             weights=YOUR_CHOICE))
    actual = file_sha256(path)
    if actual != recorded:
        raise StaleArtifactError(
            f"weights file {path} has changed since {source} was computed with it (SHA-256 "
            f"{actual[:12]}..., recorded {recorded[:12]}...)",
            remedy=Remedy.rerun(FEATURES_STAGE, purpose=", then finetune", backbone=name,
                                weights=str(path), force=True))
    return str(path), str(recorded)


def load_pretrained_fc(backbone: Mapping[str, Any], *,
                       source: str | os.PathLike[str] = "the features artifact") -> PretrainedFc:
    """fc6/fc7 of the weights file recorded in a features artifact's ``backbone`` entry.

    Checks the file with :func:`pretrained_weights_file`, then loads it with
    ``build_backbone(name, weights_path).fc_layers()``.

    Raises:
        ConfigError: no weights file, or a file (or backbone) without fc6/fc7 (e.g.
            EfficientNet-Lite0, or a trunk-only checkpoint).
        ModelError: missing or unreadable file; fc7 not ``hidden -> hidden``.
        StaleArtifactError: the file changed since the features were computed.
    """
    path, sha256 = pretrained_weights_file(backbone, source=source)
    name = str(backbone.get("name"))
    layers = build_backbone(name, path).fc_layers()
    if layers is None:
        raise ConfigError(f"weights file {path} of backbone {name!r} (used by {source}) holds "
                          f"no fc6/fc7; {NEEDS_FC}")
    fc6, fc7 = layers["fc6"], layers["fc7"]
    if fc7.in_features != fc6.out_features or fc7.out_features != fc6.out_features:
        raise ModelError(f"weights file {path}: fc7 is {fc7.in_features} -> "
                         f"{fc7.out_features}, but fine-tuning needs {fc6.out_features} -> "
                         f"{fc6.out_features} (fc6's width)")
    return PretrainedFc(fc6=fc6, fc7=fc7, backbone=name, weights_path=path,
                        weights_sha256=sha256)


def check_pretrained_shapes(fc6: nn.Linear, *, in_dim: int, levels: Sequence[int],
                            hidden: int, weights_path: str = "the weights file") -> None:
    """Refuse an fc6 that does not fit the pooled features or the asked width.

    Args:
        fc6: the pretrained fc6.
        in_dim: length of the pooled vectors, ``C * sum(n * n for n in levels)``
            (:func:`sppdet.ops.spp.spp_output_dim`).
        levels: SPP pyramid levels of fine-tuning.
        hidden: the configured width of fc6/fc7.
        weights_path: named in messages.

    Raises:
        ModelError: ``fc6.in_features != in_dim`` (names both numbers and the levels).
        ParameterError: (``param == "hidden"``) ``fc6.out_features != hidden``; says the
            width to fine-tune with.
    """
    if fc6.in_features != in_dim:
        bins = sum(int(n) * int(n) for n in levels)
        raise ModelError(
            f"the pretrained fc6 in {weights_path} takes {fc6.in_features} inputs, but the "
            f"pooled features have {in_dim} ({in_dim // bins} channels x {bins} bins of levels "
            f"{tuple(int(n) for n in levels)}); pretrain and fine-tune with the same backbone "
            "and pyramid levels")
    if fc6.out_features != hidden:
        raise ParameterError("hidden", f"the pretrained fc6 has {fc6.out_features} outputs, "
                                       f"not {hidden}: fine-tune fc6/fc7 {fc6.out_features} "
                                       "wide")


__all__ = ["NEEDS_FC", "PretrainedFc", "check_pretrained_shapes", "load_pretrained_fc",
           "pretrained_weights_file"]
