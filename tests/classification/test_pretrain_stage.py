"""`sppdet pretrain` and `sppdet classify` end to end, and the pretrained ZF-5 as a detector."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sppdet.io.records import read_record
from sppdet.backbones import build_backbone
from sppdet.io.hashing import file_sha256
from sppdet.classification.model import load_classifier
from sppdet.cli import cli
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.errors import ConfigError
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.stages import pipeline, pretrain
from sppdet.stages.pipeline import CacheOptions, PipelineConfig, ProposeOptions

TINY_TRAIN = ["--epochs", "2", "--crop-size", "64", "--small-size", "48", "--image-size", "72",
              "--hidden", "32", "--batch-size", "8", "--multi-size", "alternate",
              "--device", "cpu"]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    data = root / "data"
    make_demo_data(data, DemoDataConfig(n_trainval=8, n_test=4, image_width=200,
                                        image_height=150, max_object_size=100, seed=3))
    work = root / "work"
    output = _invoke("-w", str(work), "pretrain", str(data), "--name", "zf5-tiny", *TINY_TRAIN)
    return data, work, work / "backbones" / "zf5-tiny", output


def test_pretrain_writes_a_backbone_checkpoint_and_a_classifier(trained) -> None:
    data, work, out, output = trained
    assert "2 epochs, input sizes [48, 64] (multi-size: alternate)" in output
    weights = out / "weights.pt"
    record = read_record(weights)
    assert record.stage == "pretrain"
    assert record.params["config"]["multi_size"] == "alternate"
    assert record.params["examples"]["kind"] == "voc-crops"
    trunk = build_backbone("zf5", str(weights))
    fc = trunk.fc_layers()
    assert fc is not None and fc["fc6"].out_features == 32
    model, classes, meta = load_classifier(out / "classifier.pt")
    assert classes[-1] == "__background__" and len(classes) == 7
    assert torch.equal(model.fc6.weight, fc["fc6"].weight)
    history = json.loads((out / "history.json").read_text())
    assert [epoch["input_size"] for epoch in history] == [64, 48]
    assert (out / "curve.png").stat().st_size > 0
    assert not (out / "train-state.pt").exists()
    # same options: nothing to do
    again = _invoke("-w", str(work), "pretrain", str(data), "--name", "zf5-tiny", *TINY_TRAIN)
    assert "up to date" in again


def test_classify_reports_three_modes_and_writes_features(trained) -> None:
    data, work, out, _ = trained
    output = _invoke("-w", str(work), "classify", str(data), str(out), "--split", "test",
                     "--features", "fc7", "--device", "cpu")
    assert "centre 64 crop" in output and "full image (shorter side 72)" in output
    report_files = list((work / "classify" / "zf5-tiny").rglob("report.json"))
    assert len(report_files) == 1
    report = json.loads(report_files[0].read_text())
    assert [r["mode"] for r in report["results"]] == ["crop", "full", "multiview"]
    n = sum(report["counts"].values())
    with h5py.File(report_files[0].parent / "features.fc7.h5") as handle:
        assert handle["features"].shape == (n, 32)
        assert handle["labels"].shape == (n,)
        assert json.loads(handle.attrs["classes"])[-1] == "__background__"

    _invoke("-w", str(work), "classify", str(data), str(out / "classifier.pt"), "--split",
            "test", "--modes", "full", "--features", "spp", "--whole-images", "--device", "cpu")
    features = next((work / "classify").rglob("features.spp.h5"))
    with h5py.File(features) as handle:
        assert handle["features"].shape == (4, 256 * 50)  # 4 test images, whole
        labels = handle["labels"][()]
        assert labels.shape == (4, 6) and set(np.unique(labels)) <= {0, 1}
        assert labels.sum(axis=1).min() >= 1


def test_the_pretrained_zf5_drives_the_detection_pipeline(trained) -> None:
    data, work, out, _ = trained
    weights = out / "weights.pt"
    config = PipelineConfig(
        name="zf5-pre", jobs=1, device="cpu",
        propose=ProposeOptions(max_boxes=100, max_size=200, min_size=6.0),
        cache_features=CacheOptions(backbone="zf5", weights=str(weights), scales=(160,),
                                    flip=False),
        finetune=FinetuneConfig(iterations=10, hidden=32, batch_size=32, val_every=10,
                                checkpoint_every=10, log_every=10, init="pretrained"))
    summary = pipeline.run(data, work, config)
    assert 0.0 <= summary.eval_summary.report["mean_ap"] <= 1.0
    cache = next((work / "features").rglob("trainval.h5"))
    assert cache.parent.name == f"s160-w{file_sha256(weights)[:8]}"  # the weights' own folder
    cache_record = read_record(cache)
    assert cache_record.params["backbone"]["weights_sha256"] == file_sha256(weights)
    fc_record = read_record(work / "models" / "zf5-pre" / "fc.pt")
    assert fc_record.params["init_weights"]["sha256"] == file_sha256(weights)


def test_a_kill_leaves_a_resumable_state_and_other_options_refuse_it(trained, tmp_path) -> None:
    data, _, _, _ = trained
    work = tmp_path / "work"
    state = work / "backbones" / "zf5-x" / "train-state.pt"
    state.parent.mkdir(parents=True)
    torch.save({"format": "sppdet-pretrain-state", "identity": "another run"}, state)
    result = CliRunner().invoke(cli, ["-w", str(work), "pretrain", str(data), "--name",
                                      "zf5-x", *TINY_TRAIN])
    assert result.exit_code == 1
    assert "checkpoint of a run with other settings" in result.output
    assert state.exists()  # nothing lost
    _invoke("-w", str(work), "pretrain", str(data), "--name", "zf5-x", "--force", *TINY_TRAIN)
    assert (work / "backbones" / "zf5-x" / "weights.pt").exists()


def test_pretrain_on_an_image_folder(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            folder = tmp_path / "folder" / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (50, 60, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    work = tmp_path / "work"
    output = _invoke("-w", str(work), "pretrain", str(tmp_path / "folder"), "--split", "train",
                     "--val-fraction", "0", *TINY_TRAIN)
    assert "2-way SPP classifier (blue, red)" in output
    out = work / "backbones" / "zf5-folder"
    output = _invoke("-w", str(work), "classify", str(tmp_path / "folder"), str(out),
                     "--split", "test", "--device", "cpu")
    assert "| centre 64 crop |" in output


def test_bad_inputs_are_clear_errors(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "pretrain", str(empty)])
    assert result.exit_code == 1 and "Error:" in result.output
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "pretrain", str(empty),
                                      "--backbone", "efficientnet_lite0"])
    assert result.exit_code == 2  # not one of the paper's trunks
    with pytest.raises(ConfigError, match="paper's trunks"):
        pretrain.run(empty, tmp_path / "w", backbone="efficientnet_lite0")
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "pretrain", str(empty),
                                      "--levels", "6,x"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output
    broken = tmp_path / "classifier.pt"
    broken.write_bytes(b"junk")
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), "classify", str(empty),
                                      str(broken)])
    assert result.exit_code == 1 and "cannot read the checkpoint" in result.output


def test_help_shows_defaults() -> None:
    for command in ("pretrain", "classify"):
        output = _invoke(command, "--help")
        assert "[default:" in output
    assert "alternate" in _invoke("pretrain", "--help")
