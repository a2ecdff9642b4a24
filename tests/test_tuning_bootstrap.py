"""The paired image bootstrap of a class's AP (sppdet.evaluation.bootstrap) against the slow
obvious reference (the split with its images literally copied, evaluated by evaluate_class),
and the rule that keeps the paper's NMS unless a setting beats it in most resamples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import ClassNMS
from sppdet.detector.tuning import (AP_TOLERANCE, DEFAULT_NMS, NMS_GRID,
                                    choose_test_settings, settings_file_content,
                                    write_test_settings_file, read_test_settings)
from sppdet.errors import ConfigError
from sppdet.evaluation.bootstrap import (bootstrap_ap, positives_per_image, resample_weights,
                                         win_fraction)
from sppdet.evaluation.records import ClassDetections
from sppdet.evaluation.voc_ap import ImageGroundTruth, evaluate_class

METRICS = ("11point", "area")


def _box(x: float, y: float, size: float = 100.0) -> list[float]:
    return [x, y, x + size, y + size]


def _random_class(seed: int, n_images: int = 8, *, distinct_scores: bool = True,
                  max_objects: int = 4):
    """One class (label 0, plus some objects of class 1) on ``n_images`` images: hits, near
    hits, duplicates and misses, some objects difficult, some images without any."""
    rng = np.random.default_rng(seed)
    truth, ids, scores, boxes = [], [], [], []
    for image in range(n_images):
        n = int(rng.integers(0, max_objects + 1))
        gt = np.array([_box(150 * k, 0) for k in range(n)]).reshape(-1, 4)
        labels = (rng.random(n) < 0.85).astype(np.int64) ^ 1  # mostly class 0
        truth.append(ImageGroundTruth(f"i{image}", gt, labels, difficult=rng.random(n) < 0.15))
        for _ in range(int(rng.integers(0, 8))):
            k = int(rng.integers(0, max_objects + 1))
            jitter = rng.choice([0.0, 5.0, 15.0, 60.0])
            ids.append(f"i{image}")
            boxes.append(_box(150 * k + jitter, 0))
            scores.append(float(rng.normal()) if distinct_scores
                          else float(rng.integers(0, 4)))
    return truth, ClassDetections(np.array(ids, dtype=object), scores, boxes)


def _literal_resample(truth, detections: ClassDetections, w: np.ndarray):
    """The slow obvious reference: image i copied w[i] times under new ids (copies' detections
    appended after every original one, so the originals come first among equal scores)."""
    new_truth, ids, scores, boxes = [], [], [], []
    for image, record in enumerate(truth):
        for copy in range(int(w[image])):
            new_id = f"{record.image_id}#{copy}"
            new_truth.append(ImageGroundTruth(new_id, record.boxes, record.labels,
                                              record.difficult, record.boxes_voc))
    for copy in range(int(w.max(initial=0))):
        for image, record in enumerate(truth):
            if copy >= w[image]:
                continue
            mine = detections.image_ids == record.image_id
            ids += [f"{record.image_id}#{copy}"] * int(mine.sum())
            scores += detections.scores[mine].tolist()
            boxes += detections.boxes[mine].tolist()
    return new_truth, ClassDetections(np.array(ids, dtype=object), scores,
                                      np.array(boxes).reshape(-1, 4))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(8))
def test_all_ones_is_evaluate_class_exactly(seed, metric):
    # equal scores too: with every weight 1 the curve is evaluate_class's own, ties included
    truth, detections = _random_class(seed, distinct_scores=seed % 2 == 0)
    result = evaluate_class(truth, 0, detections, metric=metric)
    ap = bootstrap_ap(result.matches, positives_per_image(truth, 0),
                      np.ones((3, len(truth)), np.int64), metric)
    if result.ap is None:
        assert np.isnan(ap).all()
    else:
        assert ap.tolist() == [result.ap] * 3  # bit for bit


@pytest.mark.parametrize("metric", METRICS)
def test_all_ones_on_a_long_curve(metric):
    """Over 128 true positives: np.sum's pairwise grouping (area) has more than one block."""
    rng = np.random.default_rng(99)
    truth, ids, scores, boxes = [], [], [], []
    for image in range(150):
        truth.append(ImageGroundTruth(f"i{image}", [_box(0, 0), _box(300, 0)], [0, 0]))
        for x in rng.choice([0, 5, 300, 150, 600], size=3):  # hits, duplicates, misses
            ids.append(f"i{image}")
            boxes.append(_box(float(x), 0))
            scores.append(float(rng.normal()))
    detections = ClassDetections(np.array(ids, dtype=object), scores, boxes)
    result = evaluate_class(truth, 0, detections, metric=metric)
    assert result.n_true_positives > 128
    ap = bootstrap_ap(result.matches, positives_per_image(truth, 0),
                      np.ones((2, len(truth)), np.int64), metric)
    assert ap.tolist() == [result.ap] * 2


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(6))
def test_one_image_doubled_is_the_split_with_that_image_copied(seed, metric):
    truth, detections = _random_class(seed)
    positives = positives_per_image(truth, 0)
    result = evaluate_class(truth, 0, detections, metric=metric)
    for image in range(len(truth)):
        w = np.ones(len(truth), np.int64)
        w[image] = 2
        ref_truth, ref_dets = _literal_resample(truth, detections, w)
        expected = evaluate_class(ref_truth, 0, ref_dets, metric=metric).ap
        got = bootstrap_ap(result.matches, positives, w[None], metric)[0]
        if expected is None:
            assert np.isnan(got)
        elif metric == "11point":
            assert got == expected  # the extra points are dominated; maxima are exact
        else:  # the copy splits a recall step in two: equal up to rounding
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_resamples_are_the_literally_resampled_split(seed, metric):
    truth, detections = _random_class(seed + 10)
    result = evaluate_class(truth, 0, detections, metric=metric)
    weights = resample_weights(len(truth), 12, seed)
    got = bootstrap_ap(result.matches, positives_per_image(truth, 0), weights, metric)
    for w, ap in zip(weights, got):
        ref_truth, ref_dets = _literal_resample(truth, detections, w)
        expected = evaluate_class(ref_truth, 0, ref_dets, metric=metric).ap
        if expected is None:
            assert np.isnan(ap)
        else:
            assert ap == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("metric", METRICS)
def test_a_class_without_detections_has_ap_zero_where_defined(metric):
    truth = [ImageGroundTruth("a", [_box(0, 0)], [0]), ImageGroundTruth("b", [], []),
             ImageGroundTruth("c", [_box(0, 0)], [0], difficult=[True])]
    result = evaluate_class(truth, 0, ClassDetections.empty(), metric=metric)
    weights = np.array([[1, 1, 1], [0, 3, 0], [0, 1, 2], [3, 0, 0]])
    for matches in (result.matches, None):
        ap = bootstrap_ap(matches, positives_per_image(truth, 0), weights, metric)
        # npos: 1, 0 (undefined), 0 (a difficult object only), 3
        np.testing.assert_array_equal(ap, [0.0, np.nan, np.nan, 0.0])


def test_resamples_without_positives_are_left_out_of_the_win_fraction():
    # one object, in image a: a detection on it (AP 1) against none (AP 0)
    truth = [ImageGroundTruth("a", [_box(0, 0)], [0]), ImageGroundTruth("b", [], [])]
    found = evaluate_class(truth, 0, ClassDetections(np.array(["a"], object), [1.0],
                                                     [_box(0, 0)]))
    missed = evaluate_class(truth, 0, ClassDetections(np.array(["b"], object), [1.0],
                                                      [_box(0, 0)]))
    positives = positives_per_image(truth, 0)
    weights = np.array([[2, 0], [1, 1], [0, 2], [0, 2]])
    better = bootstrap_ap(found.matches, positives, weights)
    worse = bootstrap_ap(missed.matches, positives, weights)
    # found.ap: 11 times 1/11 added up, as the devkit does (1 + 2e-16)
    np.testing.assert_array_equal(better, [found.ap, found.ap, np.nan, np.nan])
    np.testing.assert_array_equal(worse, [0.0, 0.0, np.nan, np.nan])
    assert win_fraction(better, worse) == 1.0  # 2 of the 2 defined resamples
    assert win_fraction(worse, better) == 0.0
    assert win_fraction(better, better) == 0.0  # a tie is not a win
    assert win_fraction(better[2:], worse[2:]) is None  # no resample defined


def test_a_detection_only_on_a_difficult_object_counts_nothing():
    truth = [ImageGroundTruth("a", [_box(0, 0), _box(300, 0)], [0, 0], difficult=[True, False])]
    detections = ClassDetections(np.array(["a"], object), [1.0], [_box(0, 0)])
    for metric in METRICS:
        result = evaluate_class(truth, 0, detections, metric=metric)
        assert result.ap == 0.0 and result.n_ignored == 1
        assert bootstrap_ap(result.matches, positives_per_image(truth, 0),
                            np.array([[1], [2]]), metric).tolist() == [0.0, 0.0]


def test_resamples_are_seeded_multinomial_draws():
    a, b = resample_weights(40, 200, seed=3), resample_weights(40, 200, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, resample_weights(40, 200, seed=4))
    assert a.shape == (200, 40) and a.dtype == np.int64 and (a.sum(axis=1) == 40).all()
    # each image is drawn once per resample on average
    assert abs(a.mean() - 1.0) < 0.05
    assert resample_weights(0, 5).shape == (5, 0)
    with pytest.raises(ConfigError):
        resample_weights(3, -1)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="metric"):
        bootstrap_ap(None, np.zeros(2), np.ones((1, 2)), "coco")
    with pytest.raises(ConfigError, match="one column per image"):
        bootstrap_ap(None, np.zeros(2), np.ones((1, 3)))


# --- the rule in choose_test_settings ---------------------------------------------------------

LOOSE = ClassNMS("hard", 0.5)
GRID = (DEFAULT_NMS, LOOSE)


def _pairs_case(n_images: int, touching: set[int]):
    """One class. Images in ``touching`` hold two objects side by side (IoU 0.449), each found
    exactly: hard NMS at 0.3 suppresses the second, at 0.5 keeps it. Every other image holds
    one isolated object found exactly: there the two settings are the same."""
    truth, candidates = [], []
    for image in range(n_images):
        boxes = [_box(0, 0), _box(38, 0)] if image in touching else [_box(0, 0)]
        truth.append(ImageGroundTruth(f"i{image}", boxes, [0] * len(boxes)))
        # distinct scores, the touching neighbours lowest
        scores = [5.0 - image / 100, 1.0 - image / 100][:len(boxes)]
        candidates.append(ImageDetections(f"i{image}", boxes, scores, [0] * len(boxes)))
    return truth, candidates


def _choose(truth, candidates, **kwargs):
    return choose_test_settings(truth, candidates, ["obj"], score_threshold=-1.5,
                                max_per_image=100, grid=GRID, **kwargs)


def test_a_gain_on_one_image_only_keeps_the_default():
    truth, candidates = _pairs_case(30, touching={7})
    result = _choose(truth, candidates)
    choice = result.classes[0]
    default_ap, loose_ap = choice.val_ap
    assert loose_ap > default_ap + 0.05  # a large gain on validation (10/11 -> 1)...
    # ...that appears only in the resamples that draw image 7: 1 - (29/30)^30 = 64 %
    assert 0.5 < choice.win_fraction[1] < 0.8
    assert choice.win_fraction[0] is None
    assert choice.nms == DEFAULT_NMS
    # the old rule takes it
    assert _choose(truth, candidates, confidence=0).classes[0].nms == LOOSE


def test_a_gain_over_many_images_is_taken():
    truth, candidates = _pairs_case(30, touching=set(range(0, 30, 3)))
    choice = _choose(truth, candidates).classes[0]
    assert choice.win_fraction[1] == 1.0 and choice.nms == LOOSE


@pytest.mark.parametrize("seed", range(3))
def test_confidence_zero_is_the_best_validation_ap(seed):
    """confidence 0 (or None) is the rule before the bootstrap: highest validation AP, ties to
    the default, then to the earlier grid entry; the default keeps its sets of resamples."""
    rng = np.random.default_rng(seed)
    truth, candidates = [], []
    for image in range(12):
        n = int(rng.integers(1, 4))
        gt = np.array([_box(60 * k, 0) for k in range(n)])
        labels = rng.integers(0, 2, n)
        truth.append(ImageGroundTruth(f"i{image}", gt, labels))
        m = 12
        centers = rng.integers(0, n, m)
        boxes = gt[centers] + rng.normal(0, 15, (m, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 10)
        candidates.append(ImageDetections(f"i{image}", boxes.astype(np.float32),
                                          rng.normal(size=m).astype(np.float32),
                                          labels[centers]))
    for confidence in (0, 0.0, None):
        result = choose_test_settings(truth, candidates, ["a", "b"], score_threshold=-1.5,
                                      max_per_image=100, confidence=confidence, resamples=50)
        for choice in result.classes:
            expected, best = DEFAULT_NMS, choice.val_ap[0]
            for setting, ap in zip(result.grid, choice.val_ap):
                if ap > best + AP_TOLERANCE:
                    expected, best = setting, ap
            assert choice.nms == expected
    # no resamples at all: the same choice, without win fractions
    bare = choose_test_settings(truth, candidates, ["a", "b"], score_threshold=-1.5,
                                max_per_image=100, confidence=0, resamples=0)
    assert bare.per_class_nms() == result.per_class_nms()
    assert all(w is None for c in bare.classes for w in c.win_fraction)


def test_the_win_fractions_are_stored_and_old_readers_still_read_the_file(tmp_path):
    truth, candidates = _pairs_case(10, touching={1, 4})
    result = _choose(truth, candidates, confidence=0.9, resamples=200, seed=5)
    again = _choose(truth, candidates, confidence=0.9, resamples=200, seed=5)
    assert again.classes[0].win_fraction == result.classes[0].win_fraction  # seeded
    content = settings_file_content(result, scorer="svm", bbox_reg=True, val_split="val",
                                    score_threshold=-1.5, max_per_image=100, metric="11point",
                                    inputs={})
    assert content["bootstrap"] == {"confidence": 0.9, "resamples": 200, "seed": 5}
    stored = content["classes"]["obj"]["val_win_fraction"]
    assert stored == {"hard IoU 0.3": None, "hard IoU 0.5": result.classes[0].win_fraction[1]}
    path = tmp_path / "test_settings.json"
    write_test_settings_file(path, content)
    assert read_test_settings(path).nms == result.per_class_nms()
    # a file written before the bootstrap (no win fractions) still reads
    old = json.loads(path.read_text())
    del old["bootstrap"], old["classes"]["obj"]["val_win_fraction"]
    path.write_text(json.dumps(old))
    assert read_test_settings(path).nms == result.per_class_nms()


def test_bad_confidence_and_resamples_are_refused():
    truth, candidates = _pairs_case(3, touching={0})
    with pytest.raises(ConfigError, match="confidence"):
        _choose(truth, candidates, confidence=1.5)
    with pytest.raises(ConfigError, match="resamples"):
        _choose(truth, candidates, confidence=0.95, resamples=0)
    with pytest.raises(ConfigError, match="resamples"):
        _choose(truth, candidates, confidence=0, resamples=-1)


def test_the_full_grid_on_a_class_without_objects():
    truth = [ImageGroundTruth("a", [_box(0, 0)], [0])]
    candidates = [ImageDetections("a", [_box(0, 0), _box(300, 300)], [1.0, 0.5], [0, 1])]
    result = choose_test_settings(truth, candidates, ["a", "b"], score_threshold=-1.5,
                                  max_per_image=100)
    assert result.classes[1].win_fraction == [None] * len(NMS_GRID)
    assert [c.nms for c in result.classes] == [DEFAULT_NMS, DEFAULT_NMS]


def _content(result):
    return settings_file_content(result, scorer="svm", bbox_reg=True, val_split="val",
                                 score_threshold=-1.5, max_per_image=100, metric="11point",
                                 inputs={})


def test_the_summary_says_why_each_class_has_its_nms():
    from sppdet.stages.tune_detect import choice_lines, settings_table

    one = _choose(*_pairs_case(30, touching={7}))
    kept = choice_lines(_content(one))
    share = 100 * one.classes[0].win_fraction[1]
    assert kept[:2] == [
        "  NMS per class: another setting replaces hard IoU 0.3 only when it beats it in at "
        "least 95%", "  of 1000 bootstrap resamples of the validation images"]
    assert kept[2] == ("    obj: hard IoU 0.3 kept (best other: hard IoU 0.5, val AP 100.0 vs "
                       f"90.9, better in {share:.1f}% of resamples)")
    many = _choose(*_pairs_case(30, touching=set(range(0, 30, 3))))
    assert choice_lines(_content(many))[2] == (
        "    obj: hard IoU 0.5 (val AP 100.0 vs 72.7 hard IoU 0.3, better in 100.0% of "
        "resamples)")  # recall 30/40 at precision 1: 8/11
    loose = choice_lines(_content(_choose(*_pairs_case(30, touching={7}), confidence=0)))
    assert loose[0] == "  NMS per class: the best validation AP (confidence 0)"
    assert loose[1].startswith("    obj: hard IoU 0.5 (val AP 100.0 vs 90.9 hard IoU 0.3, "
                               "better in ")
    tie = _choose(*_pairs_case(5, touching=set()))
    assert choice_lines(_content(tie))[2] == \
        "    obj: hard IoU 0.3 (no setting has a higher val AP)"
    # the table ends with these lines; a file without bootstrap has none
    content = _content(one)
    assert settings_table(content)[-3:] == kept
    del content["bootstrap"]
    assert choice_lines(content) == []
