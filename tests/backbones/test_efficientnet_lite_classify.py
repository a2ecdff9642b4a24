"""The shipped EfficientNet-Lite0 weights classify real photos correctly with sppdet's network.

This checks the whole reconstruction (block structure, ReLU6, BN eps, SAME padding, input
scaling) end to end: a wrong detail drops the right classes out of the top 5.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sppdet.backbones import build_backbone
from sppdet.errors import ModelError

skimage_data = pytest.importorskip(
    "skimage.data", reason="scikit-image (test extra) provides the chelsea and coffee photos")

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def _top5(backbone, image_rgb: np.ndarray) -> tuple[list[int], torch.Tensor]:
    resized = cv2.resize(image_rgb, (224, 224), interpolation=cv2.INTER_LINEAR)
    with torch.inference_mode():
        probabilities = backbone.classify(backbone.preprocess(resized)[None]).softmax(dim=1)[0]
    return probabilities.topk(5).indices.tolist(), probabilities


def test_chelsea_is_a_cat(lite0):
    top5, probabilities = _top5(lite0, skimage_data.chelsea())
    assert CAT_CLASSES & set(top5), top5
    assert probabilities[sorted(CAT_CLASSES)].sum() > 0.5


def test_coffee_is_espresso_or_cup(lite0):
    top5, probabilities = _top5(lite0, skimage_data.coffee())
    assert COFFEE_CLASSES & set(top5), top5
    assert top5[0] in COFFEE_CLASSES
    assert probabilities[sorted(CAT_CLASSES)].sum() < 0.01


def test_trunk_is_the_classifier_prefix(lite0):
    """forward() is the classifier's stem + blocks 0..10: 112 channels at stride 16."""
    image = lite0.preprocess(cv2.resize(skimage_data.coffee(), (160, 128)))[None]
    captured = {}
    handle = lite0.net._blocks[10].register_forward_hook(
        lambda module, args, out: captured.update(out=out))
    try:
        with torch.inference_mode():
            lite0.classify(image)
            trunk = lite0(image)
    finally:
        handle.remove()
    torch.testing.assert_close(trunk, captured["out"], rtol=0, atol=0)
    assert tuple(trunk.shape) == (1, 112, 8, 10)


def test_fold_batch_norm_keeps_features():
    plain = build_backbone("efficientnet_lite0")
    folded = build_backbone("efficientnet_lite0").fold_batch_norm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.net._blocks[:11].modules())
    image = plain.preprocess(cv2.resize(skimage_data.chelsea(), (150, 100)))[None]
    with torch.inference_mode():
        expected = plain(image)
        torch.testing.assert_close(folded(image), expected, rtol=1e-4, atol=1e-3)
    assert expected.abs().max() > 1.0  # features of a real size, so the tolerance is tight
    assert folded.describe()["config"]["batch_norm_folded"] is True
    assert plain.describe()["config"]["batch_norm_folded"] is False
    with pytest.raises(ModelError, match="fold_batch_norm"):
        folded.load_weights(None)
