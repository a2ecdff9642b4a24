"""The SPP classifier: any input size, crop/full/multi-view paths, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.backbones import build_backbone
from sppdet.classification.model import (
    SPPClassifier,
    ViewSettings,
    crop_view_cells,
    image_tensor,
    load_classifier,
    multi_view_probabilities,
    save_classifier,
    view_logits,
    view_windows,
)
from sppdet.errors import ConfigError, ModelError
from sppdet.ops.spp import spp_pool


@pytest.fixture(scope="module")
def model() -> SPPClassifier:
    return SPPClassifier(build_backbone("zf5", seed=1), 4, hidden=32, seed=1).eval()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(97, 300), (300, 97), (224, 224), (180, 180), (33, 41)])
def test_full_image_accepts_any_size(model: SPPClassifier, size: tuple[int, int]) -> None:
    logits = model(image_tensor(model, [_image(*size)]))
    assert logits.shape == (1, 4)
    assert torch.isfinite(logits).all()
    # the pooled vector has the same length whatever the map size
    pooled = model.pool(model.backbone(image_tensor(model, [_image(*size)])))
    assert pooled.shape == (1, 256 * 50)


def test_pool_equals_spp_of_whole_map_per_image(model: SPPClassifier) -> None:
    maps = torch.rand(3, 256, 5, 7)
    expected = torch.cat([spp_pool(maps[i], [[0, 0, 6, 4]]) for i in range(3)])
    assert torch.equal(model.pool(maps), expected)


def test_no_spp_baseline_is_one_6x6_level() -> None:
    net = SPPClassifier(build_backbone("zf5"), 3, levels=(6,), hidden=8)
    assert net.in_dim == 256 * 36
    assert net(image_tensor(net, [_image(224, 224)])).shape == (1, 3)


def test_full_image_at_crop_size_equals_the_crop_path(model: SPPClassifier) -> None:
    image = _image(224, 224, seed=3)
    batch = image_tensor(model, [image])
    crop_logits = model(batch)
    fmap = model.backbone(batch)
    windows = view_windows(224, 224, 224, "1")
    np.testing.assert_array_equal(windows, [[0, 0, 224, 224]])
    assert torch.equal(view_logits(model, fmap, (224, 224), windows), crop_logits)


def test_crop_view_cells_hand_computed(model: SPPClassifier) -> None:
    # ZF-5: a 224 crop has a 15x15 map; a 256 image a 17x17 map; stride 16.
    assert model.backbone.output_size(224, 224) == (15, 15)
    windows = view_windows(256, 256, 224, "10")
    cells = crop_view_cells(model, windows, (17, 17))
    np.testing.assert_array_equal(cells, [[1, 1, 15, 15], [0, 0, 14, 14], [2, 0, 16, 14],
                                          [0, 2, 14, 16], [2, 2, 16, 16]])


def test_centre_view_matches_the_crop_path_within_tolerance(model: SPPClassifier) -> None:
    """Pooled from the whole image's map, the centre view is close to the centre crop run
    alone (they differ only where the crop's zero padding meets real pixels), and much closer
    than any other view is."""
    # structure at the scale of the views (random 32-pixel blocks), so the views differ
    blocks = _image(8, 8, seed=5)
    image = np.ascontiguousarray(np.kron(blocks, np.ones((32, 32, 1), dtype=np.uint8)))
    crop = np.ascontiguousarray(image[16:240, 16:240])
    crop_pooled = model.pool(model.backbone(image_tensor(model, [crop])))[0]
    fmap = model.backbone(image_tensor(model, [image]))
    cells = crop_view_cells(model, view_windows(256, 256, 224, "10"), fmap.shape[2:])
    pooled = spp_pool(fmap, cells)
    distances = (pooled - crop_pooled).norm(dim=1) / crop_pooled.norm()
    assert distances[0] < 0.35
    assert distances[0] < 0.7 * distances[1:].min()


def test_view_windows_sets() -> None:
    np.testing.assert_array_equal(view_windows(256, 300, 224, "1"), [[38, 16, 262, 240]])
    assert view_windows(256, 300, 224, "10").shape == (5, 4)
    windows = view_windows(256, 300, 224, "18")
    assert windows.shape == (9, 4)
    assert set(map(tuple, windows[:, :2].tolist())) == {
        (38, 16), (0, 0), (76, 0), (0, 32), (76, 32), (38, 0), (38, 32), (0, 16), (76, 16)}
    # a side shorter than the view gives a full-length view
    np.testing.assert_array_equal(view_windows(100, 300, 224, "1"), [[38, 0, 262, 100]])
    with pytest.raises(ConfigError):
        view_windows(256, 256, 224, "7")


def test_paper_mapping_stays_inside_the_crop_mapping(model: SPPClassifier) -> None:
    image = _image(256, 320)
    fmap = model.backbone(image_tensor(model, [image]))
    windows = view_windows(256, 320, 224, "18")
    logits = view_logits(model, fmap, (256, 320), windows, mapping="paper")
    assert logits.shape == (9, 4)
    crop_cells = crop_view_cells(model, windows, fmap.shape[2:])
    assert (crop_cells[:, 2:] >= crop_cells[:, :2]).all()


def test_multi_view_probabilities(model: SPPClassifier) -> None:
    settings = ViewSettings(size=224, scales=(224, 256), views="10", flip=True)
    assert settings.views_per_image == 20
    probabilities = multi_view_probabilities(model, _image(240, 320), settings)
    assert probabilities.shape == (4,)
    assert torch.isclose(probabilities.sum(), torch.tensor(1.0))
    # one centre view without flips at the crop size is the softmax of the crop path
    image = _image(224, 224, seed=9)
    single = ViewSettings(size=224, scales=(224,), views="1", flip=False)
    expected = torch.softmax(model(image_tensor(model, [image])), dim=1)[0]
    torch.testing.assert_close(multi_view_probabilities(model, image, single), expected)


def test_checkpoint_round_trip(model: SPPClassifier, tmp_path) -> None:
    path = tmp_path / "classifier.pt"
    save_classifier(model, path, classes=("a", "b", "c", "d"), meta={"note": 1})
    loaded, classes, meta = load_classifier(path)
    assert classes == ("a", "b", "c", "d") and meta == {"note": 1}
    batch = image_tensor(model, [_image(97, 300)])
    assert torch.equal(loaded(batch), model(batch))
    with pytest.raises(ConfigError):
        save_classifier(model, tmp_path / "x.pt", classes=("a",))


def test_bad_checkpoints(tmp_path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        load_classifier(broken)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ModelError, match="not an sppdet classifier"):
        load_classifier(other)


def test_fc_layers_become_a_backbone_checkpoint(model: SPPClassifier, tmp_path) -> None:
    path = tmp_path / "weights.pt"
    model.backbone.save_weights(str(path), model.fc_layers())
    loaded = build_backbone("zf5", str(path))
    fc = loaded.fc_layers()
    assert fc is not None
    assert torch.equal(fc["fc6"].weight, model.fc6.weight)
    assert torch.equal(fc["fc7"].bias, model.fc7.bias)
    batch = image_tensor(model, [_image(64, 80)])
    assert torch.equal(loaded(batch), model.backbone(batch))
