"""The per-class scorer: softmax log-odds, mixed scoring of one image's windows (checked
against scores computed by hand from the head and the SVMs), per-class score thresholds,
the choice on validation (``choose_test_settings`` with softmax candidates) and the stored
file, old files included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import ClassNMS, NMSSettings
from sppdet.detector.model import (DEFAULT_SCORE_THRESHOLDS, DetectModel, DetectTimes,
                                   class_score_thresholds, detect_windows,
                                   detect_windows_with_softmax, softmax_log_odds, suppress)
from sppdet.detector.tuning import (DEFAULT_NMS, choose_test_settings, read_test_settings,
                                    settings_file_content, settings_mismatch,
                                    write_test_settings_file)
from sppdet.evaluation.records import ClassDetections
from sppdet.evaluation.voc_ap import ImageGroundTruth, evaluate_class
from sppdet.features.fc_head import FcHead
from sppdet.stages.tune_detect import settings_table
from sppdet.training.svm.weights import SVMWeights

SOFTMAX_DEFAULT = float(np.log(1e-3) - np.log1p(-1e-3))  # about -6.9


# --- the log-odds --------------------------------------------------------------------------


def test_log_odds_is_the_logit_clipped_and_monotone():
    p = np.array([0.0, 1e-9, 1e-3, 0.25, 0.5, 0.75, 1.0 - 1e-9, 1.0], np.float32)
    got = softmax_log_odds(p)
    assert got.dtype == np.float32
    assert got[4] == 0.0
    assert got[2] == pytest.approx(SOFTMAX_DEFAULT, abs=1e-5)
    assert got[3] == pytest.approx(np.log(0.25 / 0.75), abs=1e-6)
    # clipped to [1e-7, 1 - 1e-7]: finite, the ends equal and opposite
    edge = np.log(1e-7) - np.log1p(-1e-7)
    assert got[0] == got[1] == pytest.approx(edge) and got[-1] == pytest.approx(-edge)
    rng = np.random.default_rng(0)
    q = np.sort(rng.uniform(1e-6, 1 - 1e-6, 1000))
    assert np.all(np.diff(softmax_log_odds(q).astype(np.float64)) >= 0)


def test_a_class_ap_is_the_same_on_probabilities_and_log_odds():
    rng = np.random.default_rng(1)
    truth, ids, boxes, probs = [], [], [], []
    for i in range(20):
        truth.append(ImageGroundTruth(f"i{i}", [[0, 0, 50, 50], [100, 0, 150, 50]], [0, 0]))
        for k in range(6):  # hits and misses, some duplicates
            x = float(rng.choice([0, 100, 300, 2]))
            ids.append(f"i{i}")
            boxes.append([x, 0, x + 50, 50])
            probs.append(float(rng.uniform(0.001, 0.999)))
    probs = np.array(probs, np.float32)
    on_p = evaluate_class(truth, 0, ClassDetections(ids, probs, boxes))
    on_odds = evaluate_class(truth, 0, ClassDetections(ids, softmax_log_odds(probs), boxes))
    assert 0.1 < on_p.ap < 0.99
    assert on_odds.ap == on_p.ap
    np.testing.assert_array_equal(on_odds.matches.order, on_p.matches.order)


# --- mixed scoring of one image's windows --------------------------------------------------

BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [12, 0, 22, 8]],
                 np.float32)


def _mixed_model(layer: str) -> tuple[DetectModel, torch.Tensor]:
    """Classes a, b, c; a head with 6 inputs and 5 hidden units; SVMs on ``layer``."""
    head = FcHead(6, 3, hidden=5, seed=3).eval()
    with torch.no_grad():  # larger weights than the initialisation: spread probabilities
        for fc in (head.fc6, head.fc7, head.fc8):
            fc.weight.mul_(300.0)
    dim = 6 if layer == "pool5" else 5
    rng = np.random.default_rng(2)
    svm = SVMWeights(classes=["a", "b", "c"], weights=rng.normal(size=(3, dim)).astype(
        np.float32), bias=np.array([0.5, -0.2, 0.1], np.float32),
        trained=np.array([True, True, True]), feature_scale=0.5, layer=layer)
    model = DetectModel(name="m", classes=["a", "b", "c"], head=head, svm=svm, regressor=None,
                        backbone={"name": "fake"}, inputs={}, scales=[64])
    pooled = torch.from_numpy(np.random.default_rng(4).normal(size=(4, 6)).astype(np.float32))
    return model, pooled


def _by_hand(model: DetectModel, pooled: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """SVM scores and softmax probabilities ``[N, K]``, the slow obvious way: row by row,
    float64, from the head's weights."""
    w = {name: (getattr(model.head, name).weight.detach().numpy().astype(np.float64),
                getattr(model.head, name).bias.detach().numpy().astype(np.float64))
         for name in ("fc6", "fc7", "fc8")}
    svm, probs = [], []
    for x in pooled.numpy().astype(np.float64):
        fc6 = np.maximum(w["fc6"][0] @ x + w["fc6"][1], 0)
        fc7 = np.maximum(w["fc7"][0] @ fc6 + w["fc7"][1], 0)
        logits = w["fc8"][0] @ fc7 + w["fc8"][1]
        e = np.exp(logits - logits.max())
        probs.append((e / e.sum())[1:])
        features = {"pool5": x, "fc6": fc6, "fc7": fc7}[model.svm.layer]
        svm.append(model.svm.weights.astype(np.float64) @ (features * model.svm.feature_scale)
                   + model.svm.bias)
    return np.array(svm), np.array(probs)


def _scores(candidates: ImageDetections) -> dict[tuple[int, int], float]:
    """(label, window row) -> score."""
    rows = {tuple(b): i for i, b in enumerate(BOXES.tolist())}
    return {(int(label), rows[tuple(box)]): float(score) for label, score, box in
            zip(candidates.labels, candidates.scores, candidates.boxes.tolist())}


@pytest.mark.parametrize("layer", ["fc7", "pool5"])
def test_mixed_scores_are_svm_scores_and_softmax_log_odds_computed_by_hand(layer):
    model, pooled = _mixed_model(layer)
    scorers = ("svm", "softmax", "svm")
    nms = NMSSettings(iou_threshold=1.0, score_threshold=None, max_per_image=None)
    _, candidates = detect_windows(model, "img", pooled, BOXES, (40, 40), scorer="svm",
                                   nms=nms, times=DetectTimes(), class_scorers=scorers)
    svm, probs = _by_hand(model, pooled)
    got = _scores(candidates)
    assert len(got) == 12  # no threshold, nothing clipped away
    for row in range(4):
        for label in (0, 2):
            assert got[(label, row)] == pytest.approx(svm[row, label], rel=1e-5, abs=1e-5)
        p = np.clip(probs[row, 1], 1e-7, 1 - 1e-7)
        assert got[(1, row)] == pytest.approx(np.log(p) - np.log1p(-p), rel=1e-4, abs=1e-4)
    # the scores span units: the log-odds go beyond any probability
    assert any(abs(got[(1, row)]) > 1.0 for row in range(4))
    # one scorer for every class is what it was: probabilities, SVM scores
    _, plain = detect_windows(model, "img", pooled, BOXES, (40, 40), scorer="softmax",
                              nms=nms, times=DetectTimes())
    for (label, row), score in _scores(plain).items():
        assert score == pytest.approx(probs[row, label], rel=1e-4, abs=1e-6)


def test_mixed_scoring_without_svm_classes_needs_no_svms():
    model, pooled = _mixed_model("fc7")
    _, probs = _by_hand(model, pooled)
    model.svm = None
    nms = NMSSettings(iou_threshold=1.0, score_threshold=None, max_per_image=None)
    _, candidates = detect_windows(model, "img", pooled, BOXES, (40, 40), scorer="svm",
                                   nms=nms, times=DetectTimes(),
                                   class_scorers=("softmax",) * 3)
    assert len(candidates) == 12
    for (label, row), score in _scores(candidates).items():
        p = np.clip(probs[row, label], 1e-7, 1 - 1e-7)
        assert score == pytest.approx(np.log(p) - np.log1p(-p), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("layer", ["fc7", "pool5"])
def test_one_pass_gives_the_svm_and_the_softmax_candidates_of_two(layer):
    """``detect_windows_with_softmax`` (tune-detect's pass): the SVM detector's detections
    and every class's softmax log-odds candidates, as two separate runs give them (here
    with windows 0 and 1 sharing a pooled row)."""
    model, pooled = _mixed_model(layer)
    shared, inverse = pooled[[0, 2, 3]], np.array([0, 0, 1, 2])
    nms = NMSSettings(iou_threshold=0.3, score_threshold=-1.5, max_per_image=None)
    softmax_nms = NMSSettings(class_score_thresholds=class_score_thresholds(
        ("softmax",) * 3, None))
    final, candidates, softmax = detect_windows_with_softmax(
        model, "img", shared, BOXES, (40, 40), nms=nms, softmax_nms=softmax_nms,
        times=DetectTimes(), inverse=inverse)
    want_final, want = detect_windows(model, "img", shared, BOXES, (40, 40), scorer="svm",
                                      nms=nms, times=DetectTimes(), inverse=inverse)
    _, want_softmax = detect_windows(model, "img", shared, BOXES, (40, 40), scorer="svm",
                                     nms=softmax_nms, times=DetectTimes(), inverse=inverse,
                                     class_scorers=("softmax",) * 3)
    for got, expected in ((final, want_final), (candidates, want), (softmax, want_softmax)):
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got.labels, expected.labels)
    assert len(softmax) > 0 and len(candidates) > 0


def test_per_class_score_thresholds():
    assert class_score_thresholds(("svm", "softmax"), None) == pytest.approx(
        (DEFAULT_SCORE_THRESHOLDS["svm"], SOFTMAX_DEFAULT))
    # given: as it is, for every class, in each class's units
    assert class_score_thresholds(("svm", "softmax"), 0.25) == (0.25, 0.25)
    model, pooled = _mixed_model("fc7")
    scorers = ("svm", "softmax", "svm")
    everything = NMSSettings(iou_threshold=1.0, score_threshold=None, max_per_image=None)
    _, all_windows = detect_windows(model, "img", pooled, BOXES, (40, 40), scorer="svm",
                                    nms=everything, times=DetectTimes(), class_scorers=scorers)
    scores = _scores(all_windows)
    # each class's threshold at its own median: a shared one would keep other windows
    cuts = tuple(float(np.median([s for (label, _), s in scores.items() if label == k]))
                 for k in range(3))
    nms = NMSSettings(iou_threshold=1.0, score_threshold=None, max_per_image=None,
                      class_score_thresholds=cuts)
    assert nms.score_threshold_for(1) == cuts[1]
    _, candidates = detect_windows(model, "img", pooled, BOXES, (40, 40), scorer="svm",
                                   nms=nms, times=DetectTimes(), class_scorers=scorers)
    assert _scores(candidates) == {key: s for key, s in scores.items() if s > cuts[key[0]]}
    # stored in the detections record (only when per class: older records stay current)
    params = nms.to_params()
    assert params["per_class_score_threshold"] == list(cuts)
    assert NMSSettings.from_params({"nms": params}, None) == nms
    assert "per_class_score_threshold" not in everything.to_params()


def test_soft_nms_decays_each_class_towards_its_own_threshold():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [1, 0, 11, 10]]
    candidates = ImageDetections("img", boxes, [3.0, 2.0, 3.0, 2.0], [0, 0, 1, 1])
    setting = ClassNMS("linear", 0.3)
    nms = NMSSettings(score_threshold=None, max_per_image=None, per_class=(setting, setting),
                      class_score_thresholds=(-1.5, 1.9))
    kept = suppress(candidates, nms)
    # IoU 90/110: the second window's margin above its class's threshold is multiplied by
    # 1 - IoU = 2/11
    decayed = {int(label): float(score) for label, score, box in
               zip(kept.labels, kept.scores, kept.boxes.tolist()) if box[0] == 1}
    assert decayed[0] == pytest.approx(-1.5 + 3.5 * 2 / 11)
    assert decayed[1] == pytest.approx(1.9 + 0.1 * 2 / 11)


# --- the choice on validation --------------------------------------------------------------


def _box(x: float) -> list[float]:
    return [x, 0.0, x + 40.0, 40.0]


def _choice_case(n: int = 30):
    """Class 0 ("consistent"): in every image the SVMs score a false positive above the true
    detection, the softmax the other way round: softmax wins in every resample. Class 1
    ("one image"): both scorers find every object, and only in image 0 the SVMs rank a false
    positive first: softmax wins only in the resamples that draw image 0."""
    truth, svm, soft = [], [], []
    for i in range(n):
        truth.append(ImageGroundTruth(f"i{i}", [_box(0), _box(100)], [0, 1]))
        boxes = [_box(0), _box(300), _box(100)]
        svm_scores = [0.1 + 0.01 * i, 1.5 + 0.01 * i, 0.5 + 0.01 * i]
        soft_scores = [3.0 + 0.01 * i, -5.0, 2.0 + 0.01 * i]
        labels = [0, 0, 1]
        if i == 0:
            boxes.append(_box(500))
            svm_scores.append(5.0)  # above every true detection of class 1
            soft_scores.append(-6.0)
            labels.append(1)
        svm.append(ImageDetections(f"i{i}", boxes, svm_scores, labels))
        soft.append(ImageDetections(f"i{i}", boxes, soft_scores, labels))
    return truth, svm, soft


def test_softmax_is_chosen_where_it_wins_consistently_and_not_on_one_image():
    truth, svm, soft = _choice_case()
    result = choose_test_settings(truth, svm, ["consistent", "one_image"], score_threshold=-1.5,
                                  max_per_image=100, softmax_candidates=soft,
                                  softmax_score_threshold=SOFTMAX_DEFAULT)
    consistent, one_image = result.classes
    assert (consistent.scorer, one_image.scorer) == ("softmax", "svm")
    assert consistent.softmax_win_fraction == 1.0
    assert consistent.scorer_val_ap["softmax"] == pytest.approx(1.0)
    assert consistent.scorer_val_ap["svm"] < 0.6
    # softmax is better on the split, but only in the resamples with image 0 (1 - 1/e)
    assert one_image.scorer_val_ap["softmax"] > one_image.scorer_val_ap["svm"]
    assert 0.5 < one_image.softmax_win_fraction < 0.8
    # the NMS choice and the operating points read each class's chosen scorer
    assert result.chosen_ap[0] == pytest.approx(1.0)
    assert consistent.operating_point.score == pytest.approx(3.0)  # log-odds units
    assert one_image.operating_point.score < 1.0  # SVM units
    content = settings_file_content(result, scorer="svm", bbox_reg=True, val_split="val",
                                    score_threshold=-1.5, max_per_image=100,
                                    metric="11point", inputs={})
    assert content["classes"]["consistent"]["scorer"] == "softmax"
    assert content["classes"]["one_image"]["softmax_win_fraction"] == \
        one_image.softmax_win_fraction
    assert content["classes"]["one_image"]["val_ap_scorer"] == one_image.scorer_val_ap
    table = "\n".join(settings_table(content))
    assert "log-odds >= 3 (1.00 / 1.00)" in table
    assert "consistent: softmax (val AP softmax 100.0 vs svm" in table
    assert "better in 100.0% of resamples" in table
    assert "one_image: svm (val AP softmax" in table
    # without the guard, the better split AP decides
    bare = choose_test_settings(truth, svm, ["consistent", "one_image"], score_threshold=-1.5,
                                max_per_image=100, softmax_candidates=soft,
                                softmax_score_threshold=SOFTMAX_DEFAULT, confidence=0,
                                resamples=0)
    assert bare.class_scorers() == ("softmax", "softmax")
    # and without softmax candidates every class keeps the SVMs
    plain = choose_test_settings(truth, svm, ["consistent", "one_image"], score_threshold=-1.5,
                                 max_per_image=100)
    assert plain.class_scorers() == ("svm", "svm")
    assert "val_ap_scorer" not in plain.to_dict()["classes"]["consistent"]


def _stored(tmp_path, result, scorer="svm"):
    path = tmp_path / "test_settings.json"
    write_test_settings_file(path, settings_file_content(
        result, scorer=scorer, bbox_reg=True, val_split="val", score_threshold=-1.5,
        max_per_image=100, metric="11point", inputs={}))
    return path


def test_the_stored_scorers_and_their_thresholds(tmp_path):
    truth, svm, soft = _choice_case()
    result = choose_test_settings(truth, svm, ["consistent", "one_image"], score_threshold=-1.5,
                                  max_per_image=100, softmax_candidates=soft,
                                  softmax_score_threshold=SOFTMAX_DEFAULT)
    stored = read_test_settings(_stored(tmp_path, result))
    assert stored.class_scorers == ("softmax", "svm")
    assert stored.mixed_scorers() == ("softmax", "svm")
    nms = stored.nms_settings(None, 100)
    assert nms.class_score_thresholds == pytest.approx((SOFTMAX_DEFAULT, -1.5))
    assert stored.nms_settings(0.5, 100).class_score_thresholds == (0.5, 0.5)
    # the default scorer takes them; an explicit one does not
    # (this file has no record: the check gets past the scorers to the inputs)
    assert "record cannot be read" in settings_mismatch(
        stored, {}, ["consistent", "one_image"], scorer=None, bbox_reg=True)
    reason = settings_mismatch(stored, {}, ["consistent", "one_image"], scorer="svm",
                               bbox_reg=True)
    assert "consistent with the softmax" in reason
    assert "softmax scores" in settings_mismatch(stored, {}, ["consistent", "one_image"],
                                                 scorer="softmax", bbox_reg=True)


def test_an_old_settings_file_without_scorers_reads(tmp_path):
    truth, svm, _ = _choice_case()
    result = choose_test_settings(truth, svm, ["consistent", "one_image"], score_threshold=-1.5,
                                  max_per_image=100)
    for scorer in ("svm", "softmax"):
        path = _stored(tmp_path, result, scorer=scorer)
        content = json.loads(path.read_text())
        for c in content["classes"].values():
            del c["scorer"]  # as written before the per-class choice
        path.write_text(json.dumps(content))
        stored = read_test_settings(path)
        assert stored.class_scorers == (scorer, scorer)
        assert stored.mixed_scorers() is None
        assert stored.nms_settings(None, 100).class_score_thresholds is None
        assert stored.nms == result.per_class_nms()
