import numpy as np
import pytest

from sppdet.ops.boxes import (box_area, box_iou, clip_boxes, is_degenerate, voc_to_xyxy,
                          xywh_to_xyxy, xyxy_to_voc)


def test_voc_to_xyxy_hand_cases():
    # VOC pixel 1..10 (ten pixels) -> [0, 10): width 10 = xmax - xmin + 1
    out = voc_to_xyxy(np.array([[1, 1, 10, 20], [48.5, 2, 50, 2]]))
    np.testing.assert_array_equal(out, [[0, 0, 10, 20], [47.5, 1, 50, 2]])
    assert out.dtype == np.float32


def test_voc_round_trip_and_devkit_area():
    voc = np.array([[1, 1, 10, 20], [100, 50, 350, 200]], dtype=np.float64)
    boxes = voc_to_xyxy(voc)
    np.testing.assert_array_equal(xyxy_to_voc(boxes), voc)
    devkit_area = (voc[:, 2] - voc[:, 0] + 1) * (voc[:, 3] - voc[:, 1] + 1)
    np.testing.assert_array_equal(box_area(boxes), devkit_area)


def test_xywh_to_xyxy():
    np.testing.assert_array_equal(xywh_to_xyxy(np.array([[3, 4, 10, 1]])), [[3, 4, 13, 5]])
    assert xywh_to_xyxy(np.zeros((0, 4))).shape == (0, 4)


def _devkit_iou(a, b):
    """IoU as VOCevaldet computes it, on 1-based inclusive boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
    return iw * ih / ua


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_equals_devkit_plus_one_convention(seed):
    rng = np.random.default_rng(seed)
    xy = rng.integers(1, 60, (12, 2))
    wh = rng.integers(0, 40, (12, 2))
    voc = np.concatenate([xy, xy + wh], axis=1).astype(np.float64)
    ours = box_iou(voc_to_xyxy(voc[:6]), voc_to_xyxy(voc[6:]))
    expected = np.array([[_devkit_iou(a, b) for b in voc[6:]] for a in voc[:6]])
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_box_iou_empty_and_degenerate():
    assert box_iou(np.zeros((0, 4)), np.ones((3, 4))).shape == (0, 3)
    degenerate = np.array([[5, 5, 5, 5]], dtype=np.float32)
    assert box_iou(degenerate, degenerate)[0, 0] == 0.0


def test_clip_and_degenerate():
    boxes = np.array([[-5, -1, 70, 10], [10, 10, 12, 10]], dtype=np.float32)
    np.testing.assert_array_equal(clip_boxes(boxes, 64, 48), [[0, 0, 64, 10], [10, 10, 12, 10]])
    np.testing.assert_array_equal(is_degenerate(boxes), [False, True])
