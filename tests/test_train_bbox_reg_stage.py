"""The train-bbox-reg stage through the CLI, on fabricated proposals and conv5 features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sppdet.training.bbox_regression import BBoxRegressor
from sppdet.training.box_targets import paired_iou
from sppdet.io.records import read_record
from sppdet.ops.boxes import box_iou
from sppdet.cli import cli
from sppdet.data.voc import VOCDataset
from sppdet.features.cache import FeatureCache
from sppdet.features.window_features import WindowFeaturizer

from tests.fake_training_inputs import _proposals_for, make_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("bbox_inputs"), n_images=16, empty=("img003",))


def _train(work: Path, inputs, *args: str):
    return CliRunner().invoke(cli, [
        "-w", str(work), "train-bbox-reg", str(inputs.dataset), "--name", "m", "--proposals",
        str(inputs.proposals), "--features", str(inputs.features), "--device", "cpu", *args])


def test_writes_regressors_and_record_and_skips_a_class_without_windows(tmp_path, inputs):
    result = _train(tmp_path, inputs)
    assert result.exit_code == 0, result.output
    out = tmp_path / "models" / "m" / "bbox_reg.npz"
    with np.load(out) as raw:
        assert raw["coef"].shape == (3, 4, inputs.channels * 50)
        assert raw["trained"].tolist() == [True, True, False]
        assert raw["classes"].tolist() == ["circle", "square", "star"]
        assert float(raw["lambda_"]) == 4000.0 and float(raw["min_iou"]) == 0.5
    model, classes = BBoxRegressor.load(out)
    assert classes == ["circle", "square", "star"]
    assert model.classes_ == ["circle", "square"] and "star" in model.skipped_
    record = read_record(out)
    assert record.stage == "train-bbox-reg"
    assert set(record.inputs) == {"proposals", "features"}
    assert record.params["min_iou"] == 0.5 and record.params["lambda"] == 4000.0
    assert record.params["whiten"] is True and record.params["layer"] == "pool5"
    summary = record.summary["classes"]
    assert summary["star"]["skipped"].startswith("no training window")
    assert summary["circle"]["windows"] > 50
    # training windows include the ground-truth boxes themselves (IoU 1)
    assert summary["circle"]["iou_after"] > summary["circle"]["iou_before"]
    assert "star" in result.output and "keep their boxes" in result.output
    assert not list(out.parent.glob(".bbox_reg.npz.windows.*"))  # the temporary is gone


def test_regressors_reduce_the_localisation_error_of_new_shifted_proposals(tmp_path, inputs):
    result = _train(tmp_path, inputs)
    assert result.exit_code == 0, result.output
    model, classes = BBoxRegressor.load(tmp_path / "models" / "m" / "bbox_reg.npz")
    data = VOCDataset(inputs.dataset, "trainval")
    rng = np.random.default_rng(99)  # proposals the regressors never saw
    before, after = [], []
    with FeatureCache(inputs.features) as cache:
        featurize = WindowFeaturizer(cache, None, "pool5")
        for ann in data:
            boxes = _proposals_for(rng, ann.boxes, 0, 10)
            iou = box_iou(boxes, ann.boxes)
            best = iou.argmax(axis=1)
            keep = iou.max(axis=1) > 0.5
            boxes, gt = boxes[keep], ann.boxes[best[keep]]
            labels = ann.labels[best[keep]]
            features = featurize(ann.image_id, boxes)
            for k in np.unique(labels):
                rows = labels == k
                moved = model.predict(classes[k], features[rows], boxes[rows],
                                      image_size=(ann.width, ann.height))
                before.append(paired_iou(boxes[rows], gt[rows]))
                after.append(paired_iou(moved, gt[rows]))
    before, after = np.concatenate(before), np.concatenate(after)
    assert before.size > 100
    error_before, error_after = np.mean(1 - before), np.mean(1 - after)
    assert error_after < 0.8 * error_before, (error_before, error_after)


def test_options_are_recorded_and_change_the_model(tmp_path, inputs):
    assert _train(tmp_path, inputs).exit_code == 0
    out = tmp_path / "models" / "m" / "bbox_reg.npz"
    first = BBoxRegressor.load(out)[0].coef_["circle"]
    again = _train(tmp_path, inputs)
    assert again.exit_code == 0 and "up to date" in again.output
    result = _train(tmp_path, inputs, "--no-whiten", "--lambda", "100", "--min-iou", "0.6")
    assert result.exit_code == 0, result.output
    record = read_record(out)
    assert (record.params["whiten"], record.params["lambda"], record.params["min_iou"]) == \
        (False, 100.0, 0.6)
    model, _ = BBoxRegressor.load(out)
    assert not model.whiten and not np.allclose(model.coef_["circle"], first)


def test_nan_in_the_feature_cache_names_the_image(tmp_path):
    bad = make_inputs(tmp_path / "bad", n_images=6, nan_image="img002")
    result = _train(tmp_path / "work", bad)
    assert result.exit_code == 1 and "img002" in result.output


def test_help_shows_the_defaults():
    result = CliRunner().invoke(cli, ["train-bbox-reg", "--help"])
    assert result.exit_code == 0
    for text in ("[default: 0.5", "[default: 4000.0", "[default: whiten]",
                 "[default: trainval]", "[default: ss-fast]"):
        assert text in " ".join(result.output.split()), text
