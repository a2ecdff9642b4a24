"""The pipeline's optional ``pretrain`` step: order, weights hand-over, staleness, config rules."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from sppdet.io.records import read_record
from sppdet.io.hashing import file_sha256
from sppdet.classification.training import PretrainConfig
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.errors import ConfigError
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.stages import pipeline
from sppdet.stages.pipeline import CacheOptions, PipelineConfig, PretrainOptions, ProposeOptions

TRAINING = PretrainConfig(epochs=2, crop_size=64, small_size=48, image_size=72, hidden=32,
                          batch_size=8, multi_size="alternate")
CONFIG = PipelineConfig(
    name="pre", jobs=1, device="cpu", seed=5,
    propose=ProposeOptions(max_boxes=100, max_size=200, min_size=6.0),
    cache_features=CacheOptions(scales=(160,), flip=False),
    finetune=FinetuneConfig(iterations=10, hidden=32, batch_size=32, val_every=10,
                            checkpoint_every=10, log_every=10, init="pretrained"),
    pretrain=PretrainOptions(training=TRAINING),
)
LATER = ["cache-features trainval", "cache-features test", "finetune", "train-svm",
         "train-bbox-reg", "tune", "detect", "eval"]


def _with_pretrain(config: PipelineConfig, **changes: object) -> PipelineConfig:
    return dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, **changes))


def _feature_record(work):
    caches = sorted((work / "features").rglob("trainval.h5"), key=lambda p: p.stat().st_mtime)
    return read_record(caches[-1])


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-pretrain")
    data = root / "data"
    make_demo_data(data, DemoDataConfig(n_trainval=8, n_test=4, image_width=200,
                                        image_height=150, max_object_size=100, seed=3))
    work = root / "work"
    stages: list[pipeline.StageResult] = []
    summary = pipeline.run(data, work, CONFIG, on_stage=stages.append)
    return data, work, summary, stages


def test_pretrain_runs_first_and_its_weights_compute_the_features(pretrained_run) -> None:
    _, work, summary, stages = pretrained_run
    assert [s.stage for s in stages] == ["pretrain", "propose trainval", "propose test", *LATER]
    assert not any(s.up_to_date for s in stages)
    weights = work / "backbones" / "pre-zf5" / "weights.pt"  # default name <name>-<backbone>
    pretrain_record = read_record(weights)
    assert pretrain_record.params["config"]["hidden"] == 32
    assert pretrain_record.params["config"]["seed"] == 5  # the pipeline's seed
    assert pretrain_record.params["examples"]["split"] == "trainval"
    cache = _feature_record(work)
    assert cache.params["backbone"]["name"] == "zf5"
    assert cache.params["backbone"]["weights_sha256"] == file_sha256(weights)
    fc_record = read_record(work / "models" / "pre" / "fc.pt")
    assert fc_record.params["init_weights"]["sha256"] == file_sha256(weights)
    assert 0.0 <= summary.eval_summary.report["mean_ap"] <= 1.0


def test_an_unchanged_config_is_all_up_to_date(pretrained_run) -> None:
    data, work, _, _ = pretrained_run
    stages: list[pipeline.StageResult] = []
    pipeline.run(data, work, CONFIG, on_stage=stages.append)
    assert stages[0].stage == "pretrain"
    assert all(s.up_to_date for s in stages), [s.stage for s in stages if not s.up_to_date]


def test_defaults_resolve_from_the_pipeline_and_a_section_seed_wins() -> None:
    args = pipeline.pretrain_arguments(CONFIG)
    assert (args["split"], args["backbone"], args["name"]) == ("trainval", "zf5", "pre-zf5")
    assert args["config"] == dataclasses.replace(TRAINING, seed=5)
    assert args["crop_options"] == {"context": 0.1, "background_per_image": 1,
                                    "include_difficult": False, "seed": 5}
    config = _with_pretrain(dataclasses.replace(CONFIG, train_split="train"), seed=11,
                            split="val", name="mine")
    args = pipeline.pretrain_arguments(config)
    assert (args["split"], args["name"]) == ("val", "mine")
    assert args["config"].seed == 11 and args["crop_options"]["seed"] == 11
    with pytest.raises(ConfigError, match="no pretrain section"):
        pipeline.pretrain_arguments(PipelineConfig())


def test_config_conflicts_are_errors_before_any_stage(pretrained_run, tmp_path) -> None:
    data, _, _, _ = pretrained_run
    work = tmp_path / "work"
    weights = dataclasses.replace(CONFIG, cache_features=CacheOptions(weights="x.pt"))
    other = dataclasses.replace(CONFIG, cache_features=CacheOptions(backbone="convnet5"))
    hidden = dataclasses.replace(CONFIG, finetune=dataclasses.replace(CONFIG.finetune,
                                                                      hidden=64))
    levels = dataclasses.replace(CONFIG, finetune=dataclasses.replace(CONFIG.finetune,
                                                                      levels=(4, 2, 1)))
    not_paper = _with_pretrain(CONFIG, backbone="efficientnet_lite0")
    cases = [(weights, r"cache_features.weights \(x.pt\) and a pretrain section"),
             (other, r"cache_features.backbone is 'convnet5' but the pretrain section trains "
                     r"'zf5'"),
             (hidden, r"pretrain.hidden = 32, but finetune.hidden is 64"),
             (levels, r"pretrain.levels = \[6, 3, 2, 1\], but finetune.levels is \[4, 2, 1\]"),
             (not_paper, r"pretrain.backbone must be one of the paper's trunks")]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message):
            pipeline.run(data, work, config)
        assert not work.exists()  # refused before the first stage
    # the same backbone given twice, or a random-init finetune of another width, is fine
    pipeline.check_config(dataclasses.replace(CONFIG, cache_features=CacheOptions(
        backbone="zf5")))
    pipeline.check_config(dataclasses.replace(CONFIG, finetune=FinetuneConfig(hidden=64)))
    # without a pretrain section nothing changes: efficientnet_lite0 and any weights
    pipeline.check_config(dataclasses.replace(weights, pretrain=None))


def test_yaml_round_trip_of_a_pretrain_section(tmp_path) -> None:
    text = """
name: pre
seed: 5
cache_features:
  scales: [160]
pretrain:
  backbone: convnet5
  context: 0.2
  background_per_image: 0
  seed: 7
  epochs: 2
  crop_size: 64
  image_size: 72
  multi_size: alternate
  small_size: 48
  levels: [4, 2, 1]
  hidden: 32
"""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = pipeline.load_config(path)
    expected = PretrainOptions(
        backbone="convnet5", context=0.2, background_per_image=0, seed=7,
        training=PretrainConfig(epochs=2, crop_size=64, image_size=72, multi_size="alternate",
                                small_size=48, levels=(4, 2, 1), hidden=32))
    assert config.pretrain == expected
    assert config.cache_features.backbone is None and config.cache_features.scales == (160,)
    # to_dict writes the flat section, which reads back equal
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(json.loads(json.dumps(config.to_dict()))))
    assert pipeline.load_config(again) == config
    assert "training" not in config.to_dict()["pretrain"]
    # null or absent: no pretraining; {}: every default
    for body, wanted in (("pretrain: null\n", None), ("name: x\n", None),
                         ("pretrain: {}\n", PretrainOptions())):
        path.write_text(body)
        assert pipeline.load_config(path).pretrain == wanted


def test_bad_pretrain_sections_name_the_problem(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    for body, message in (("pretrain:\n  epoch: 2\n", r"unknown key\(s\) \['epoch'\] in section "
                                                      r"'pretrain'; known: .*epochs"),
                          ("pretrain:\n  epochs: 0\n", r"section 'pretrain': epochs must be a "
                                                       r"positive integer, got 0"),
                          ("pretrain: [zf5]\n", r"section 'pretrain' must be a mapping"),
                          ("pretrain:\n  training: {}\n", r"unknown key\(s\) \['training'\]")):
        path.write_text(body)
        with pytest.raises(ConfigError, match=message):
            pipeline.load_config(path)


# last: it retrains the module's pretrain output (the tests above use the first one)
def test_more_epochs_retrain_and_rerun_every_later_stage(pretrained_run) -> None:
    data, work, _, _ = pretrained_run
    weights = work / "backbones" / "pre-zf5" / "weights.pt"
    before = file_sha256(weights)
    changed = _with_pretrain(CONFIG, training=dataclasses.replace(TRAINING, epochs=1))
    stages: list[pipeline.StageResult] = []
    pipeline.run(data, work, changed, on_stage=stages.append)
    state = {s.stage: s.up_to_date for s in stages}
    assert state == {"pretrain": False, "propose trainval": True, "propose test": True,
                     **{stage: False for stage in LATER}}
    after = file_sha256(weights)
    assert after != before
    assert read_record(weights).params["config"]["epochs"] == 1
    assert _feature_record(work).params["backbone"]["weights_sha256"] == after
