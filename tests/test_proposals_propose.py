"""The per-image front door, parameter records, and the shared box clean-up."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from tests.proposals_images import RECTANGLE_XYXY, rectangle_image
from sppdet.ops.boxes import box_iou
from sppdet.errors import ConfigError, DataError
from sppdet.proposals import (
    METHODS,
    EdgeBoxesParams,
    ProposalError,
    SelectiveSearchParams,
    default_params,
    params_from_dict,
    params_record,
    propose_image,
)
from sppdet.proposals.common import finish_boxes, resize_longer_side


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_finds_the_rectangle(method):
    result = propose_image(rectangle_image(noise=True), method)
    assert (
        result.boxes.dtype == np.float32 and result.boxes.ndim == 2 and result.boxes.shape[1] == 4
    )
    assert box_iou(RECTANGLE_XYXY, result.boxes).max() >= 0.8
    assert (result.scores is None) == method.startswith("ss-")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_parameter_records_are_json_and_round_trip(method):
    params = default_params(method)
    record = params_record(method, params)
    decoded = json.loads(json.dumps(record, allow_nan=False))
    assert decoded["method"] == method
    assert params_from_dict(method, decoded["params"]) == params


def test_edge_model_path_is_recorded():
    params = EdgeBoxesParams(edge_model="/models/model.yml.gz", beta=0.55)
    assert asdict(params)["edge_model"] == "/models/model.yml.gz"
    assert params_from_dict("edgeboxes", asdict(params)) == params


def test_wrong_method_or_params_raise_config_error():
    with pytest.raises(ConfigError, match="unknown proposal method 'ss-slow'"):
        propose_image(rectangle_image(), "ss-slow")
    with pytest.raises(ConfigError, match="takes EdgeBoxesParams, got SelectiveSearchParams"):
        propose_image(rectangle_image(), "edgeboxes", SelectiveSearchParams())
    with pytest.raises(ConfigError, match="unknown parameter"):
        params_from_dict("ss-fast", {"max_boxes": 10, "alpha": 0.5})


def test_proposal_error_is_a_data_error():
    with pytest.raises(DataError):
        propose_image(np.zeros((10, 10), np.uint8), "ss-fast")
    assert issubclass(ProposalError, DataError)


def test_resize_longer_side():
    image = np.zeros((300, 500, 3), np.uint8)
    same, sx, sy = resize_longer_side(image, 500)
    assert same is image and (sx, sy) == (1.0, 1.0)
    small, sx, sy = resize_longer_side(image, 250)
    assert small.shape == (150, 250, 3) and (sx, sy) == (2.0, 2.0)
    odd, sx, sy = resize_longer_side(np.zeros((333, 1000, 3), np.uint8), 100)
    assert odd.shape == (33, 100, 3)
    assert sx == 10.0 and sy == pytest.approx(333 / 33)
    assert resize_longer_side(image, None)[0] is image


def test_finish_boxes_scales_clips_filters_and_dedups():
    boxes = np.array(
        [
            [10, 10, 20, 20],  # -> [20, 30, 40, 60]
            [0, 0, 2, 50],  # 4 px wide after scaling: below min_size 5
            [45, 0, 60, 10],  # x2 = 120 clipped to 100
            [10, 10, 20, 20],  # duplicate of the first: dropped, first kept
            [60, 0, 70, 10],  # wholly outside after scaling: empty after clipping
        ],
        np.float32,
    )
    scores = np.array([5, 4, 3, 2, 1], np.float32)
    out, out_scores = finish_boxes(
        boxes, scores, scale_x=2.0, scale_y=3.0, width=100, height=80, min_size=5
    )
    np.testing.assert_array_equal(out, np.array([[20, 30, 40, 60], [90, 0, 100, 30]], np.float32))
    np.testing.assert_array_equal(out_scores, [5, 3])
    empty, empty_scores = finish_boxes(
        np.zeros((0, 4)), None, scale_x=1, scale_y=1, width=5, height=5, min_size=0
    )
    assert empty.shape == (0, 4) and empty.dtype == np.float32 and empty_scores is None
