"""What an fc model records of the features it was trained on, and the refusal of others."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from sppdet.errors import ConfigError, Remedy
from sppdet.features.cache import FEATURES_STAGE, FeatureCache
from sppdet.ops.spp import spp_output_dim


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
            f"{mine.get('name')!r} ({mine.get('weights')})",
            remedy=Remedy.rerun(FEATURES_STAGE, backbone=mine.get("name"),
                                purpose=" for this split, or `sppdet finetune` on features "
                                        f"of {theirs.get('name')!r}"))
    if int(meta["channels"]) != cache.channels or int(meta["stride"]) != cache.stride:
        raise ConfigError(
            f"{cache.path} has {cache.channels} channels at stride {cache.stride}, but "
            f"{model_path} expects {meta['channels']} at stride {meta['stride']}; rerun "
            f"`sppdet cache-features` with the model's backbone")
