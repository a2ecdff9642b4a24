"""The tune-detect stage: the selection model, the stored test settings and their record,
detect picking them up (and options overriding them), staleness, and a missing val split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.detector.detections_io import ClassNMS, DetectionsReader
from sppdet.detector.model import suppress
from sppdet.detector.tuning import TEST_SETTINGS_FILE, read_test_settings
from sppdet.io.records import read_record
from sppdet.stages import detect, finetune, train_bbox_reg, train_svm, tune_detect
from sppdet.training.finetune.config import FinetuneConfig
from tests.fake_artifacts import make_fake_pipeline_inputs

SMALL = FinetuneConfig(iterations=20, hidden=32, lr=1e-2, images_per_chunk=8,
                       iterations_per_chunk=4, log_every=5, val_every=10, val_windows=128)


def _train(root: Path, *, val: bool = True):
    """A small model as the pipeline makes one: fc layers on train (val held out), SVMs and box
    regressors on trainval; every input from the trainval artifacts."""
    fake = make_fake_pipeline_inputs(root / "data", splits={"train": 12, "val": 6, "test": 4},
                                     flip=False)
    models = root / "work" / "models" / "m"
    props, feats = fake.proposals["trainval"], fake.features["trainval"]
    finetune.run(fake.dataset, models / "fc.pt", train_split="train", train_proposals=props,
                 train_features=feats, val_split="val" if val else None,
                 val_proposals=props if val else None, val_features=feats if val else None,
                 config=SMALL, device="cpu")
    if val:
        train_svm.run(fake.dataset, "trainval", models / "svm.npz", proposals=props,
                      features=feats, fc=models / "fc.pt", device="cpu")
        train_bbox_reg.run(fake.dataset, "trainval", models / "bbox_reg.npz", proposals=props,
                           features=feats, device="cpu")
    return fake, models


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    fake, models = _train(tmp_path_factory.mktemp("tune"))
    return fake, models, tune_detect.run(fake.dataset, models, device="cpu")


def _detect(fake, models, out, **kwargs):
    return detect.run(fake.dataset, "test", out, model_dir=models,
                      proposals=fake.proposals["test"], features=fake.features["test"],
                      device="cpu", **kwargs)


def test_the_choice_is_made_on_val_with_a_model_that_never_saw_it(tuned):
    fake, models, summary = tuned
    assert summary.skipped is None and not summary.up_to_date
    out = models / TEST_SETTINGS_FILE
    record = read_record(out)
    assert set(record.inputs) == {"fc", "svm", "bbox_reg", "selection_svm",
                                  "selection_bbox_reg", "val_detections"}
    assert record.params["choose_scorer"] is True
    selection = models / tune_detect.SELECTION_DIR
    # the selection SVMs: the model's settings, on the fine-tuning split only
    svm, chosen_svm = read_record(models / "svm.npz"), read_record(selection / "svm.npz")
    assert chosen_svm.params["data"]["split"] == "train"
    assert chosen_svm.params["svm"] == svm.params["svm"]
    assert read_record(selection / "bbox_reg.npz").params["data"]["split"] == "train"
    assert read_record(selection / "val.h5").params["data"]["split"] == "val"
    content = json.loads(out.read_text())
    assert list(content["classes"]) == list(fake.classes)
    assert (content["val_split"], content["scorer"], content["bbox_reg"]) == ("val", "svm", True)
    for name, c in content["classes"].items():
        assert len(c["val_ap"]) == len(content["grid"])
        assert list(c["val_win_fraction"]) == list(c["val_ap"])
    assert content["bootstrap"] == {"confidence": 0.95, "resamples": 1000, "seed": 0}
    assert content["inputs"]["svm"] == record.inputs["svm"].digest
    text = summary.to_text()
    assert "chosen on split 'val'" in text and "mean" in text
    assert "only when it beats it in at least 95%\n  of 1000 bootstrap resamples" in text
    for name in fake.classes:
        assert name in text
    # nothing was made for the test split
    assert not list(selection.glob("test*"))


def test_a_rerun_is_up_to_date(tuned):
    fake, models, _ = tuned
    again = tune_detect.run(fake.dataset, models, device="cpu")
    assert again.up_to_date and "Test settings are up to date" in again.to_text()
    assert "chosen on split 'val'" in again.to_text()  # the table, read back from the file


def _with_settings(models: Path, change):
    """Edit the stored choice (the record does not hash the file's content); returns the
    original text to put back."""
    path = models / TEST_SETTINGS_FILE
    original = path.read_text()
    content = json.loads(original)
    change(content)
    path.write_text(json.dumps(content))
    return original


def test_detect_uses_the_stored_settings_and_options_override_them(tuned, tmp_path):
    fake, models, _ = tuned
    first = fake.classes[0]

    def gaussian_first(content):
        content["classes"][first]["nms"] = ClassNMS("gaussian", sigma=0.3).to_params()

    original = _with_settings(models, gaussian_first)
    try:
        stored = read_test_settings(models / TEST_SETTINGS_FILE)
        summary = _detect(fake, models, tmp_path / "tuned.h5")
        assert "chosen on split 'val'" in summary.nms
        assert f"{first}: gaussian sigma 0.3" in summary.to_text()
        with DetectionsReader(tmp_path / "tuned.h5") as reader:
            assert reader.nms.per_class == stored.nms
            for image_id in reader.image_ids():
                expected = suppress(reader.candidates(image_id), reader.nms)
                got = reader.detections(image_id)
                np.testing.assert_array_equal(got.boxes, expected.boxes)
                np.testing.assert_array_equal(got.scores, expected.scores)
        given = _detect(fake, models, tmp_path / "given.h5", nms_method="hard")
        assert given.nms == "hard IoU 0.3 for every class (given)"
        assert "per_class" not in read_record(tmp_path / "given.h5").params["nms"]
        ignored = _detect(fake, models, tmp_path / "off.h5", use_test_settings=False)
        assert ignored.nms == "hard IoU 0.3 for every class (default)"
        # the command line: an NMS option replaces the stored choice
        work = models.parent.parent
        result = CliRunner().invoke(cli, [
            "-w", str(work), "detect", str(fake.dataset), "--name", "m", "--out",
            str(tmp_path / "cli.h5"), "--proposals", str(fake.proposals["test"]),
            "--features", str(fake.features["test"]), "--device", "cpu",
            "--iou-threshold", "0.5"])
        assert result.exit_code == 0, result.output
        assert "NMS: hard IoU 0.5 for every class (given)" in result.output
    finally:
        (models / TEST_SETTINGS_FILE).write_text(original)


def test_settings_for_another_detector_are_not_used(tuned, tmp_path):
    fake, models, _ = tuned
    summary = _detect(fake, models, tmp_path / "noreg.h5", use_bbox_reg=False)
    assert "is not used: they were chosen with box regression" in summary.nms
    assert "per_class" not in read_record(tmp_path / "noreg.h5").params["nms"]


def test_retraining_the_model_makes_the_settings_stale_and_reruns_the_tuning(tmp_path):
    fake, models = _train(tmp_path)
    first = tune_detect.run(fake.dataset, models, device="cpu")
    assert not first.up_to_date
    props, feats = fake.proposals["trainval"], fake.features["trainval"]
    train_svm.run(fake.dataset, "trainval", models / "svm.npz", proposals=props,
                  features=feats, fc=models / "fc.pt", device="cpu", C=2e-3)
    stale = _detect(fake, models, tmp_path / "stale.h5")
    assert "is not used: svm.npz changed since they were chosen" in stale.nms
    assert "rerun `sppdet tune-detect`" in stale.to_text()
    again = tune_detect.run(fake.dataset, models, device="cpu")
    assert not again.up_to_date and "selection SVMs: trained on split 'train'" in again.to_text()
    assert read_record(models / "selection" / "svm.npz").params["svm"]["C"] == 2e-3
    fresh = _detect(fake, models, tmp_path / "fresh.h5")
    assert "chosen on split 'val'" in fresh.nms


def test_a_model_without_a_validation_split_is_skipped_with_a_note(tmp_path):
    fake, models = _train(tmp_path, val=False)
    summary = tune_detect.run(fake.dataset, models, device="cpu")
    assert summary.skipped is not None and not (models / TEST_SETTINGS_FILE).exists()
    assert "fine-tuned without a held-out validation split" in summary.to_text()
    assert "detect uses the default NMS" in summary.to_text()


def test_the_command_prints_the_choice(tuned):
    fake, models, _ = tuned
    work = models.parent.parent
    result = CliRunner().invoke(cli, ["-w", str(work), "tune-detect", str(fake.dataset),
                                      "--name", "m", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Test settings are up to date" in result.output
    assert "operating point" in result.output


def test_a_change_of_confidence_chooses_again(tuned):
    fake, models, _ = tuned
    work = models.parent.parent
    try:
        result = CliRunner().invoke(cli, [
            "-w", str(work), "tune-detect", str(fake.dataset), "--name", "m", "--device",
            "cpu", "--confidence", "0", "--resamples", "50"])
        assert result.exit_code == 0, result.output
        assert "Test settings of model m ->" in result.output  # not up to date: chosen again
        assert "the best validation AP (confidence 0)" in result.output
        record = read_record(models / TEST_SETTINGS_FILE)
        assert (record.params["confidence"], record.params["resamples"]) == (0, 50)
        content = json.loads((models / TEST_SETTINGS_FILE).read_text())
        assert content["bootstrap"] == {"confidence": 0.0, "resamples": 50, "seed": 0}
        refused = CliRunner().invoke(cli, [
            "-w", str(work), "tune-detect", str(fake.dataset), "--name", "m",
            "--confidence", "1.5"])
        assert refused.exit_code == 2 and "--confidence" in refused.output
    finally:  # the module's other tests read the default choice
        back = tune_detect.run(fake.dataset, models, device="cpu")
    assert not back.up_to_date and back.content["bootstrap"]["confidence"] == 0.95


def test_inputs_of_a_superset_split_serve_and_others_do_not(tuned, tmp_path):
    from sppdet.errors import DataError

    fake, models, _ = tuned
    # trainval's proposals and features hold every val image
    served = detect.run(fake.dataset, "val", tmp_path / "v.h5", model_dir=models,
                        proposals=fake.proposals["trainval"],
                        features=fake.features["trainval"], device="cpu")
    assert served.finished and served.images == 6
    with pytest.raises(DataError, match="was made on split 'test' of .*, not on split 'val'"):
        detect.run(fake.dataset, "val", tmp_path / "w.h5", model_dir=models,
                   proposals=fake.proposals["test"], features=fake.features["trainval"],
                   device="cpu")


def _class_candidates(path: Path, label: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per image, the candidates of class ``label``: ``(boxes, scores)``."""
    with DetectionsReader(path) as reader:
        out = {}
        for image_id in reader.image_ids():
            c = reader.candidates(image_id)
            mine = c.labels == label
            out[image_id] = (c.boxes[mine], c.scores[mine])
        return out


def test_the_scorer_choice_is_stored_and_no_choose_scorer_keeps_the_svms(tuned):
    fake, models, summary = tuned
    content = json.loads((models / TEST_SETTINGS_FILE).read_text())
    for c in content["classes"].values():
        assert c["scorer"] in ("svm", "softmax")
        assert set(c["val_ap_scorer"]) == {"svm", "softmax"}
        assert "softmax_win_fraction" in c
    assert "scorer per class: the fc8 softmax (log-odds) replaces the SVMs" in summary.to_text()
    # the softmax candidates, from the same pass as the SVMs': log-odds above the softmax
    # default's (about -6.9)
    with DetectionsReader(models / "selection" / "val.h5") as reader:
        assert reader.softmax_score_thresholds == pytest.approx(
            (np.log(1e-3) - np.log1p(-1e-3),) * len(fake.classes))
        scores = np.concatenate([reader.softmax_candidates(i).scores
                                 for i in reader.image_ids()])
        # all above the threshold; some negative: log-odds, not probabilities
        assert scores.min() > np.log(1e-3) - np.log1p(-1e-3) - 1e-5 and scores.min() < 0
    try:
        off = tune_detect.run(fake.dataset, models, device="cpu", choose_scorer=False)
        assert not off.up_to_date
        record = read_record(models / TEST_SETTINGS_FILE)
        assert record.params["choose_scorer"] is False
        with DetectionsReader(models / "selection" / "val.h5") as reader:
            assert reader.softmax_score_thresholds is None
        stored = read_test_settings(models / TEST_SETTINGS_FILE)
        assert set(stored.class_scorers) == {"svm"} and stored.mixed_scorers() is None
        assert "scorer per class" not in off.to_text()
    finally:  # the module's other tests read the default choice
        back = tune_detect.run(fake.dataset, models, device="cpu")
    assert not back.up_to_date and read_record(models / TEST_SETTINGS_FILE).params[
        "choose_scorer"] is True


def test_detect_scores_each_class_with_its_chosen_scorer_unless_one_is_given(tuned, tmp_path):
    fake, models, _ = tuned
    first = fake.classes[0]

    def softmax_first(content):
        content["classes"][first]["scorer"] = "softmax"
        for name in fake.classes[1:]:
            content["classes"][name]["scorer"] = "svm"

    original = _with_settings(models, softmax_first)
    try:
        mixed = _detect(fake, models, tmp_path / "mixed.h5")
        assert f"{first}: softmax scores (log-odds) (chosen there)" in mixed.nms
        assert f"(svm scores; {first}: softmax scores (log-odds)) for 4 images" in \
            mixed.to_text()
        params = read_record(tmp_path / "mixed.h5").params
        assert params["scorer"] == "svm"
        assert params["class_scorers"] == ["softmax"] + ["svm"] * (len(fake.classes) - 1)
        assert params["nms"]["per_class_score_threshold"] == pytest.approx(
            [np.log(1e-3) - np.log1p(-1e-3)] + [-1.5] * (len(fake.classes) - 1))
        # the same classes scored alone: softmax probabilities, SVM scores
        svm = _detect(fake, models, tmp_path / "svm.h5", scorer="svm")
        assert f"is not used: they score {first} with the softmax (log-odds), and the svm " \
               "scorer asked for scores every class with svm scores" in svm.nms
        params = read_record(tmp_path / "svm.h5").params
        assert "class_scorers" not in params and "per_class" not in params["nms"]
        with DetectionsReader(tmp_path / "mixed.h5") as mixed_reader, \
                DetectionsReader(tmp_path / "svm.h5") as svm_reader:
            assert mixed_reader.class_scorers == ("softmax",) + ("svm",) * (
                len(fake.classes) - 1)
            assert svm_reader.class_scorers == ("svm",) * len(fake.classes)
        _detect(fake, models, tmp_path / "softmax.h5", scorer="softmax", nms_method="hard")
        for label in range(1, len(fake.classes)):
            got, want = (_class_candidates(tmp_path / "mixed.h5", label),
                         _class_candidates(tmp_path / "svm.h5", label))
            for image_id in want:
                np.testing.assert_array_equal(got[image_id][0], want[image_id][0])
                np.testing.assert_array_equal(got[image_id][1], want[image_id][1])
        got = _class_candidates(tmp_path / "mixed.h5", 0)
        probs = _class_candidates(tmp_path / "softmax.h5", 0)
        count = 0
        for image_id in probs:
            p = np.clip(probs[image_id][1].astype(np.float64), 1e-7, 1 - 1e-7)
            want = np.sort(np.log(p) - np.log1p(-p))
            have = np.sort(got[image_id][1].astype(np.float64))
            # the two thresholds (p > 1e-3, log-odds > its float32) may part at the boundary
            keep_want, keep_have = want[want > -6.8], have[have > -6.8]
            np.testing.assert_allclose(keep_have, keep_want, rtol=1e-4, atol=1e-4)
            count += keep_have.size
        assert count > 0
        # the command line: --scorer given overrides the per-class choice
        work = models.parent.parent
        result = CliRunner().invoke(cli, [
            "-w", str(work), "detect", str(fake.dataset), "--name", "m", "--out",
            str(tmp_path / "cli.h5"), "--proposals", str(fake.proposals["test"]),
            "--features", str(fake.features["test"]), "--device", "cpu", "--scorer", "svm"])
        assert result.exit_code == 0, result.output
        assert "is not used: they score" in result.output
        default = CliRunner().invoke(cli, [
            "-w", str(work), "detect", str(fake.dataset), "--name", "m", "--out",
            str(tmp_path / "cli-default.h5"), "--proposals", str(fake.proposals["test"]),
            "--features", str(fake.features["test"]), "--device", "cpu"])
        assert default.exit_code == 0, default.output
        assert f"{first}: softmax scores (log-odds)" in default.output
    finally:
        (models / TEST_SETTINGS_FILE).write_text(original)
