"""The train-svm stage through the CLI, on fabricated proposals, conv5 features and fc layers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sppdet.io.item_store import ItemReader
from sppdet.io.records import read_record
from sppdet.cli import cli
from sppdet.data.voc import VOCDataset
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.stages.layout import feature_variant, features_path, proposals_path
from sppdet.training.svm.weights import SVMWeights
from sppdet.features.window_features import WindowFeaturizer

from tests.fake_training_inputs import SCALES, make_inputs, negatives_of, write_fc, write_proposals


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("svm_inputs")
    return make_inputs(root, empty=("img003",))


def _train(work: Path, inputs, *args: str, fc: Path | None = None):
    command = ["-w", str(work), "train-svm", str(inputs.dataset), "--name", "m",
               "--proposals", str(inputs.proposals), "--features", str(inputs.features),
               "--device", "cpu", *args]
    if fc is not None:
        command += ["--fc", str(fc)]
    return CliRunner().invoke(cli, command)


def _fc(work: Path, inputs, **kwargs) -> Path:
    return write_fc(work / "models" / "m" / "fc.pt", inputs.classes, inputs.channels, **kwargs)


def test_train_svm_writes_weights_record_and_skips_a_class_without_positives(tmp_path, inputs):
    fc = _fc(tmp_path, inputs)
    result = _train(tmp_path, inputs)
    assert result.exit_code == 0, result.output
    out = tmp_path / "models" / "m" / "svm.npz"
    weights = SVMWeights.load(out)
    assert weights.classes == ["circle", "square", "star"]
    assert weights.layer == "fc7"
    assert weights.weights.shape == (3, 64) and weights.bias.shape == (3,)
    assert weights.trained.tolist() == [True, True, False]
    assert not weights.weights[2].any()  # the skipped class has no weights...
    scores = weights.scores(np.ones((2, 64), np.float32))
    assert np.isneginf(scores[:, 2]).all()  # ...and never scores: no detections
    assert weights.feature_scale > 0
    with np.load(out) as raw:
        assert set(raw.files) == {"weights", "bias", "trained", "feature_scale", "layer",
                                  "classes"}
    record = read_record(out)
    assert record.stage == "train-svm"
    assert set(record.inputs) == {"proposals", "features", "fc"}
    assert record.inputs["fc"].digest == read_record(fc).digest
    assert record.params["layer"] == "fc7" and record.params["svm"]["C"] == 1e-3
    assert record.params["svm"]["include_difficult"] is True
    assert record.params["classes"] == ["circle", "square", "star"]
    summary = record.summary
    assert summary["classes"]["star"]["skipped"] == "no positive examples"
    assert summary["classes"]["circle"]["retrainings"] >= 1
    assert summary["classes"]["circle"]["negatives_cached"] > 0
    assert summary["feature_scale"] == pytest.approx(weights.feature_scale)
    # the image without proposals was visited and contributed nothing
    assert summary["images"] == 12
    assert "star" in result.output and "skipped: no positive examples" in result.output
    assert "mining pass" in result.output and "solver" in result.output
    log = (out.parent / "svm.npz.log").read_text()
    assert "retrain 1 (first" in log and "objective" in log


def test_svms_separate_the_fake_windows(tmp_path, inputs):
    # C is raised from R-CNN's 1e-3 (tuned for thousands of images) for 12 tiny images.
    fc = _fc(tmp_path, inputs)
    result = _train(tmp_path, inputs, "--C", "0.1")
    assert result.exit_code == 0, result.output
    weights = SVMWeights.load(tmp_path / "models" / "m" / "svm.npz")
    head, _ = FcHead.load(fc)
    data = VOCDataset(inputs.dataset, "trainval")
    with FeatureCache(inputs.features) as cache, ItemReader(inputs.proposals) as proposals:
        featurize = WindowFeaturizer(cache, head, "fc7")
        for k in range(2):
            pos, neg = [], []
            for ann in data:
                if (ann.labels == k).any():
                    pos.append(weights.scores(featurize(ann.image_id,
                                                        ann.boxes[ann.labels == k]))[:, k])
                boxes = proposals.group(ann.image_id)["boxes"][()]
                mask = negatives_of(boxes, ann.boxes, ann.labels, k)
                neg.append(weights.scores(featurize(ann.image_id, boxes[mask]))[:, k])
            pos, neg = np.concatenate(pos), np.concatenate(neg)
            assert pos.size >= 6 and neg.size > 200
            assert (pos > 0).mean() >= 0.95, (k, pos)
            assert (neg < 0).mean() >= 0.95, (k, np.sort(neg)[-10:])


def test_up_to_date_force_and_changed_options(tmp_path, inputs):
    _fc(tmp_path, inputs)
    assert _train(tmp_path, inputs, "--layer", "pool5").exit_code == 0
    out = tmp_path / "models" / "m" / "svm.npz"
    digest = read_record(out).digest
    again = _train(tmp_path, inputs, "--layer", "pool5")
    assert again.exit_code == 0 and "up to date" in again.output
    forced = _train(tmp_path, inputs, "--layer", "pool5", "--force")
    assert forced.exit_code == 0 and "up to date" not in forced.output
    changed = _train(tmp_path, inputs, "--layer", "pool5", "--C", "0.01")
    assert changed.exit_code == 0 and "up to date" not in changed.output
    assert read_record(out).digest != digest


def test_pool5_needs_no_fc_checkpoint(tmp_path, inputs):
    result = _train(tmp_path, inputs, "--layer", "pool5")
    assert result.exit_code == 0, result.output
    out = tmp_path / "models" / "m" / "svm.npz"
    weights = SVMWeights.load(out)
    assert weights.layer == "pool5" and weights.weights.shape == (3, inputs.channels * 50)
    assert set(read_record(out).inputs) == {"proposals", "features"}


def test_fc7_without_fc_checkpoint_says_to_finetune(tmp_path, inputs):
    result = _train(tmp_path, inputs)
    assert result.exit_code == 1
    assert "finetune" in result.output and "fc.pt" in result.output


def test_features_of_another_backbone_are_refused(tmp_path, inputs):
    _fc(tmp_path, inputs, backbone="zf5")
    result = _train(tmp_path, inputs)
    assert result.exit_code == 1
    assert "zf5" in result.output and "fakenet" in result.output
    assert "sppdet cache-features" in result.output and "--backbone zf5" in result.output
    assert not (tmp_path / "models" / "m" / "svm.npz").exists()


def test_fc_checkpoint_for_other_classes_is_refused(tmp_path, inputs):
    _fc(tmp_path, inputs, record_classes=["cat", "dog", "bird"])
    result = _train(tmp_path, inputs)
    assert result.exit_code == 1
    assert "classes" in result.output and "finetune" in result.output


def test_fc_checkpoint_of_another_width_is_refused(tmp_path, inputs):
    write_fc(tmp_path / "models" / "m" / "fc.pt", inputs.classes, inputs.channels + 1)
    result = _train(tmp_path, inputs)
    assert result.exit_code == 1
    assert "7 channels" in result.output and "expects 8" in result.output


def test_nan_in_the_feature_cache_names_the_image(tmp_path):
    bad = make_inputs(tmp_path / "bad", n_images=6, nan_image="img004")
    result = _train(tmp_path / "work", bad, "--layer", "pool5")
    assert result.exit_code == 1
    assert "img004" in result.output and "NaN" in result.output


def test_nan_from_the_fc_layers_names_the_image(tmp_path, inputs):
    _fc(tmp_path, inputs, nan=True)
    result = _train(tmp_path, inputs)
    assert result.exit_code == 1
    assert "img000" in result.output and "NaN" in result.output


def test_images_missing_from_the_proposals_are_refused(tmp_path, inputs):
    data = VOCDataset(inputs.dataset, "trainval")
    partial = tmp_path / "partial.h5"
    write_proposals(partial, data)
    # an artifact for another split: only the first images
    from sppdet.io.item_store import ItemStore
    from sppdet.io.records import Record

    short = tmp_path / "short.h5"
    with ItemReader(partial) as reader, ItemStore(short, Record("propose", {"x": 1})) as store:
        ids = data.image_ids[:4]
        for image_id in ids:
            arrays, attrs = reader.read(image_id)
            store.write(image_id, arrays, attrs)
        store.finalize(ids)
    result = CliRunner().invoke(cli, [
        "-w", str(tmp_path), "train-svm", str(inputs.dataset), "--name", "m", "--layer",
        "pool5", "--proposals", str(short), "--features", str(inputs.features)])
    assert result.exit_code == 1
    assert "8 image(s)" in result.output and "sppdet propose" in result.output


def test_proposals_of_another_split_are_refused(tmp_path, inputs):
    from sppdet.io.item_store import ItemStore
    from sppdet.io.records import Record
    from sppdet.stages.common import dataset_params

    data = VOCDataset(inputs.dataset, "trainval")
    other = {**dataset_params(data), "split": "test"}
    path = tmp_path / "test.proposals.h5"
    with ItemReader(inputs.proposals) as reader, \
            ItemStore(path, Record("propose", {"data": other})) as store:
        for image_id in data.image_ids:
            store.write(image_id, *reader.read(image_id))
        store.finalize(data.image_ids)
    result = CliRunner().invoke(cli, [
        "-w", str(tmp_path), "train-svm", str(inputs.dataset), "--name", "m", "--layer",
        "pool5", "--proposals", str(path), "--features", str(inputs.features)])
    assert result.exit_code == 1
    assert "split 'test'" in result.output and "sppdet propose" in result.output


def test_a_split_without_any_proposal_is_an_error(tmp_path):
    bare = make_inputs(tmp_path / "bare", n_images=4,
                       empty=("img000", "img001", "img002", "img003"))
    result = _train(tmp_path / "work", bare, "--layer", "pool5")
    assert result.exit_code == 1
    assert "0 proposals" in result.output and "sppdet propose" in result.output


def test_exclude_difficult_trains_on_fewer_positives(tmp_path, inputs):
    counts = {}
    for flag in ("--include-difficult", "--no-include-difficult"):
        result = _train(tmp_path, inputs, "--layer", "pool5", flag)
        assert result.exit_code == 0, result.output
        record = read_record(tmp_path / "models" / "m" / "svm.npz")
        counts[flag] = record.summary["classes"]["circle"]["positives"] + \
            record.summary["classes"]["square"]["positives"]
        assert record.params["svm"]["include_difficult"] is (flag == "--include-difficult")
    # fake_training_inputs marks the first object of every fifth image difficult
    assert counts["--no-include-difficult"] == counts["--include-difficult"] - 2


@pytest.mark.slow  # two worker processes importing torch: about 20 s here
def test_two_jobs_train_the_same_svms_as_one(tmp_path, inputs):
    results = {}
    for jobs in ("1", "2"):
        work = tmp_path / f"jobs{jobs}"
        _fc(work, inputs)
        result = _train(work, inputs, "--jobs", jobs)
        assert result.exit_code == 0, result.output
        results[jobs] = SVMWeights.load(work / "models" / "m" / "svm.npz")
        if jobs == "2":
            assert "retrain 1 (first" in (work / "models" / "m" / "svm.npz.log").read_text()
    np.testing.assert_array_equal(results["1"].weights, results["2"].weights)
    np.testing.assert_array_equal(results["1"].bias, results["2"].bias)
    assert results["1"].feature_scale == results["2"].feature_scale


def test_default_paths_follow_the_layout_and_the_fc_backbone(tmp_path, inputs):
    work = tmp_path / "work"
    _fc(work, inputs)
    for source, target in (
            (inputs.proposals, proposals_path(work, inputs.dataset, "trainval", "ss-fast")),
            (inputs.features, features_path(work, inputs.dataset, "trainval", "fakenet",
                                            feature_variant(SCALES, flip=False)))):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        shutil.copy(f"{source}.record.json", f"{target}.record.json")
    result = CliRunner().invoke(cli, ["-w", str(work), "train-svm", str(inputs.dataset),
                                      "--name", "m", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((work / "models" / "m" / "svm.npz.record.json").read_text())
    assert record["inputs"]["features"]["path"].endswith("fakenet/s240-480/trainval.h5")
    # a second variant of the backbone's cache: the command must be told which one (the fc
    # record names no cache of the layout, so there is no variant of the model's to prefer)
    other = features_path(work, inputs.dataset, "trainval", "fakenet", "s240-480-flip")
    other.parent.mkdir(parents=True)
    shutil.copy(inputs.features, other)
    shutil.copy(f"{inputs.features}.record.json", f"{other}.record.json")
    several = CliRunner().invoke(cli, ["-w", str(work), "train-svm", str(inputs.dataset),
                                       "--name", "m", "--device", "cpu"])
    assert several.exit_code == 1
    assert "s240-480, s240-480-flip; choose one with --feature-variant" in several.output
    chosen = CliRunner().invoke(cli, ["-w", str(work), "train-bbox-reg", str(inputs.dataset),
                                      "--name", "m", "--device", "cpu",
                                      "--feature-variant", "s240-480-flip"])
    assert chosen.exit_code == 0, chosen.output
    record = json.loads((work / "models" / "m" / "bbox_reg.npz.record.json").read_text())
    assert record["inputs"]["features"]["path"].endswith("fakenet/s240-480-flip/trainval.h5")
    both = CliRunner().invoke(cli, ["-w", str(work), "train-svm", str(inputs.dataset),
                                    "--name", "m", "--backbone", "zf5", "--features",
                                    str(inputs.features)])
    assert both.exit_code == 2 and "not both" in both.output  # a usage error
    nothing = CliRunner().invoke(cli, ["-w", str(work), "train-svm", str(inputs.dataset),
                                       "--name", "other", "--layer", "pool5"])
    assert nothing.exit_code == 1 and "--backbone" in nothing.output


def test_help_shows_the_defaults():
    result = CliRunner().invoke(cli, ["train-svm", "--help"])
    assert result.exit_code == 0
    for text in ("[default: fc7]", "[default: 0.001", "[default: 2.0", "[default: 10.0",
                 "[default: include-difficult]", "[default: 100000", "[default: ss-fast]",
                 "[default: trainval]", "[default: 1", "[default: 0]",
                 "<work-dir>/models/<name>/fc.pt"):
        assert text in " ".join(result.output.split()), text


def test_disk_full_says_so_and_keeps_the_earlier_svms(tmp_path, inputs, monkeypatch):
    """Case 8 (train-svm): not a bare Errno 28."""
    from sppdet.io.records import record_path
    from tests.fault_injection import inject

    assert _train(tmp_path, inputs, "--layer", "pool5").exit_code == 0
    out = tmp_path / "models" / "m" / "svm.npz"
    before = out.read_bytes(), record_path(out).read_text()
    with inject(monkeypatch, "train-svm:artifact-write:enospc"):
        result = _train(tmp_path, inputs, "--layer", "pool5", "--C", "0.01")
    assert result.exit_code == 1
    assert f"Error: disk full writing {out}" in result.output, result.output
    assert (out.read_bytes(), record_path(out).read_text()) == before
