"""The detector at test time (sppdet.detector.model): scoring one image's windows into
detections, traced by hand, and loading a model's parts together."""

import numpy as np
import pytest
import torch

from sppdet.detector.detections_io import NMSSettings
from sppdet.detector.model import (
    DEFAULT_SCORE_THRESHOLDS,
    DetectModel,
    DetectTimes,
    detect_windows,
    load_model,
    nms_settings,
)
from sppdet.errors import ArtifactMissingError, ConfigError, DataError
from sppdet.features.fc_head import FcHead
from sppdet.io.records import Record, input_ref, write_artifact
from sppdet.training.svm.weights import SVMWeights

# Windows of one 32 x 32 image: 1 overlaps 0 (IoU 81/121 = 0.67), 2 is apart, 3 lies outside
# the image (clipped to nothing).
BOXES = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]],
                 np.float32)
# pool5 "features" with the SVMs' identity weights: class a scores column 0, class b column 1.
POOLED = torch.tensor([[2.0, -3.0], [1.0, 0.5], [0.5, 4.0], [3.0, 3.0]])


def _svm_model(trained=(True, True), regressor=None):
    svm = SVMWeights(classes=["a", "b"], weights=np.eye(2, dtype=np.float32),
                     bias=np.zeros(2, np.float32), trained=np.array(trained),
                     feature_scale=1.0, layer="pool5")
    return DetectModel(name="m", classes=["a", "b"], head=FcHead(2, 2, hidden=4, seed=0),
                       svm=svm, regressor=regressor, backbone={"name": "fake"}, inputs={},
                       scales=[64])


def _detect(model, nms, scorer="svm"):
    times = DetectTimes()
    final, candidates = detect_windows(model, "img", POOLED, BOXES, (32, 32), scorer=scorer,
                                       nms=nms, times=times)
    return final, candidates, times


def _rows(detections):
    return sorted(zip(detections.labels.tolist(), detections.scores.tolist(),
                      detections.boxes.tolist()))


def test_svm_scores_threshold_clipping_and_nms_by_hand():
    final, candidates, times = _detect(_svm_model(), NMSSettings(0.3, 0.0, None))
    # a: rows 0 (2), 1 (1), 2 (0.5) pass > 0; row 3 (3) is clipped away. b: rows 1, 2.
    assert _rows(candidates) == [
        (0, 0.5, [20, 20, 30, 30]), (0, 1.0, [1, 1, 11, 11]), (0, 2.0, [0, 0, 10, 10]),
        (1, 0.5, [1, 1, 11, 11]), (1, 4.0, [20, 20, 30, 30])]
    # NMS per class: a's row 1 overlaps row 0 (IoU 0.67 > 0.3); b's two windows are apart.
    assert _rows(final) == [(0, 0.5, [20, 20, 30, 30]), (0, 2.0, [0, 0, 10, 10]),
                            (1, 0.5, [1, 1, 11, 11]), (1, 4.0, [20, 20, 30, 30])]
    assert final.image_id == "img" and times.fc >= 0 and times.nms > 0


def test_cap_untrained_class_and_nothing_above_the_threshold():
    final, _, _ = _detect(_svm_model(), NMSSettings(0.3, 0.0, 2))
    assert _rows(final) == [(0, 2.0, [0, 0, 10, 10]), (1, 4.0, [20, 20, 30, 30])]  # top 2
    final, candidates, _ = _detect(_svm_model(trained=(True, False)), NMSSettings(0.3, None, None))
    assert set(candidates.labels.tolist()) == {0}  # an untrained class gives no detections
    final, candidates, _ = _detect(_svm_model(), NMSSettings(0.3, 10.0, None))
    assert len(final) == 0 and len(candidates) == 0 and final.boxes.shape == (0, 4)


class ShiftRegressor:
    """Moves every box of class a right by 1 pixel and records what it was given."""

    def __init__(self):
        self.calls = []

    def predict(self, class_name, features, boxes, image_size):
        self.calls.append((class_name, features.copy(), boxes.copy(), image_size))
        return boxes + np.array([1, 0, 1, 0], np.float32) if class_name == "a" else boxes


def test_box_regression_sees_only_the_windows_above_the_threshold():
    regressor = ShiftRegressor()
    _, candidates, _ = _detect(_svm_model(regressor=regressor), NMSSettings(0.3, 0.0, None))
    (name_a, feats_a, boxes_a, size_a), (name_b, feats_b, boxes_b, _) = regressor.calls
    assert (name_a, name_b, size_a) == ("a", "b", (32, 32))
    np.testing.assert_array_equal(feats_a, POOLED.numpy()[[0, 1, 2, 3]])
    np.testing.assert_array_equal(boxes_b, BOXES[[1, 2, 3]])
    np.testing.assert_array_equal(feats_b, POOLED.numpy()[[1, 2, 3]])
    assert [1.0, 0.0, 11.0, 10.0] in candidates.boxes[candidates.labels == 0].tolist()


def test_softmax_scores_are_fc8_probabilities_without_background():
    model = _svm_model()
    model.svm = None
    model.head.eval()
    final, candidates, _ = _detect(model, NMSSettings(1.0, None, None), scorer="softmax")
    expected = torch.softmax(model.head(POOLED), dim=1)[:3, 1:].detach().numpy()  # 3: clipped
    got = {(int(label), tuple(box)): score for label, score, box in
           zip(candidates.labels, candidates.scores, candidates.boxes.tolist())}
    for row in range(3):
        for label in range(2):
            assert got[(label, tuple(BOXES[row].tolist()))] == pytest.approx(expected[row, label])
    assert len(final) == len(candidates) == 6  # IoU threshold 1: nothing is suppressed
    with pytest.raises(ConfigError, match="svm scorer needs the model's SVMs"):
        _detect(model, NMSSettings(), scorer="svm")


def test_distinct_footprints_are_scored_once_and_give_the_same_detections():
    """``inverse``: pooled rows per distinct footprint, windows mapped to them. Scoring and
    regressing the rows once and expanding gives what the expanded rows give, window by window
    (here windows 0 and 1 share row 0; the regressor reads each window's own row)."""
    shared = torch.stack([POOLED[0], POOLED[2], POOLED[3]])
    inverse = np.array([0, 0, 1, 2])
    expanded = shared[torch.from_numpy(inverse)]
    deltas = np.array([[0.1, 0.0, 0.0, 0.0], [0.0, 0.2, 0.0, 0.0]], np.float32)

    class Regressor:
        def predict(self, class_name, features, boxes, image_size):
            # moves each box by its feature's first value, so a wrong row shows in the boxes
            shift = np.asarray(features)[:, :1] * deltas[0 if class_name == "a" else 1, 0]
            return np.asarray(boxes) + shift

    model = _svm_model(regressor=Regressor())
    nms = NMSSettings(0.3, 0.0, None)
    every, once = DetectTimes(), DetectTimes()
    want = detect_windows(model, "img", expanded, BOXES, (32, 32), scorer="svm", nms=nms,
                          times=every)
    got = detect_windows(model, "img", shared, BOXES, (32, 32), scorer="svm", nms=nms,
                         times=once, inverse=inverse)
    for a, b in zip(want, got):
        assert _rows(a) == _rows(b)
    assert (every.windows, every.distinct, once.windows, once.distinct) == (4, 4, 4, 3)
    assert "windows" not in once.per_image(1) and "fc" in once.per_image(1)  # seconds only
    assert len(got[1]) > 0  # candidates exist, so the comparison is not of two empty sets


def test_nms_settings_defaults_per_scorer():
    assert nms_settings("svm", 0.3, None, 100).score_threshold == DEFAULT_SCORE_THRESHOLDS["svm"]
    assert nms_settings("softmax", 0.3, None, None).score_threshold == 1e-3
    assert nms_settings("svm", 0.5, 0.2, 7) == NMSSettings(0.5, 0.2, 7)
    with pytest.raises(ConfigError, match="scorer must be one of"):
        nms_settings("max", 0.3, None, 100)


# ----------------------------------------------------------------------------- load_model


def _write_model(model_dir, classes=("a", "b"), svm_classes=("a", "b"), layer="fc7"):
    fc = model_dir / "fc.pt"
    params = {"classes": list(classes), "backbone": {"name": "fake"}, "scales": [64, 96]}
    with write_artifact(fc, Record("finetune", params)) as tmp:
        FcHead(8, len(classes), hidden=4, seed=0).save(tmp)
    svm = SVMWeights(classes=list(svm_classes), weights=np.ones((len(svm_classes), 4), np.float32),
                     bias=np.zeros(len(svm_classes), np.float32),
                     trained=np.ones(len(svm_classes), bool), feature_scale=2.0, layer=layer)
    with write_artifact(model_dir / "svm.npz",
                        Record("train-svm", {}, inputs={"fc": input_ref(fc)})) as tmp:
        svm.save(tmp)
    return fc


def test_load_model_reads_the_parts_and_their_records(tmp_path):
    _write_model(tmp_path)
    model = load_model(tmp_path, scorer="svm", use_bbox_reg=False)
    assert model.name == tmp_path.name and model.classes == ["a", "b"]
    assert model.scales == [64, 96] and model.backbone == {"name": "fake"}
    assert model.svm.feature_scale == 2.0 and model.regressor is None
    assert set(model.inputs) == {"fc", "svm"}
    softmax = load_model(tmp_path, scorer="softmax", use_bbox_reg=False)
    assert softmax.svm is None and set(softmax.inputs) == {"fc"}


def test_load_model_refuses_parts_that_do_not_belong_together(tmp_path):
    _write_model(tmp_path, svm_classes=("a", "c"))
    with pytest.raises(DataError, match=r"trained for classes \['a', 'c'\].*sppdet train-svm"):
        load_model(tmp_path, scorer="svm", use_bbox_reg=False)
    with pytest.raises(ArtifactMissingError, match="sppdet train-bbox-reg"):
        load_model(tmp_path, scorer="softmax", use_bbox_reg=True)
    other = tmp_path / "other"
    fc = _write_model(other)
    with write_artifact(fc, Record("finetune", {"classes": ["a", "b"], "seed": 1})) as tmp:
        FcHead(8, 2, hidden=4, seed=1).save(tmp)  # fc layers retrained after the SVMs
    with pytest.raises(DataError, match="other fc layers"):
        load_model(other, scorer="svm", use_bbox_reg=False)
    (other / "svm.npz").unlink()
    with pytest.raises(ArtifactMissingError, match="sppdet train-svm"):
        load_model(other, scorer="svm", use_bbox_reg=False)


def test_soft_nms_decays_the_overlapping_window_instead_of_removing_it():
    import math

    final, candidates, _ = _detect(_svm_model(),
                                   NMSSettings(0.3, 0.0, None, method="gaussian", sigma=0.5))
    # a: row 1 (score 1) overlaps row 0 (IoU 81/119) -> 1 * exp(-IoU^2 / 0.5); b unchanged.
    iou = 81 / 119
    decayed = 1.0 * math.exp(-iou * iou / 0.5)
    rows = _rows(final)
    assert [(label, box) for label, _, box in rows] == [
        (0, [1, 1, 11, 11]), (0, [20, 20, 30, 30]), (0, [0, 0, 10, 10]),
        (1, [1, 1, 11, 11]), (1, [20, 20, 30, 30])]
    assert [score for _, score, _ in rows] == pytest.approx([decayed, 0.5, 2.0, 0.5, 4.0])
    assert len(candidates) == 5  # the candidates keep their own scores
    assert nms_settings("svm", 0.3, None, 100, "linear", 0.7) == NMSSettings(
        0.3, -1.5, 100, method="linear", sigma=0.7)
