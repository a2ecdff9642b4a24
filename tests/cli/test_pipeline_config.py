"""The pipeline config file is checked with the options' types (issue 13, item 4): a bad value
or an unknown key is an error naming the file, the section and the key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sppdet.errors import ConfigError
from sppdet.stages.params import PAPER_SCALES, ProposeOptions, check_section, coerce
from sppdet.stages.pipeline_config import PipelineConfig, config_from_dict, load_config


def _load(tmp_path, text: str, name: str = "run.yaml") -> PipelineConfig:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize("text, message", [
    ("jobs: two\n", r"key 'jobs': expected an integer, got 'two'"),
    ("jobs: 0\n", r"key 'jobs': expected a value >= 1, got 0"),
    ("jobs: 2.0\n", r"key 'jobs': expected an integer, got 2.0"),
    ("jobs: true\n", r"key 'jobs': expected an integer, got True"),
    ("seed: [1]\n", r"key 'seed': expected an integer, got \[1\]"),
    ("metric: voc\n", r"key 'metric': expected one of 11point, area, got 'voc'"),
    ("device: gpu\n", r"key 'device': expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("name: 7\n", r"key 'name': expected a string, got 7"),
    ("dask: 8786\n", r"key 'dask': expected a string \(or null\), got 8786"),
    ("val_split: 3\n", r"key 'val_split': expected a string \(or null\), got 3"),
    ("propose:\n  max_boxes: many\n", r"section 'propose': key 'max_boxes': expected an "
                                       r"integer, got 'many'"),
    ("propose:\n  method: magic\n", r"section 'propose': key 'method': expected one of "
                                     r"ss-fast, ss-quality, edgeboxes, got 'magic'"),
    ("cache_features:\n  scales: 480\n", r"section 'cache_features': key 'scales': expected a "
                                          r"list of integers, got 480"),
    ("cache_features:\n  scales: [480, big]\n", r"key 'scales': expected a list of integers"),
    ("cache_features:\n  scales: [0]\n", r"key 'scales': expected a value >= 1, got \[0\]"),
    ("cache_features:\n  backbone: resnet\n", r"key 'backbone': expected one of alexnet, "),
    ("cache_features:\n  flip: yes please\n", r"key 'flip': expected true or false"),
    ("finetune:\n  iterations: many\n", r"section 'finetune': key 'iterations': expected an "
                                         r"integer, got 'many'"),
    ("finetune:\n  init: zeros\n", r"section 'finetune': init must be one of"),
    ("train_svm:\n  C: 0\n", r"section 'train_svm': key 'C': expected a value > 0, got 0"),
    ("train_bbox_reg:\n  min_iou: 1.0\n", r"key 'min_iou': expected a value < 1.0, got 1.0"),
    ("detect:\n  max_per_image: 0\n", r"section 'detect': key 'max_per_image': expected a "
                                       r"value >= 1, got 0"),
    ("pretrain:\n  backbone: alexnet\n", r"section 'pretrain': key 'backbone': expected one "
                                          r"of zf5, convnet5, overfeat5, overfeat7"),
    ("pretrain:\n  epochs: two\n", r"section 'pretrain': key 'epochs': expected an integer"),
])
def test_a_bad_value_names_the_file_the_section_and_the_key(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _load(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'run.yaml'}: ")


@pytest.mark.parametrize("text, message", [
    ("jobz: 2\n", r"unknown key 'jobz'; known: cache_features, dask, detect, device, "),
    ("propose:\n  max_box: 10\n", r"unknown key\(s\) \['max_box'\] in section 'propose'; "
                                   r"known: edge_model, max_aspect_ratio, max_boxes"),
    ("detect:\n  nms: 0.3\n  cap: 5\n", r"unknown key\(s\) \['cap', 'nms'\] in section "
                                         r"'detect'"),
    ("finetune:\n  iteration: 5\n", r"unknown key\(s\) \['iteration'\] in section 'finetune'"),
    ("propose: fast\n", r"section 'propose' must be a mapping, got 'fast'"),
])
def test_an_unknown_key_names_the_file_and_the_known_keys(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _load(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'run.yaml'}: ")


def test_the_dask_key_is_read(tmp_path) -> None:
    assert _load(tmp_path, "dask: tcp://host:8786\n").dask == "tcp://host:8786"
    assert _load(tmp_path, "jobs: 2\n").dask is None


def test_json_files_are_checked_the_same(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"run.json: key 'jobs': expected an integer"):
        _load(tmp_path, json.dumps({"jobs": "two"}), name="run.json")


def test_good_values_are_converted_to_the_fields_types(tmp_path) -> None:
    config = _load(tmp_path, """
jobs: 2
val_split: null
device: CUDA:1
cache_features:
  scales: [480, 688]
  flip: false
train_svm:
  C: 1          # an integer is a valid number
detect:
  max_per_image: null
  score_threshold: -1
finetune:
  levels: [4, 2, 1]
""")
    assert config.jobs == 2 and config.val_split is None and config.device == "CUDA:1"
    assert config.cache_features.scales == (480, 688) and config.cache_features.flip is False
    assert config.train_svm.C == 1.0 and isinstance(config.train_svm.C, float)
    assert config.detect.max_per_image is None and config.detect.score_threshold == -1.0
    assert config.finetune.levels == (4, 2, 1)
    # untouched sections keep the declared defaults
    assert config.propose == ProposeOptions()
    assert PipelineConfig().cache_features.scales == PAPER_SCALES


def test_the_example_config_reads_back_as_the_defaults_it_documents() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "pipeline.example.yaml"
    # the example sets jobs: 2 on purpose; every other value it shows is the default
    assert load_config(example) == dataclasses.replace(PipelineConfig(), jobs=2)


def test_config_from_dict_overlays_a_base() -> None:
    base = config_from_dict({"jobs": 3})
    config = config_from_dict({"propose": {"max_boxes": 10}}, base)
    assert config.jobs == 3 and config.propose.max_boxes == 10


def test_coerce_and_check_section_directly() -> None:
    assert coerce([1, 2], tuple[int, ...]) == (1, 2)
    assert coerce(None, int | None) is None
    with pytest.raises(TypeError, match="expected an integer"):
        coerce(True, int)
    with pytest.raises(ConfigError, match=r"f.yaml: section 'propose': key 'min_size': "
                                          r"expected a value >= 0, got -1"):
        check_section(ProposeOptions, {"min_size": -1}, source="f.yaml", section="propose")
