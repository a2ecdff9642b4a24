"""EdgeBoxes: built-in edges, the Structured Edge model path, score shapes, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.proposals_images import RECTANGLE_XYXY, blocks_image, rectangle_image
from sppdet.ops.boxes import box_iou
from sppdet.errors import ConfigError, ModelError
from sppdet.proposals import EdgeBoxesParams, ProposalError, edge_boxes, load_edge_model
from sppdet.proposals.edge_boxes import (
    _HELPER_MODEL_YAML,
    EDGE_MODEL_SOURCE,
    edge_map,
    gradient_edges,
    score_vector,
)


def test_rectangle_is_the_best_box():
    result = edge_boxes(rectangle_image(noise=True))
    assert result.boxes.dtype == np.float32 and result.scores.dtype == np.float32
    assert result.boxes.shape == (result.scores.shape[0], 4)
    # The best-scoring box lies on the rectangle (EdgeBoxes' step alpha limits precision).
    assert box_iou(RECTANGLE_XYXY, result.boxes[:1])[0, 0] >= 0.7
    assert np.all(np.diff(result.scores) <= 0)  # best first


def test_boxes_match_opencv_xywh_output():
    image = blocks_image(seed=2)
    params = EdgeBoxesParams(max_size=None, min_size=0)
    edges, orientation = edge_map(image, None)
    detector = cv2.ximgproc.createEdgeBoxes(maxBoxes=params.max_boxes)
    rects, scores = detector.getBoundingBoxes(edges, orientation)
    rects = np.asarray(rects).reshape(-1, 4)
    ours = edge_boxes(image, params)
    assert len(ours) == rects.shape[0] > 10
    # x2 = x + w, y2 = y + h, in the same (score) order.
    expected = np.stack(
        [rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], axis=1
    ).astype(np.float32)
    np.testing.assert_array_equal(ours.boxes, expected)
    np.testing.assert_array_equal(ours.scores, np.asarray(scores, np.float32).reshape(-1))


def test_deterministic_across_runs():
    image = blocks_image(seed=3)
    first, second = edge_boxes(image), edge_boxes(image)
    np.testing.assert_array_equal(first.boxes, second.boxes)
    np.testing.assert_array_equal(first.scores, second.scores)


def test_parameters_reach_opencv():
    image = blocks_image(seed=3)
    few = edge_boxes(image, EdgeBoxesParams(max_boxes=5))
    assert len(few) <= 5

    def aspect(boxes: np.ndarray) -> np.ndarray:
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return np.maximum(widths / heights, heights / widths)

    # OpenCV applies max_aspect_ratio to its search grid; refinement and clipping to the image
    # can stretch a box beyond it, so compare the distributions.
    wide = edge_boxes(image, EdgeBoxesParams(min_size=0))
    square = edge_boxes(image, EdgeBoxesParams(max_aspect_ratio=1.2, min_size=0))
    assert np.median(aspect(wide.boxes)) > 1.5 and aspect(wide.boxes).max() > 3.0
    assert np.median(aspect(square.boxes)) < 1.2 and aspect(square.boxes).max() < 2.0


def test_every_parameter_is_passed_to_opencv(monkeypatch):
    seen = {}
    original = cv2.ximgproc.createEdgeBoxes

    def recording(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(cv2.ximgproc, "createEdgeBoxes", recording)
    params = EdgeBoxesParams(
        max_boxes=77,
        alpha=0.6,
        beta=0.7,
        eta=0.99,
        min_score=0.02,
        max_aspect_ratio=2.5,
        min_box_area=500.0,
        edge_min_mag=0.2,
        edge_merge_thr=0.4,
        cluster_min_mag=0.6,
        gamma=1.5,
        kappa=1.2,
    )
    edge_boxes(blocks_image(seed=3), params)
    assert seen == {
        "maxBoxes": 77,
        "alpha": 0.6,
        "beta": 0.7,
        "eta": 0.99,
        "minScore": 0.02,
        "maxAspectRatio": 2.5,
        "minBoxArea": 500.0,
        "edgeMinMag": 0.2,
        "edgeMergeThr": 0.4,
        "clusterMinMag": 0.6,
        "gamma": 1.5,
        "kappa": 1.2,
    }


def test_max_size_maps_boxes_back():
    small = blocks_image(seed=5)
    large = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    on_small = edge_boxes(small, EdgeBoxesParams(min_size=0))
    on_large = edge_boxes(large, EdgeBoxesParams(min_size=0, max_size=160))
    np.testing.assert_array_equal(on_large.boxes, on_small.boxes * 2.0)
    np.testing.assert_array_equal(on_large.scores, on_small.scores)


def test_gradient_edges_range_and_location():
    edges = gradient_edges(rectangle_image())
    assert edges.dtype == np.float32 and edges.shape == (120, 160)
    assert edges.min() >= 0.0 and edges.max() <= 1.0
    # Strong along the rectangle's border, weak inside it and in the background far from it.
    assert edges[29:31, 60:110].max(axis=0).min() > 0.4
    assert edges[40:70, 49:51].max(axis=1).min() > 0.4
    assert edges[50:60, 80:90].max() < 0.05 and edges[100:, :20].max() < 0.05


def test_flat_image_gives_no_boxes():
    result = edge_boxes(np.full((120, 160, 3), 90, np.uint8))
    assert result.boxes.shape == (0, 4) and result.scores.shape == (0,)


@pytest.mark.parametrize(
    "raw",
    [np.ones((3, 1)), np.ones(3), [[1.0], [1.0], [1.0]]],
    ids=["4.x (N,1)", "5.x (N,)", "list"],
)
def test_score_shapes_of_both_opencv_versions(raw):
    vector = score_vector(raw, 3)
    assert vector.shape == (3,) and vector.dtype == np.float32


def test_empty_score_shapes():
    assert score_vector((), 0).shape == (0,)
    assert score_vector(None, 0).shape == (0,)
    with pytest.raises(ProposalError, match="2 boxes but 3 scores"):
        score_vector(np.ones(3), 2)


def test_missing_edge_model_message(tmp_path):
    missing = tmp_path / "model.yml.gz"
    with pytest.raises(ModelError) as info:
        edge_boxes(rectangle_image(), EdgeBoxesParams(edge_model=str(missing)))
    message = str(info.value)
    assert str(missing) in message
    assert "model.yml.gz" in message and EDGE_MODEL_SOURCE in message
    # the library names the setting; the command line renders it as its option
    assert "rerun with edge_model=... (its path), or without it" in message
    assert "--edge-model" not in message
    assert info.value.remedy.settings == (("edge_model", None),)


def test_unreadable_edge_model(tmp_path):
    bad = tmp_path / "model.yml"
    bad.write_text("this is not an OpenCV model\n")
    with pytest.raises(ModelError, match="cannot load the Structured Edge model"):
        load_edge_model(bad)


def test_other_yaml_file_is_refused_not_crashing(tmp_path):
    # OpenCV would divide by options.numberOfTrees = 0 and kill the process.
    other = tmp_path / "other.yml"
    other.write_text("%YAML:1.0\nname: something else\n")
    with pytest.raises(ModelError, match="not a Structured Edge model file"):
        load_edge_model(other)


def test_structured_edge_model_path_runs(tmp_path):
    # A one-leaf forest predicts no edges: the model path loads, detects, and yields no boxes.
    model = tmp_path / "tiny_model.yml"
    model.write_text(_HELPER_MODEL_YAML)
    result = edge_boxes(rectangle_image(noise=True), EdgeBoxesParams(edge_model=str(model)))
    assert result.boxes.shape == (0, 4) and result.scores.shape == (0,)


def test_opencv_failure_becomes_proposal_error(monkeypatch):
    def failing(**kwargs):
        raise cv2.error("simulated EdgeBoxes failure")

    monkeypatch.setattr(cv2.ximgproc, "createEdgeBoxes", failing)
    with pytest.raises(ProposalError, match="simulated EdgeBoxes failure"):
        edge_boxes(rectangle_image())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_boxes": 0},
        {"alpha": 1.0},
        {"beta": 0.0},
        {"max_aspect_ratio": 0.5},
        {"min_box_area": -1},
    ],
)
def test_invalid_parameters_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        EdgeBoxesParams(**kwargs)
