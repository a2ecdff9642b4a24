"""Tests of the synthetic dataset's config and split assignment (sppdet.data.synthetic.config,
.splits)."""

from __future__ import annotations

import pytest

from sppdet.data.synthetic.config import SHAPE_CLASSES, DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.data.synthetic.splits import split_image_ids
from sppdet.errors import ConfigError


def test_split_edge_cases(tmp_path):
    splits = split_image_ids(DemoDataConfig(n_trainval=1, n_test=0))
    assert splits == {"train": ["000001"], "val": [], "trainval": ["000001"], "test": []}
    splits = split_image_ids(DemoDataConfig(n_trainval=2, n_test=1, val_fraction=0.1))
    assert len(splits["train"]) == 1 and len(splits["val"]) == 1
    summary = make_demo_data(tmp_path / "no-test", DemoDataConfig(n_trainval=2, n_test=0))
    assert summary.images["test"] == 0
    assert (tmp_path / "no-test" / "ImageSets" / "Main" / "test.txt").read_bytes() == b""
    assert (tmp_path / "no-test" / "ImageSets" / "Main" / "disc_test.txt").read_bytes() == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_classes": 0},
        {"n_classes": len(SHAPE_CLASSES) + 1},
        {"n_trainval": 0},
        {"n_test": -1},
        {"min_objects": 3, "max_objects": 2},
        {"min_object_size": 50, "max_object_size": 40},
        {"val_fraction": 1.0},
        {"jpeg_quality": 101},
        {"seed": -1},
        {"image_width": 10},
        {"n_trainval": 2.5},
    ],
)
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        DemoDataConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = DemoDataConfig(seed=9, n_classes=7)
    assert DemoDataConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown"):
        DemoDataConfig.from_dict({"seed": 1, "colour": "red"})
