"""The finetune stage and command: artifacts, records, refusals, resuming, the CLI."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from tests.fake_artifacts import make_fake_pipeline_inputs
from sppdet.io.records import read_record, record_path
from sppdet.cli import cli
from sppdet.errors import ArtifactMissingError, ConfigError
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.training.finetune.compatibility import check_features_match
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.stages import finetune
from sppdet.stages.layout import feature_variant, features_path, proposals_path

SMALL = dict(hidden=32, lr=1e-2, images_per_chunk=8, iterations_per_chunk=4, log_every=5,
             val_every=10, val_windows=128)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_pipeline_inputs(tmp_path_factory.mktemp("fake"),
                                     splits={"train": 12, "val": 6, "test": 2},
                                     empty_proposals=["train_004"])


def run_stage(fake, out, **kwargs):
    options = dict(train_split="train", train_proposals=fake.proposals["train"],
                   train_features=fake.features["train"], val_split="val",
                   val_proposals=fake.proposals["val"], val_features=fake.features["val"],
                   device="cpu")
    config = kwargs.pop("config", FinetuneConfig(iterations=20, **SMALL))
    return finetune.run(fake.dataset, out, config=config, **{**options, **kwargs})


def test_stage_writes_model_record_curve_and_is_up_to_date(fake, tmp_path):
    out = tmp_path / "models" / "m" / "fc.pt"
    summary = run_stage(fake, out)
    assert out.is_file() and summary.curve_path.is_file() and summary.iterations_run == 20
    assert not (out.parent / finetune.CHECKPOINT_FILE).exists()
    record = read_record(out)
    assert record.stage == "finetune"
    assert set(record.inputs) == {"proposals_train", "features_train", "proposals_val",
                                  "features_val"}
    params = record.params
    assert params["backbone"]["name"] == "fake" and params["levels"] == [6, 3, 2, 1]
    assert params["scales"] == [64, 96] and params["classes"] == list(fake.classes)
    assert params["config"]["hidden"] == 32 and params["config"]["iterations"] == 20
    head, meta = FcHead.load(out)
    assert head.in_dim == 8 * 50 and head.num_classes == 3 and meta["channels"] == 8
    assert meta["finetune"]["best_iteration"] == summary.best_iteration
    # the image without proposals is skipped and said so
    assert summary.train.skipped == {"train_004": "no proposals"}
    assert any("train_004" in w for w in summary.warnings)
    text = summary.to_text()
    assert "ms per iteration" in text and "selected iteration" in text and str(out) in text
    again = run_stage(fake, out)
    assert again.up_to_date and "up to date" in again.to_text()


def test_killed_stage_resumes_to_the_uninterrupted_result(fake, tmp_path):
    config = FinetuneConfig(iterations=16, checkpoint_every=8, **SMALL)
    straight = tmp_path / "a" / "fc.pt"
    run_stage(fake, straight, config=config)
    killed = tmp_path / "b" / "fc.pt"

    def kill(iteration):
        if iteration == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(fake, killed, config=config, on_iteration=kill)
    assert not killed.exists() and (killed.parent / finetune.CHECKPOINT_FILE).exists()
    summary = run_stage(fake, killed, config=config)
    assert summary.resumed_from == 8 and summary.iterations_run == 8
    a, b = FcHead.load(straight)[0].state_dict(), FcHead.load(killed)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_class_without_positives_warns_and_trains(tmp_path):
    fake = make_fake_pipeline_inputs(tmp_path, splits={"train": 6, "val": 3},
                                     classes=("a", "b", "c"), absent_classes=("b",))
    summary = run_stage(fake, tmp_path / "m" / "fc.pt",
                        config=FinetuneConfig(iterations=4, **SMALL))
    assert summary.train.per_class["b"] == 0 and summary.iterations_run == 4
    assert any("no positive window of class(es) b" in w for w in summary.warnings)


def test_refusals(fake, tmp_path):
    mixed = make_fake_pipeline_inputs(tmp_path / "mixed", splits={"train": 4, "val": 3},
                                      trainval=False, backbone_by_split={"val": "other"})
    out = tmp_path / "m" / "fc.pt"
    with pytest.raises(ConfigError, match="features do not match.*backbone 'other'"):
        run_stage(mixed, out)
    with pytest.raises(ConfigError, match="made on .*mixed/dataset, not on"):
        run_stage(fake, out, val_features=mixed.features["val"])
    with pytest.raises(ConfigError, match="holds none of the 6 images of split 'val'"):
        run_stage(fake, out, val_features=fake.features["train"])
    with pytest.raises(ConfigError, match="not by `sppdet propose`"):
        run_stage(fake, out, train_proposals=fake.features["train"])
    with pytest.raises(ConfigError, match="test split cannot be the validation split"):
        run_stage(fake, out, val_split="test")
    with pytest.raises(ConfigError, match="must differ"):
        run_stage(fake, out, val_split="train")
    with pytest.raises(ArtifactMissingError, match="sppdet propose"):
        run_stage(fake, out, train_proposals=tmp_path / "none.h5")
    assert not out.exists()


def test_model_refuses_features_of_another_backbone(fake, tmp_path):
    out = tmp_path / "m" / "fc.pt"
    run_stage(fake, out, config=FinetuneConfig(iterations=2, **SMALL))
    _, meta = FcHead.load(out)
    other = make_fake_pipeline_inputs(tmp_path / "o", splits={"test": 2}, trainval=False,
                                      backbone="zf5")
    with pytest.raises(ConfigError, match="rerun stage 'cache-features' with backbone='fake'"):
        check_features_match(meta, FeatureCache(other.features["test"]), model_path=out)


def test_trainval_with_val_warns_that_validation_is_not_held_out(fake, tmp_path):
    summary = run_stage(fake, tmp_path / "m" / "fc.pt", train_split="trainval",
                        train_proposals=fake.proposals["trainval"],
                        train_features=fake.features["trainval"],
                        config=FinetuneConfig(iterations=2, **SMALL))
    assert any("not held out" in w for w in summary.warnings)


def test_artifacts_of_a_superset_split_serve(fake, tmp_path):
    # trainval artifacts hold the train images too
    summary = run_stage(fake, tmp_path / "m" / "fc.pt",
                        train_proposals=fake.proposals["trainval"],
                        train_features=fake.features["trainval"],
                        config=FinetuneConfig(iterations=2, **SMALL))
    assert summary.train.images == 11 and not any("held out" in w for w in summary.warnings)


def test_no_validation_keeps_the_last_iteration(fake, tmp_path):
    summary = run_stage(fake, tmp_path / "m" / "fc.pt", val_split=None, val_proposals=None,
                        val_features=None, config=FinetuneConfig(iterations=6, **SMALL))
    assert summary.best_val is None and summary.best_iteration == 6
    assert "kept the last iteration" in summary.to_text()


# --------------------------------------------------------------------------------- the CLI


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


#: Folder names of the fake artifacts in the work-dir layout: the options take only real
#: method and backbone names (the records keep saying "fake").
LAYOUT_METHOD, LAYOUT_BACKBONE = "ss-fast", "zf5"


def place_in_work_dir(fake, work, variant=None, copy=False):
    """Link (or copy: records then name the layout's paths) the fake artifacts where the
    work-dir layout expects them."""
    variant = variant or feature_variant(fake.scales, flip=True)
    for split in ("train", "val"):
        for src, dst in ((fake.proposals[split],
                          proposals_path(work, fake.dataset, split, LAYOUT_METHOD)),
                         (fake.features[split],
                          features_path(work, fake.dataset, split, LAYOUT_BACKBONE,
                                        variant))):
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            for target, source in ((dst, src), (record_path(dst), record_path(src))):
                if copy:
                    shutil.copy(source, target)
                else:
                    target.symlink_to(source)


def test_cli_help_and_small_run_with_default_paths(fake, tmp_path):
    result = invoke("finetune", "--help")
    assert result.exit_code == 0 and "--iterations" in result.output
    assert "[default: 90000" in result.output and "--val-split" in result.output
    work = tmp_path / "work"
    place_in_work_dir(fake, work)
    result = invoke("-q", "--work-dir", work, "finetune", fake.dataset, "--name", "demo",
                    "--backbone", LAYOUT_BACKBONE, "--iterations", 8, "--hidden",
                    16, "--val-every", 4, "--val-windows", 64, "--images-per-chunk", 6,
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = work / "models" / "demo" / "fc.pt"
    assert out.is_file() and (work / "models" / "demo" / "fc.curve.png").is_file()
    assert "Fine-tuned fc6/fc7/fc8 for 8 iterations" in result.output
    record = json.loads(out.with_name("fc.pt.record.json").read_text())
    assert record["params"]["val"]["split"] == "val"  # val found by default


def test_cli_finds_the_validation_cache_in_the_training_cache_variant(fake, tmp_path):
    work = tmp_path / "work"
    for variant in ("s64-96", "s64-96-flip"):
        place_in_work_dir(fake, work, variant, copy=True)
    common = ["-q", "--work-dir", work, "finetune", fake.dataset, "--iterations", 2,
              "--hidden", 8, "--val-windows", 16, "--device", "cpu"]
    several = invoke(*common, "--name", "a", "--backbone", LAYOUT_BACKBONE)
    assert several.exit_code == 1
    assert "s64-96, s64-96-flip; choose one with --feature-variant NAME" in several.output
    for name, args in (("b", ["--backbone", LAYOUT_BACKBONE, "--feature-variant", "s64-96-flip"]),
                       ("c", ["--features", features_path(work, fake.dataset, "train",
                                                          LAYOUT_BACKBONE, "s64-96-flip")])):
        result = invoke(*common, "--name", name, *args)
        assert result.exit_code == 0, result.output
        inputs = read_record(work / "models" / name / "fc.pt").inputs
        assert inputs["features_train"].path.endswith("zf5/s64-96-flip/train.h5")
        assert inputs["features_val"].path.endswith("zf5/s64-96-flip/val.h5")
    both = invoke(*common, "--name", "d", "--feature-variant", "s64-96", "--features",
                  fake.features["train"])
    assert both.exit_code == 2 and "not both" in both.output


def test_cli_refuses_mismatched_inputs(fake, tmp_path):
    mixed = make_fake_pipeline_inputs(tmp_path / "mixed", splits={"train": 4, "val": 3},
                                      trainval=False, backbone_by_split={"val": "other"})
    result = invoke("--work-dir", tmp_path / "work", "finetune", mixed.dataset, "-n", "x",
                    "--proposals", mixed.proposals["train"], "--features",
                    mixed.features["train"], "--val-proposals", mixed.proposals["val"],
                    "--val-features", mixed.features["val"], "--iterations", 2,
                    "--device", "cpu")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "backbone 'other'" in result.output
    result = invoke("--work-dir", tmp_path / "work", "finetune", fake.dataset, "-n", "x",
                    "--val-split", "test", "--proposals", fake.proposals["train"],
                    "--features", fake.features["train"], "--val-proposals",
                    fake.proposals["val"], "--val-features", fake.features["val"])
    assert result.exit_code == 1 and "test split cannot" in result.output
    result = invoke("--work-dir", tmp_path / "empty", "finetune", fake.dataset, "-n", "x")
    assert result.exit_code == 1 and "sppdet cache-features" in result.output


def test_disk_full_says_so_and_keeps_the_earlier_model(fake, tmp_path, monkeypatch):
    """Case 8 (finetune): not "unexpected pos 3008 vs 2902"."""
    from tests.fault_injection import inject

    work = tmp_path / "work"
    common = ["--work-dir", work, "finetune", fake.dataset, "--name", "m", "--proposals",
              fake.proposals["train"], "--features", fake.features["train"],
              "--val-proposals", fake.proposals["val"], "--val-features", fake.features["val"],
              "--hidden", 8, "--val-windows", 16, "--device", "cpu"]
    assert invoke(*common, "--iterations", 2).exit_code == 0
    out = work / "models" / "m" / "fc.pt"
    before = out.read_bytes(), record_path(out).read_text()
    with inject(monkeypatch, "finetune:artifact-write:enospc"):
        result = invoke(*common, "--iterations", 3)
    assert result.exit_code == 1
    assert f"Error: disk full writing {out}" in result.output, result.output
    assert (out.read_bytes(), record_path(out).read_text()) == before
    assert sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")) == []
