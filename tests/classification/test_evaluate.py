"""Top-k errors, the three test modes and full-image features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.backbones import build_backbone
from sppdet.classification.evaluate import (
    evaluate_modes,
    image_representations,
    predict,
    results_markdown,
    topk_error,
)
from sppdet.classification.model import SPPClassifier, ViewSettings, image_tensor
from sppdet.errors import ConfigError, DataError


def test_topk_error_hand_computed() -> None:
    scores = np.array([[0.1, 0.7, 0.2],    # label 1: top-1 right
                       [0.5, 0.3, 0.2],    # label 2: top-1 wrong, top-2 wrong
                       [0.3, 0.3, 0.4]])   # label 1: top-1 wrong; top-2 = {2, 0} (tie -> 0)
    labels = np.array([1, 2, 1])
    assert topk_error(scores, labels, 1) == pytest.approx(2 / 3)
    assert topk_error(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_error(scores, labels, 3) == 0.0
    assert topk_error(np.zeros((0, 3)), np.zeros(0), 1) == 0.0
    # a constant score vector predicts class 0
    assert topk_error(np.ones((2, 3)), np.array([0, 1]), 1) == 0.5
    with pytest.raises(DataError):
        topk_error(scores, labels[:2], 1)
    with pytest.raises(ConfigError):
        topk_error(scores, labels, 0)


@pytest.fixture(scope="module")
def model() -> SPPClassifier:
    return SPPClassifier(build_backbone("zf5", seed=2), 6, hidden=16, seed=2).eval()


def _images(n: int, sizes=((72, 72), (72, 90))) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8)
            for i in range(n)]


def test_predict_full_batches_by_size_like_single_images(model: SPPClassifier) -> None:
    images = _images(5)
    batched = predict(model, images, "full", batch_size=2)
    for i, image in enumerate(images):
        single = torch.softmax(model(image_tensor(model, [image])), dim=1)[0].detach().numpy()
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="smaller than"):
        predict(model, images, "crop", crop_size=80)


def test_evaluate_modes_side_by_side(model: SPPClassifier) -> None:
    images = _images(6)
    labels = np.array([0, 1, 2, 3, 4, 5])
    views = ViewSettings(size=64, scales=(72,), views="10")
    results, scores = evaluate_modes(model, images, labels, list("abcdef"), crop_size=64,
                                     image_size=72, views=views)
    assert [r.mode for r in results] == ["crop", "full", "multiview"]
    for result in results:
        assert result.top1_error == topk_error(scores[result.mode], labels, 1)
        assert result.top5_error == topk_error(scores[result.mode], labels, 5)
        assert set(result.per_class_error) == set("abcdef")
        np.testing.assert_allclose(scores[result.mode].sum(1), 1.0, rtol=1e-5)
    table = results_markdown(results)
    assert "centre 64 crop" in table and "10 views x 1 scale" in table


def test_top5_left_out_for_five_classes_or_fewer() -> None:
    net = SPPClassifier(build_backbone("zf5"), 3, hidden=8).eval()
    results, _ = evaluate_modes(net, _images(2), np.array([0, 2]), ["a", "b", "c"],
                                modes=("full",), image_size=72)
    assert results[0].top5_error is None
    assert "| - |" in results_markdown(results)


def test_image_representations(model: SPPClassifier) -> None:
    images = _images(3)
    spp = image_representations(model, images, layer="spp")
    fc7 = image_representations(model, images, layer="fc7")
    assert spp.shape == (3, 256 * 50) and fc7.shape == (3, 16)
    expected = model.pool(model.backbone(image_tensor(model, [images[1]])))[0]
    np.testing.assert_allclose(spp[1], expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert (fc7 >= 0).all()
    assert image_representations(model, [], layer="fc6").shape == (0, 16)
    with pytest.raises(ConfigError):
        image_representations(model, images, layer="fc8")
