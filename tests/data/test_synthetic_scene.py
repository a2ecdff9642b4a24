"""Tests of rendering one synthetic image (sppdet.data.synthetic.scene): boxes from the visible
masks, the difficult and truncated flags, and the parameters that shape an image."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sppdet.data.synthetic.config import SHAPE_CLASSES, DemoDataConfig
from sppdet.data.synthetic.scene import render_demo_image

SMALL = DemoDataConfig(seed=3, n_trainval=6, n_test=4)


def test_an_image_does_not_depend_on_the_dataset_size():
    # One generator per image (seed + index): image 2 is the same in a larger dataset.
    small = render_demo_image(2, SMALL)
    large = render_demo_image(2, DemoDataConfig(seed=3, n_trainval=50, n_test=20))
    assert np.array_equal(small.image_bgr, large.image_bgr)
    assert small.objects == large.objects


# ---------------------------------------------------------------------------------------------
# Boxes, masks and flags


@pytest.fixture(scope="module")
def rendered():
    config = DemoDataConfig(seed=11, n_trainval=30, n_test=10)
    return config, [render_demo_image(i, config, with_masks=True) for i in range(30)]


def test_boxes_are_the_extent_of_the_visible_masks(rendered):
    config, images = rendered
    for demo in images:
        masks = demo.visible_masks
        assert masks.shape == (len(demo.objects), demo.height, demo.width)
        # Occlusion: every pixel belongs to at most one object.
        assert masks.sum(axis=0).max() <= 1
        for obj, mask in zip(demo.objects, masks):
            ys, xs = np.nonzero(mask)
            assert obj.bbox == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
            assert config.min_visible - 1e-9 <= obj.visible_fraction <= 1.0


def test_difficult_and_truncated_flags_occur(rendered):
    _, images = rendered
    objects = [obj for demo in images for obj in demo.objects]
    assert any(obj.difficult for obj in objects)
    assert any(obj.truncated for obj in objects)
    assert any(not obj.difficult for obj in objects)
    assert any(not obj.truncated for obj in objects)
    # Some objects are partly hidden by others.
    occluded = [
        obj for demo in images for obj, out in zip(demo.objects, demo.outside_pixels)
        if out == 0 and obj.visible_fraction < 0.9
    ]  # fmt: skip
    assert occluded


def test_difficult_follows_its_rule(rendered):
    config, images = rendered
    for demo in images:
        for obj in demo.objects:
            width, height = obj.bbox[2] - obj.bbox[0] + 1, obj.bbox[3] - obj.bbox[1] + 1
            expected = (
                math.sqrt(width * height) < config.difficult_min_size
                or obj.visible_fraction < config.difficult_min_visible
            )
            assert obj.difficult == expected


def test_truncated_objects_touch_the_border_and_others_fit():
    # One object per image, so nothing occludes: a truncated object's box reaches the border.
    always = DemoDataConfig(seed=5, n_trainval=12, n_test=0, max_objects=1, truncation_fraction=1.0)
    for index in range(always.n_images):
        demo = render_demo_image(index, always)
        (obj,) = demo.objects
        assert obj.truncated
        xmin, ymin, xmax, ymax = obj.bbox
        assert xmin == 1 or ymin == 1 or xmax == demo.width or ymax == demo.height
        assert obj.visible_fraction < 1.0
    never = DemoDataConfig(seed=5, n_trainval=12, n_test=0, max_objects=1, truncation_fraction=0.0)
    for index in range(never.n_images):
        demo = render_demo_image(index, never)
        (obj,) = demo.objects
        assert not obj.truncated
        assert obj.visible_fraction == 1.0


# ---------------------------------------------------------------------------------------------
# Parameters


def test_parameters_are_respected():
    config = DemoDataConfig(
        seed=1,
        n_trainval=8,
        n_test=2,
        n_classes=5,
        image_width=320,
        image_height=240,
        size_jitter=0.0,
        portrait_fraction=0.0,
        min_objects=2,
        max_objects=2,
        difficult_min_size=0.0,
        difficult_min_visible=0.0,
    )
    names = set()
    for index in range(config.n_images):
        demo = render_demo_image(index, config)
        assert (demo.width, demo.height) == (320, 240)
        assert 1 <= len(demo.objects) <= 2
        assert not any(obj.difficult for obj in demo.objects)
        names.update(obj.name for obj in demo.objects)
    assert names <= set(SHAPE_CLASSES[:5])
    # min_objects is a target that placement can miss, but not often.
    counts = [len(render_demo_image(i, config).objects) for i in range(config.n_images)]
    assert counts.count(2) >= config.n_images // 2


def test_size_jitter_and_portrait():
    config = DemoDataConfig(seed=2, n_trainval=20, n_test=0, size_jitter=0.1, portrait_fraction=0.5)
    sizes = [render_demo_image(i, config).image_bgr.shape[:2] for i in range(config.n_images)]
    for height, width in sizes:
        long_side, short_side = max(height, width), min(height, width)
        assert 450 <= long_side <= 550 and 337 <= short_side <= 413
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)


def test_tiny_threshold_marks_everything_difficult():
    config = DemoDataConfig(seed=1, n_trainval=4, n_test=0, difficult_min_size=4096.0)
    for index in range(config.n_images):
        assert all(obj.difficult for obj in render_demo_image(index, config).objects)
