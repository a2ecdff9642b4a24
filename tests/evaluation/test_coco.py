"""COCO conversion (VOC 1-based inclusive -> COCO 0-based [x, y, w, h]) against numbers worked
out by hand, and pycocotools' metrics on cases whose AP is known."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError
from sppdet.evaluation.coco import (
    coco_detections,
    coco_ground_truth,
    coco_image_numbers,
    coco_metrics,
    voc_to_coco_boxes,
)
from sppdet.evaluation.voc_ap import ClassDetections, ImageGroundTruth
from tests.conftest import SHARED_DATA

VOC2007 = SHARED_DATA / "voc-fixtures" / "VOC2007"


def records(data: VOCDataset) -> list[ImageGroundTruth]:
    return [ImageGroundTruth(a.image_id, a.boxes, a.labels, a.difficult, a.boxes_voc)
            for a in data]


def test_box_conversion_by_hand():
    # VOC 1..10 covers pixels [0, 10): x = 0, w = 10; a single pixel 5..5 is x = 4, w = 1;
    # floats keep their fractions: 2.5..7.25 -> x = 1.5, w = 5.75
    np.testing.assert_array_equal(
        voc_to_coco_boxes(np.array([[1, 1, 10, 20], [5, 5, 5, 5], [2.5, 3, 7.25, 3]])),
        [[0, 0, 10, 20], [4, 4, 1, 1], [1.5, 2, 5.75, 1]])


def test_ground_truth_of_the_test_fixture(tiny_voc):
    # tiny_voc: img1 circle (1,1,10,20); img2 square (5,6,64,48), difficult circle
    # (20,20,30,30); img3 no object. Classes: circle = 1, square = 2.
    data = VOCDataset(tiny_voc, "trainval")
    gt = coco_ground_truth(records(data), data.classes,
                           image_info={a.image_id: {"width": a.width, "height": a.height}
                                       for a in data})
    assert [(i["id"], i["voc_id"], i["width"], i["height"]) for i in gt["images"]] == [
        (1, "img1", 64, 48), (2, "img2", 64, 48), (3, "img3", 64, 48)]
    assert gt["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    assert [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])
            for a in gt["annotations"]] == [
        (1, 1, [0, 0, 10, 20], 200, 0),         # 10 x 20 pixels
        (2, 2, [4, 5, 60, 43], 2580, 0),        # 64 - 5 + 1 = 60, 48 - 6 + 1 = 43
        (2, 1, [19, 19, 11, 11], 121, 1),       # difficult -> crowd region
    ]
    assert [a["id"] for a in gt["annotations"]] == [1, 2, 3]


@pytest.mark.skipif(not (VOC2007 / "Annotations").is_dir(),
                    reason=f"real VOC2007 fixtures not found at {VOC2007}")
def test_ground_truth_of_the_voc2007_fixtures():
    data = VOCDataset(VOC2007, "test", require_images=False, clip_boxes=False)
    gt = coco_ground_truth(records(data), data.classes)
    first = [a for a in gt["annotations"] if a["image_id"] == 1]
    # 000001.xml: dog 48,240,195,371 -> [47, 239, 148, 132], area 148 * 132 = 19536;
    # person 8,12,352,498 -> [7, 11, 345, 487], area 168015
    assert [(a["category_id"], a["bbox"], a["area"]) for a in first] == [
        (12, [47, 239, 148, 132], 19536), (15, [7, 11, 345, 487], 168015)]
    assert gt["images"][0]["voc_id"] == "000001"
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 5  # the 5 difficult objects
    assert len(gt["annotations"]) == 37


def test_detections_use_the_evaluated_coordinates():
    gt = [ImageGroundTruth("x", np.zeros((0, 4)), []), ImageGroundTruth("y", np.zeros((0, 4)),
                                                                        [])]
    numbers = coco_image_numbers(gt)
    found = {"b": ClassDetections.from_voc(["y"], np.array([0.5]), np.array([[1.0, 2, 10, 4]]))}
    assert coco_detections(found, ["a", "b"], numbers) == [
        {"image_id": 2, "category_id": 2, "bbox": [0.0, 1.0, 10.0, 3.0], "score": 0.5}]
    # a detections artifact's 0-based float32 boxes: x1 stays, w = x2 - x1
    memory = {"a": ClassDetections(np.array(["x"], dtype=object), np.array([1.0]),
                                   np.array([[0.5, 1.25, 8.5, 9.0]]))}
    assert coco_detections(memory, ["a", "b"], numbers)[0]["bbox"] == [0.5, 1.25, 8.0, 7.75]


def _case(with_crowd: bool):
    """One 10x10 object (area 100: small) on image 1; optionally a difficult one on image 2."""
    gt = [ImageGroundTruth("1", [[0, 0, 10, 10]], [0], [False])]
    if with_crowd:
        gt.append(ImageGroundTruth("2", [[0, 0, 20, 20]], [0], [True]))
    return gt


pycocotools = pytest.importorskip("pycocotools", reason="the 'coco' extra is not installed")


def test_metrics_known_cases():
    names = ["x"]
    gt = _case(with_crowd=True)
    coco_gt = coco_ground_truth(gt, names)
    numbers = coco_image_numbers(gt)

    def metrics(rows):
        found = {"x": ClassDetections.from_voc([r[0] for r in rows], np.array([r[1] for r in rows]),
                                               np.array([r[2] for r in rows], dtype=float))}
        return coco_metrics(coco_gt, coco_detections(found, names, numbers))

    # exact hit, and the highest score on the crowd region (ignored, not a false positive)
    perfect = metrics([("2", 0.9, (1, 1, 20, 20)), ("1", 0.8, (1, 1, 10, 10))])
    for name in ("AP", "AP50", "AP75", "APs"):
        assert perfect[name] == pytest.approx(1.0, abs=1e-12), name
    assert perfect["APm"] is None and perfect["APl"] is None  # no object that size
    assert perfect["per_class"] == {"x": pytest.approx({"AP": 1.0, "AP50": 1.0}, abs=1e-12)}
    # IoU 62/100 = 0.62: a match at IoU thresholds 0.50, 0.55, 0.60 only -> AP 3/10
    loose = metrics([("1", 0.8, (1, 1, 10, 6.2))])
    assert loose["AP50"] == pytest.approx(1.0, abs=1e-12) and loose["AP75"] == 0.0
    assert loose["AP"] == pytest.approx(0.3, abs=1e-12)
    # nothing at all: zeros, without calling pycocotools' loadRes (it rejects an empty list)
    assert coco_metrics(coco_gt, [])["AP"] == 0.0


def test_a_false_positive_first_halves_ap50():
    # without a crowd region under it, the first detection is a false positive and the true
    # positive comes second: precision 1/2 at recall 1 -> AP50 1/2
    gt = [ImageGroundTruth("1", [[0, 0, 10, 10]], [0]), ImageGroundTruth("2", np.zeros((0, 4)),
                                                                          [])]
    coco_gt = coco_ground_truth(gt, ["x"])
    found = {"x": ClassDetections.from_voc(["2", "1"], np.array([0.9, 0.8]),
                                           np.array([[1.0, 1, 20, 20], [1, 1, 10, 10]]))}
    result = coco_metrics(coco_gt, coco_detections(found, ["x"], coco_image_numbers(gt)))
    # 101-point interpolation: precision 1/2 at every recall point
    assert result["AP50"] == pytest.approx(0.5, abs=1e-12)


def test_missing_pycocotools_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    monkeypatch.setitem(sys.modules, "pycocotools.cocoeval", None)
    gt = coco_ground_truth(_case(with_crowd=False), ["x"])
    with pytest.raises(ConfigError, match=r"pycocotools.*'coco' extra.*sppdet\[coco\]"):
        coco_metrics(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                           "score": 1.0}])
