"""Crops, flips, colour jitter and the training view."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.classification.augment import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    center_crop,
    colour_jitter,
    hflip,
    random_crop,
    resize_square,
    train_view,
)
from sppdet.errors import ConfigError, DataError


def _coded(height: int, width: int) -> np.ndarray:
    """Pixel (y, x) holds (y, x, 7): a crop tells where it was cut."""
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([ys, xs, np.full_like(ys, 7)], axis=2).astype(np.uint8)


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_random_crop_positions_cover_every_offset_and_stay_inside():
    image = _coded(12, 20)
    rng = np.random.default_rng(0)
    tops, lefts = set(), set()
    for _ in range(400):
        crop = random_crop(image, 8, rng)
        assert crop.shape == (8, 8, 3)
        top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        np.testing.assert_array_equal(crop, image[top:top + 8, left:left + 8])
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(12 - 8 + 1)) and lefts == set(range(20 - 8 + 1))


def test_random_crop_draws_top_then_left():
    image = _coded(30, 40)
    expected_rng = np.random.default_rng(3)
    top = int(expected_rng.integers(0, 30 - 10 + 1))
    left = int(expected_rng.integers(0, 40 - 10 + 1))
    crop = random_crop(image, 10, np.random.default_rng(3))
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (top, left)


def test_random_crop_of_exact_size_and_too_small_images():
    image = _coded(8, 8)
    np.testing.assert_array_equal(random_crop(image, 8, np.random.default_rng(0)), image)
    with pytest.raises(DataError, match=r"9x9 crop from a 8x8 image"):
        random_crop(image, 9, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"10x7"):
        center_crop(_coded(7, 10), 8)
    with pytest.raises(ConfigError, match="positive integer"):
        random_crop(image, 0, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"\[H, W, 3\] uint8"):
        random_crop(image.astype(np.float32), 4, np.random.default_rng(0))


def test_center_crop_offsets():
    # (7 - 4) // 2 = 1, (10 - 4) // 2 = 3
    crop = center_crop(_coded(7, 10), 4)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (1, 3)
    assert (crop[-1, -1, 0], crop[-1, -1, 1]) == (4, 6)
    # (9 - 4) // 2 = 2 on both axes
    crop = center_crop(_coded(9, 9), 4)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (2, 2)


def test_hflip_mirrors_columns():
    flipped = hflip(_coded(3, 5))
    assert flipped[:, :, 1].tolist() == [[4, 3, 2, 1, 0]] * 3
    assert flipped.flags.c_contiguous


def test_colour_jitter_strength_zero_is_identity_and_draws_nothing():
    image = _noise(9, 11)
    rng = np.random.default_rng(5)
    out = colour_jitter(image, rng, 0.0)
    np.testing.assert_array_equal(out, image)
    assert out is not image
    assert rng.random() == np.random.default_rng(5).random()


@pytest.mark.parametrize("seed, value, expected", [
    (11, 100, 78),    # b = 0.7771: 77.71 -> 78
    (13, 100, 122),   # b = 1.2189: 121.89 -> 122
    (13, 230, 255),   # 280.3 clipped
])
def test_colour_jitter_on_uniform_grey_is_brightness_only(seed, value, expected):
    # Contrast (blend with the mean grey) and saturation (blend with the luma) leave a uniform
    # grey image unchanged (the luma weights sum to 1), so only brightness acts:
    # out = round(clip(v * b)), b the first of the three draws.
    strength = 0.3
    brightness = np.random.default_rng(seed).uniform(1 - strength, 1 + strength, size=3)[0]
    assert expected == min(255, int(np.floor(value * brightness + 0.5)))  # the hand values
    image = np.full((4, 6, 3), value, dtype=np.uint8)
    out = colour_jitter(image, np.random.default_rng(seed), strength)
    assert (out == expected).all(), (brightness, out[0, 0])


def test_brightness_contrast_saturation_hand_computed():
    pixels = np.array([[[0, 0, 0], [200, 200, 200]]], dtype=np.float32)
    np.testing.assert_allclose(adjust_brightness(pixels, 1.5),
                               [[[0, 0, 0], [255, 255, 255]]])
    # mean grey 100; 0.5 * p + 0.5 * 100
    np.testing.assert_allclose(adjust_contrast(pixels, 0.5), [[[50] * 3, [150] * 3]],
                               rtol=1e-6)
    colour = np.array([[[200, 100, 0]]], dtype=np.float32)  # luma 59.8 + 58.7 + 0 = 118.5
    np.testing.assert_allclose(adjust_saturation(colour, 0.0), [[[118.5] * 3]], rtol=1e-6)
    # 2 p - 118.5 = (281.5, 81.5, -118.5), clipped
    np.testing.assert_allclose(adjust_saturation(colour, 2.0), [[[255, 81.5, 0]]], rtol=1e-6)
    np.testing.assert_allclose(adjust_saturation(colour, 1.0), colour)


def test_colour_jitter_agrees_with_torchvision():
    # torchvision's functional ops on a float image in [0, 1], in the same order with the same
    # factors; the only difference is its luma weight 0.2989 for red (ours 0.299).
    import torch
    from torchvision.transforms import functional as tvf

    image = _noise(10, 12, seed=4)
    factors = np.random.default_rng(6).uniform(0.6, 1.4, size=3)
    tensor = torch.from_numpy(image).permute(2, 0, 1).to(torch.float64) / 255
    tensor = tvf.adjust_brightness(tensor, float(factors[0]))
    tensor = tvf.adjust_contrast(tensor, float(factors[1]))
    tensor = tvf.adjust_saturation(tensor, float(factors[2]))
    reference = tensor.permute(1, 2, 0).numpy() * 255
    ours = colour_jitter(image, np.random.default_rng(6), 0.4)
    assert np.abs(ours.astype(np.float64) - reference).max() <= 0.5 + 0.1


def test_colour_jitter_validates_strength():
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        colour_jitter(_noise(2, 2), np.random.default_rng(0), 1.5)


def _quadrants(size: int) -> np.ndarray:
    half = size // 2
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:half, :half] = (255, 0, 0)
    image[:half, half:] = (0, 255, 0)
    image[half:, :half] = (0, 0, 255)
    image[half:, half:] = (40, 80, 120)
    return image


@pytest.mark.parametrize("source, target", [(224, 180), (180, 224)])
def test_resize_square_keeps_the_layout(source, target):
    out = resize_square(_quadrants(source), target)
    assert out.shape == (target, target, 3)
    half, margin = target // 2, 2  # pixels next to the seam mix two colours
    assert (out[:half - margin, :half - margin] == (255, 0, 0)).all()
    assert (out[:half - margin, half + margin:] == (0, 255, 0)).all()
    assert (out[half + margin:, :half - margin] == (0, 0, 255)).all()
    assert (out[half + margin:, half + margin:] == (40, 80, 120)).all()


def test_resize_square_same_size_and_errors():
    image = _noise(16, 16)
    np.testing.assert_array_equal(resize_square(image, 16), image)
    with pytest.raises(DataError, match="square"):
        resize_square(_noise(16, 17), 8)


def test_train_view_shape_and_determinism():
    image = _noise(40, 50)
    a = train_view(image, 32, 24, np.random.default_rng(1))
    b = train_view(image, 32, 24, np.random.default_rng(1))
    c = train_view(image, 32, 24, np.random.default_rng(2))
    assert a.shape == (24, 24, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_view_follows_the_documented_draws():
    image = _noise(40, 50)
    # no flip, no jitter, no resize: exactly the random crop
    plain = train_view(image, 32, 32, np.random.default_rng(9), flip=False, jitter=0.0)
    np.testing.assert_array_equal(plain, random_crop(image, 32, np.random.default_rng(9)))
    # with flip and jitter: crop, one uniform for the flip, three for the jitter, then resize
    rng = np.random.default_rng(9)
    expected = random_crop(image, 32, rng)
    if rng.random() < 0.5:
        expected = hflip(expected)
    expected = resize_square(colour_jitter(expected, rng, 0.2), 24)
    np.testing.assert_array_equal(train_view(image, 32, 24, np.random.default_rng(9)), expected)


def test_train_view_flips_about_half_the_time():
    image = _coded(8, 8)
    rng = np.random.default_rng(0)
    flipped = sum(train_view(image, 8, 8, rng, jitter=0.0)[0, 0, 1] == 7 for _ in range(200))
    assert 70 < flipped < 130
