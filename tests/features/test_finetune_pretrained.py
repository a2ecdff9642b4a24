"""Fine-tuning from the pretrained fc6/fc7 (``init="pretrained"``): loading, checks, the stage."""

import shutil

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from tests.fake_artifacts import make_fake_pipeline_inputs
from sppdet.io.records import read_record
from sppdet.backbones import build_backbone
from sppdet.io.hashing import file_sha256
from sppdet.backbones.paper_nets import ZF5
from sppdet.cli import cli
from sppdet.errors import ConfigError, ModelError, ParameterError, StaleArtifactError
from sppdet.features.fc_head import FcHead
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.head_init import init_head
from sppdet.training.finetune.trainer import FcFinetuner
from sppdet.features.pretrained_fc import load_pretrained_fc, pretrained_weights_file
from sppdet.ops.spp import spp_output_dim
from sppdet.stages import finetune
from sppdet.stages.pipeline import config_from_dict

HIDDEN = 16
IN_DIM = 256 * 50  # ZF-5 conv5 channels x bins of levels (6, 3, 2, 1)
SMALL = dict(hidden=HIDDEN, lr=1e-3, images_per_chunk=6, iterations_per_chunk=4, log_every=4,
             val_every=4, val_windows=64)


def write_zf5(path, *, seed=0, fc=True, in_dim=IN_DIM, hidden=HIDDEN):
    """A ZF-5 checkpoint with small fc6/fc7 (or none); returns its path."""
    torch.manual_seed(seed)
    layers = {"fc6": nn.Linear(in_dim, hidden), "fc7": nn.Linear(hidden, hidden)} if fc else None
    ZF5(seed=seed).save_weights(str(path), layers)
    return path


@pytest.fixture(scope="module")
def zf5_file(tmp_path_factory):
    return write_zf5(tmp_path_factory.mktemp("zf5") / "zf5.pt")


def described(path):
    """The ``backbone`` entry ``cache-features --backbone zf5 --weights path`` records."""
    return build_backbone("zf5", str(path)).describe()


# ------------------------------------------------------------------------------- the library


def test_head_starts_from_the_checkpoint_fc6_fc7_and_a_fresh_fc8(zf5_file):
    pretrained = load_pretrained_fc(described(zf5_file))
    assert pretrained.weights_sha256 == file_sha256(str(zf5_file))
    config = FinetuneConfig(init="pretrained", **SMALL)
    head = init_head(IN_DIM, 3, config, pretrained)
    stored = torch.load(zf5_file, weights_only=True)  # the file's tensors, read directly
    for name in ("fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"):
        assert torch.equal(head.state_dict()[name], stored[name]), name
    # fc8 is the paper's Gaussian (std 0.01, zero bias), the same as under a random init
    plain = FcHead(IN_DIM, 3, hidden=HIDDEN, seed=config.seed)
    assert torch.equal(head.fc8.weight, plain.fc8.weight)
    assert not head.fc8.bias.any() and head.fc8.out_features == 4


def test_width_and_input_length_mismatches_say_what_to_change(zf5_file):
    pretrained = load_pretrained_fc(described(zf5_file))
    wide = FinetuneConfig(init="pretrained", **{**SMALL, "hidden": 32})
    with pytest.raises(ParameterError, match="the pretrained fc6 has 16 outputs, not 32: "
                                             "fine-tune fc6/fc7 16 wide") as caught:
        init_head(IN_DIM, 3, wide, pretrained)
    assert caught.value.param == "hidden"  # the CLI shows it as a bad --hidden (exit 2)
    other_levels = FinetuneConfig(init="pretrained", levels=(4, 2, 1), **SMALL)
    in_dim = spp_output_dim(256, (4, 2, 1))
    with pytest.raises(ModelError, match=rf"takes 12800 inputs.*have {in_dim} .*\(4, 2, 1\)"):
        init_head(in_dim, 3, other_levels, pretrained)


def test_init_and_pretrained_layers_go_together(zf5_file):
    pretrained = load_pretrained_fc(described(zf5_file))
    with pytest.raises(ConfigError, match="init 'he' with pretrained"):
        init_head(IN_DIM, 3, FinetuneConfig(**SMALL), pretrained)
    with pytest.raises(ConfigError, match="init 'pretrained' with"):
        init_head(IN_DIM, 3, FinetuneConfig(init="pretrained", **SMALL))


def test_changed_or_missing_weights_file_is_refused(zf5_file, tmp_path):
    path = tmp_path / "zf5.pt"
    shutil.copy(zf5_file, path)
    backbone = described(path)
    assert pretrained_weights_file(backbone) == (str(path.resolve()), file_sha256(str(path)))
    write_zf5(path, seed=1)  # same shapes, other weights: the cached features are stale
    with pytest.raises(StaleArtifactError, match="zf5.pt has changed.*rerun stage "
                                                 "'cache-features' with backbone='zf5'") as err:
        load_pretrained_fc(backbone, source="train.h5")
    assert "--backbone" not in str(err.value) and "--force" not in str(err.value)
    assert dict(err.value.remedy.settings) == {"backbone": "zf5",
                                               "weights": backbone["weights_path"],
                                               "force": True}
    path.unlink()
    with pytest.raises(ModelError, match=f"weights file {path} .*does not exist"):
        load_pretrained_fc(backbone)


def test_backbones_without_fc_layers_are_a_config_error(tmp_path):
    trunk_only = write_zf5(tmp_path / "trunk.pt", fc=False)
    with pytest.raises(ConfigError, match="holds no fc6/fc7.*sppdet pretrain"):
        load_pretrained_fc(described(trunk_only))
    with pytest.raises(ConfigError, match="random-init.*needs features cached with a weights "
                                          "file that holds fc6/fc7"):
        load_pretrained_fc(ZF5().describe())
    lite = build_backbone("efficientnet_lite0").describe()  # the package's ImageNet file
    assert lite["weights_path"] is not None
    with pytest.raises(ConfigError, match="efficientnet_lite0.*holds no fc6/fc7"):
        load_pretrained_fc(lite)


def test_pretrained_init_uses_raw_features_and_changes_the_config_record():
    config = FinetuneConfig(init="pretrained")
    assert config.scale_inputs is False  # the pretrained fc6 expects raw pooled features
    assert config.to_dict() != FinetuneConfig().to_dict()
    assert config_from_dict({"finetune": {"init": "pretrained"}}).finetune.init == "pretrained"
    with pytest.raises(ConfigError, match="init must be one of"):
        FinetuneConfig(init="imagenet")


# ------------------------------------------------------------------------ training and stage


@pytest.fixture(scope="module")
def fake(tmp_path_factory, zf5_file):
    """Features of 256 channels whose record names the ZF-5 checkpoint."""
    root = tmp_path_factory.mktemp("fake")
    path = root / "zf5.pt"
    shutil.copy(zf5_file, path)
    backbone = described(path)
    extra = {k: backbone[k] for k in ("weights", "weights_path", "weights_sha256")}
    return make_fake_pipeline_inputs(root, splits={"train": 8, "val": 4}, trainval=False,
                                     channels=256, backbone="zf5", backbone_record=extra)


def run_stage(fake, out, config, **kwargs):
    options = dict(train_split="train", train_proposals=fake.proposals["train"],
                   train_features=fake.features["train"], val_split="val",
                   val_proposals=fake.proposals["val"], val_features=fake.features["val"],
                   device="cpu")
    return finetune.run(fake.dataset, out, config=config, **{**options, **kwargs})


def test_stage_trains_from_the_pretrained_layers_and_records_the_file(fake, tmp_path):
    weights = fake.root / "zf5.pt"
    sha = file_sha256(str(weights))
    out = tmp_path / "models" / "m" / "fc.pt"
    config = FinetuneConfig(init="pretrained", iterations=8, **SMALL)
    summary = run_stage(fake, out, config)
    assert summary.iterations_run == 8 and "fc6/fc7 started from" in summary.to_text()
    record = read_record(out)
    assert record.params["init_weights"] == {"path": str(weights.resolve()), "sha256": sha}
    assert record.params["config"]["init"] == "pretrained"
    assert record.summary["input_scale"] == 1.0
    assert record.summary["pretrained_fc"]["weights_sha256"] == sha
    head, meta = FcHead.load(out)
    assert meta["finetune"]["pretrained_fc"]["fc6"] == [IN_DIM, HIDDEN]
    assert meta["finetune"]["input_scale"] == 1.0
    assert run_stage(fake, out, config).up_to_date
    # another init is another record: retrained
    he = FinetuneConfig(iterations=8, **SMALL)
    assert not run_stage(fake, out, he, val_split=None, val_proposals=None,
                         val_features=None).up_to_date


def test_stage_refuses_a_changed_weights_file_and_a_wrong_width(fake, tmp_path):
    out = tmp_path / "m" / "fc.pt"
    with pytest.raises(ParameterError, match="16 outputs, not 8"):
        run_stage(fake, out, FinetuneConfig(init="pretrained", iterations=4,
                                            **{**SMALL, "hidden": 8}))
    weights = fake.root / "zf5.pt"
    kept = tmp_path / "kept.pt"
    shutil.copy(weights, kept)
    try:
        write_zf5(weights, seed=3)
        with pytest.raises(StaleArtifactError, match="rerun stage 'cache-features'"):
            run_stage(fake, out, FinetuneConfig(init="pretrained", iterations=4, **SMALL))
    finally:
        shutil.copy(kept, weights)


def test_trainer_loads_the_layers_from_the_training_cache(fake):
    from tests.training.finetune.finetune_inputs import split_inputs

    train, cache = split_inputs(fake, "train")
    seen = {}

    def first_step(iteration):
        if iteration == 1:
            seen["identity"] = trainer.identity

    config = FinetuneConfig(init="pretrained", iterations=4, **SMALL)
    trainer = FcFinetuner(config, callback=first_step)
    trainer.fit(train, cache)
    assert trainer.input_scale_ == 1.0
    assert trainer.pretrained_fc_["weights_sha256"] == file_sha256(str(fake.root / "zf5.pt"))
    assert trainer.pretrained_fc_["weights_sha256"] in seen["identity"]
    # 4 steps at lr 1e-3 moved the layers by about 2e-5 from the checkpoint's (whose weights
    # are up to 1 / sqrt(12800) = 0.0088; any other start would differ by that much)
    stored = torch.load(fake.root / "zf5.pt", weights_only=True)
    for name in ("fc6", "fc7"):
        trained = getattr(trainer.head_, name).weight.detach()
        change = float((trained - stored[f"{name}.weight"]).abs().max())
        assert 0 < change < 1e-3, (name, change)


def test_cli_offers_pretrained_and_explains_what_it_needs(tmp_path):
    result = CliRunner().invoke(cli, ["finetune", "--help"])
    assert result.exit_code == 0 and "pretrained" in result.output
    plain = make_fake_pipeline_inputs(tmp_path, splits={"train": 3}, trainval=False)
    result = CliRunner().invoke(cli, [
        "--work-dir", str(tmp_path / "work"), "finetune", str(plain.dataset), "-n", "x",
        "--proposals", str(plain.proposals["train"]), "--features",
        str(plain.features["train"]), "--val-split", "none", "--init", "pretrained",
        "--iterations", "2", "--device", "cpu"])
    assert result.exit_code == 1
    assert "needs features cached with a weights file that holds fc6/fc7" in result.output


def test_cli_a_width_that_does_not_fit_the_pretrained_fc6_is_a_bad_hidden(fake, tmp_path):
    result = CliRunner().invoke(cli, [
        "--work-dir", str(tmp_path / "work"), "finetune", str(fake.dataset), "-n", "x",
        "--proposals", str(fake.proposals["train"]), "--features", str(fake.features["train"]),
        "--val-split", "none", "--init", "pretrained", "--hidden", "8", "--iterations", "2",
        "--device", "cpu"])
    assert result.exit_code == 2
    assert "Invalid value for '--hidden': the pretrained fc6 has 16 outputs, not 8" in \
        " ".join(result.output.split())
