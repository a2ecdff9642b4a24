"""Test settings chosen on validation: per-class NMS, the F1 operating point, the stored file,
and per-class NMS in detection (``suppress``) and in the detections record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import (ClassNMS, DetectionsItem, NMSSettings,
                                           detections_params, read_detections_artifact,
                                           write_detections_artifact)
from sppdet.detector.model import suppress
from sppdet.detector.tuning import (DEFAULT_NMS, NMS_GRID, at_operating_points,
                                    choose_test_settings, operating_point, read_test_settings,
                                    settings_file_content, write_test_settings_file)
from sppdet.errors import ArtifactError, ConfigError
from sppdet.evaluation.records import ClassDetections
from sppdet.evaluation.voc_ap import ImageGroundTruth, evaluate_class
from sppdet.io.records import Record
from sppdet.ops.nms import class_nms

CLASSES = ("touching", "isolated")
THRESHOLD = -1.5


def _box(x: float, y: float, size: float = 100.0) -> list[float]:
    return [x, y, x + size, y + size]


def _touching_case() -> tuple[list[ImageGroundTruth], list[ImageDetections]]:
    """Two images. Class 0: two true objects side by side (IoU 62/138 = 0.449), each found
    exactly: hard NMS at 0.3 or 0.4 suppresses the true neighbour, at 0.5 it does not.
    Class 1: one object per image; in image 0 a duplicate (IoU 71/129 = 0.550 with the object)
    scores above image 1's true detection: only hard NMS at 0.6 keeps it, as a false positive
    ranked before a true positive."""
    truth, candidates = [], []
    for image, (s0a, s0b, s1) in enumerate([(3.0, 2.5, 2.0), (2.8, 2.4, 1.0)]):
        gt_boxes = [_box(0, 0), _box(38, 0), _box(0, 200)]
        truth.append(ImageGroundTruth(f"img{image}", gt_boxes, [0, 0, 1]))
        boxes, scores, labels = [_box(0, 0), _box(38, 0), _box(0, 200)], [s0a, s0b, s1], \
            [0, 0, 1]
        if image == 0:
            boxes.append(_box(29, 200))
            scores.append(1.5)
            labels.append(1)
        candidates.append(ImageDetections(f"img{image}", boxes, scores, labels))
    return truth, candidates


def test_each_class_gets_the_nms_its_objects_need():
    truth, candidates = _touching_case()
    result = choose_test_settings(truth, candidates, CLASSES, score_threshold=THRESHOLD,
                                  max_per_image=100)
    touching, isolated = result.classes
    # hard at 0.5 is the first grid setting to keep both neighbours (Soft-NMS ties with it)
    assert touching.nms == ClassNMS("hard", 0.5)
    aps = dict(zip(result.grid, touching.val_ap))
    assert aps[DEFAULT_NMS] == pytest.approx(6 / 11)  # recall 0.5 at precision 1
    assert aps[ClassNMS("hard", 0.5)] == pytest.approx(1.0)
    # the isolated class: every setting but hard 0.6 gives AP 1; the tie goes to the default
    assert isolated.nms == DEFAULT_NMS
    iso = dict(zip(result.grid, isolated.val_ap))
    assert iso[ClassNMS("hard", 0.6)] < 1.0 and iso[DEFAULT_NMS] == pytest.approx(1.0)
    assert result.default_map == pytest.approx((6 / 11 + 1) / 2)
    assert result.chosen_map == pytest.approx(1.0)
    assert result.chosen_ap == [pytest.approx(1.0), pytest.approx(1.0)]
    assert result.per_class_nms() == (ClassNMS("hard", 0.5), DEFAULT_NMS)


def test_ties_go_to_the_default_and_a_class_without_objects_keeps_it():
    # one well-separated detection per object: every setting gives the same AP
    truth = [ImageGroundTruth("a", [_box(0, 0)], [0])]
    candidates = [ImageDetections("a", [_box(0, 0), _box(300, 300)], [1.0, 0.5], [0, 1])]
    result = choose_test_settings(truth, candidates, CLASSES, score_threshold=THRESHOLD,
                                  max_per_image=100)
    assert len(set(result.classes[0].val_ap)) == 1
    assert [c.nms for c in result.classes] == [DEFAULT_NMS, DEFAULT_NMS]
    assert result.classes[1].val_ap == [None] * len(NMS_GRID)  # no positives: AP undefined
    assert result.classes[1].operating_point is None


def test_a_setting_is_tried_on_one_class_with_the_others_at_the_default():
    """The per-image cap (3 here) counts every class. Gaussian Soft-NMS keeps class 0's true
    neighbour (decayed to 1.17); tried on class 1 at the same time it would also keep class 1's
    duplicate (decayed to 1.53), which would take the last place under the cap. Tried on class 0
    alone, class 1 keeps hard NMS, which removes the duplicate."""
    truth = [ImageGroundTruth("a", [_box(0, 0), _box(38, 0), _box(0, 200)], [0, 0, 1])]
    candidates = [ImageDetections("a", [_box(0, 0), _box(38, 0), _box(0, 200), _box(30, 200)],
                                  [3.0, 2.5, 4.0, 3.9], [0, 0, 1, 1])]
    gaussian = ClassNMS("gaussian", sigma=0.5)
    result = choose_test_settings(truth, candidates, CLASSES, score_threshold=THRESHOLD,
                                  max_per_image=3, grid=[DEFAULT_NMS, gaussian])
    assert result.classes[0].val_ap == [pytest.approx(6 / 11), pytest.approx(1.0)]
    assert [c.nms for c in result.classes] == [gaussian, DEFAULT_NMS]
    assert result.chosen_map == pytest.approx(1.0)


def test_the_grid_gets_the_default_and_refuses_repeats():
    truth, candidates = _touching_case()
    result = choose_test_settings(truth, candidates, CLASSES, score_threshold=THRESHOLD,
                                  max_per_image=100, grid=[ClassNMS("gaussian", sigma=0.5)])
    assert result.grid == (DEFAULT_NMS, ClassNMS("gaussian", sigma=0.5))
    with pytest.raises(ConfigError, match="twice"):
        choose_test_settings(truth, candidates, CLASSES, score_threshold=THRESHOLD,
                             max_per_image=100, grid=[DEFAULT_NMS, DEFAULT_NMS])


def _brute_force_operating_point(truth, detections: ClassDetections):
    """Try every threshold: keep scores >= t, evaluate that subset alone, take F1."""
    best = None
    for t in sorted(set(detections.scores.tolist()), reverse=True):
        subset = detections.subset(detections.scores >= t)
        result = evaluate_class(truth, 0, subset)
        p = np.nan_to_num(result.precision[-1]) if len(subset) else 0.0
        r = np.nan_to_num(result.recall[-1]) if len(subset) else 0.0
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        if best is None or f1 > best[0]:  # strictly better: ties keep the higher threshold
            best = (f1, t, p, r, len(subset))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_f1_threshold_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    truth, ids, scores, boxes = [], [], [], []
    for image in range(5):
        n = int(rng.integers(0, 4))
        gt = np.array([_box(150 * k, 0, 100) for k in range(n)]).reshape(-1, 4)
        truth.append(ImageGroundTruth(f"i{image}", gt, [0] * n,
                                      difficult=rng.random(n) < 0.2))
        for _ in range(int(rng.integers(1, 7))):
            k = int(rng.integers(0, 4))
            jitter = rng.choice([0.0, 10.0, 60.0])  # a hit, a near hit, a miss
            ids.append(f"i{image}")
            boxes.append(_box(150 * k + jitter, 0, 100))
            # few distinct values, so that equal scores occur
            scores.append(float(rng.integers(0, 5)))
    detections = ClassDetections(np.array(ids, object), scores, boxes)
    expected = _brute_force_operating_point(truth, detections)
    point = operating_point(evaluate_class(truth, 0, detections), detections.scores)
    if expected[0] == 0:
        assert point is None
        return
    assert (point.f1, point.score, point.precision, point.recall, point.detections) == \
        pytest.approx(expected)


def test_operating_points_filter_per_class():
    detections = ImageDetections("a", [_box(0, 0)] * 4, [2.0, 1.0, 0.5, -0.5], [0, 0, 1, 1])
    kept = at_operating_points(detections, [1.0, None], 0.0)
    np.testing.assert_array_equal(kept.scores, [2.0, 1.0, 0.5])  # >= 1 for 0, > 0 for 1
    assert len(at_operating_points(ImageDetections.empty("a"), [1.0, None], 0.0)) == 0


# --- per-class NMS ----------------------------------------------------------------------------


def _random_candidates(rng, n=60, classes=3):
    xy = rng.uniform(0, 80, size=(n, 2))
    wh = rng.uniform(10, 40, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return ImageDetections("x", boxes, rng.normal(size=n).astype(np.float32),
                           rng.integers(0, classes, size=n))


@pytest.mark.parametrize("cap", [None, 100, 7])
def test_per_class_suppression_equals_each_class_alone(cap):
    rng = np.random.default_rng(1)
    candidates = _random_candidates(rng)
    per_class = (ClassNMS("hard", 0.5), ClassNMS("gaussian", sigma=0.3), ClassNMS("hard", 0.5))
    got = suppress(candidates, NMSSettings(score_threshold=-1.0, max_per_image=cap,
                                           per_class=per_class))
    # the reference: each class alone with its setting, pooled, sorted by score, capped
    rows = []
    for label, setting in enumerate(per_class):
        index = np.flatnonzero(candidates.labels == label)
        keep, scores = class_nms(candidates.boxes[index], candidates.scores[index],
                                 candidates.labels[index], method=setting.method,
                                 iou_threshold=setting.iou_threshold, sigma=setting.sigma,
                                 score_threshold=-1.0, max_per_image=None)
        rows += [(-float(s), int(i)) for i, s in zip(index[keep], scores)]
    rows.sort()
    rows = rows[:cap] if cap is not None else rows
    np.testing.assert_array_equal(got.boxes, candidates.boxes[[i for _, i in rows]])
    np.testing.assert_allclose(got.scores, np.float32([-s for s, _ in rows]))


def test_one_setting_for_every_class_is_class_nms_itself():
    candidates = _random_candidates(np.random.default_rng(2))
    same = NMSSettings(score_threshold=-1.0, per_class=(ClassNMS("linear", 0.5),) * 3)
    keep, scores = class_nms(candidates.boxes, candidates.scores, candidates.labels,
                             method="linear", iou_threshold=0.5, score_threshold=-1.0)
    got = suppress(candidates, same)
    np.testing.assert_array_equal(got.boxes, candidates.boxes[keep])
    np.testing.assert_array_equal(got.scores, scores.astype(np.float32))
    assert len(suppress(ImageDetections.empty("x"), same)) == 0


DATA = {"dataset": "/d", "split": "val", "classes": ["a", "b"], "n_images": 1,
        "fingerprint": "f"}


def test_per_class_settings_round_trip_in_the_record_and_old_records_load(tmp_path):
    per_class = (ClassNMS("hard", 0.5), ClassNMS("gaussian", sigma=0.3))
    nms = NMSSettings(0.3, -1.5, 100, per_class=per_class)
    assert "per_class" not in NMSSettings().to_params()  # old digests stay the same
    item = DetectionsItem(ImageDetections.empty("x1"), ImageDetections.empty("x1"), 4, 4)
    path = write_detections_artifact(tmp_path / "d.h5", Record("detect", detections_params(
        model="m", data=DATA, classes=["a", "b"], nms=nms)), [item])
    loaded = read_detections_artifact(path).nms
    assert loaded == nms and loaded.for_class(1) == ClassNMS("gaussian", sigma=0.3)
    assert loaded.describe(["a", "b"]) == "a: hard IoU 0.5; b: gaussian sigma 0.3"
    wrong = NMSSettings(per_class=per_class[:1])
    path = write_detections_artifact(tmp_path / "w.h5", Record("detect", detections_params(
        model="m", data=DATA, classes=["a", "b"], nms=wrong)), [item])
    with pytest.raises(ArtifactError, match="name 1 classes, its class list 2"):
        read_detections_artifact(path)


# --- the stored file --------------------------------------------------------------------------


def test_settings_file_round_trip_and_malformed_files(tmp_path):
    truth, candidates = _touching_case()
    result = choose_test_settings(truth, candidates, CLASSES, score_threshold=THRESHOLD,
                                  max_per_image=100)
    content = settings_file_content(result, scorer="svm", bbox_reg=True, val_split="val",
                                    score_threshold=THRESHOLD, max_per_image=100,
                                    metric="11point", inputs={"fc": "abc"})
    path = tmp_path / "test_settings.json"
    write_test_settings_file(path, content)
    stored = read_test_settings(path)
    assert stored.classes == CLASSES and stored.nms == result.per_class_nms()
    assert stored.operating_scores == tuple(c.operating_point.score for c in result.classes)
    assert (stored.scorer, stored.bbox_reg, stored.val_split) == ("svm", True, "val")
    saved = json.loads(path.read_text())
    assert saved["classes"]["touching"]["val_ap"]["hard IoU 0.3"] == pytest.approx(6 / 11)
    assert saved["inputs"] == {"fc": "abc"}
    del saved["classes"]["isolated"]["nms"]["method"]
    path.write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match=r"key 'classes.isolated.nms' is missing or "
                                            r"malformed.*tune-detect"):
        read_test_settings(path)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read the test settings"):
        read_test_settings(path)
