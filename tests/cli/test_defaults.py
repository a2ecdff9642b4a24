"""One source for every default (issue 13, item 4): the options, the pipeline config, the
stages' signatures and the library agree with the declarations in ``stages/params.py``."""

from __future__ import annotations

import dataclasses
import inspect
import re

import click
import pytest

from sppdet.backbones import BACKBONES
from sppdet.backbones.paper_nets import PaperTrunk
from sppdet.classification.config import PretrainConfig
from sppdet.classification.image_svm import train_and_test
from sppdet.cli import cli
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.detector import model as detector_model
from sppdet.detector import tuning
from sppdet.evaluation.voc_ap import METRICS as LIBRARY_METRICS
from sppdet.features.fc_head import LAYERS
from sppdet.ops import nms
from sppdet.proposals import METHODS, default_params
from sppdet.stages import (cache_features, classify, detect, evaluate, pretrain, propose,
                           train_bbox_reg, train_svm, tune_detect)
from sppdet.stages import params as P
from sppdet.stages.pipeline_config import DEMO_PIPELINE, PipelineConfig
from sppdet.stages.training_inputs import finetune_splits
from sppdet.training.finetune.config import FinetuneConfig


def test_choice_lists_are_the_librarys() -> None:
    assert P.BACKBONE_NAMES == tuple(sorted(BACKBONES))
    assert P.PAPER_TRUNKS == tuple(name for name, make in BACKBONES.items()
                                   if isinstance(make, type) and issubclass(make, PaperTrunk))
    assert P.PROPOSAL_METHODS == tuple(METHODS)
    assert P.FEATURE_LAYERS == LAYERS
    assert P.METRICS == tuple(LIBRARY_METRICS)
    assert P.SCORERS == detector_model.SCORERS
    assert P.DEFAULT_SCORE_THRESHOLDS == detector_model.DEFAULT_SCORE_THRESHOLDS
    assert P.NMS_METHODS == nms.NMS_METHODS
    assert P.DEFAULT_SOFT_NMS_SIGMA == nms.DEFAULT_SOFT_NMS_SIGMA
    assert P.DEFAULT_IOU_THRESHOLD == nms.DEFAULT_IOU_THRESHOLD
    assert P.TuneOptions().confidence == tuning.DEFAULT_CONFIDENCE
    assert P.TuneOptions().resamples == tuning.DEFAULT_RESAMPLES
    for name in P.COMPRESSIONS:
        if name != "zstd":  # needs the optional hdf5plugin
            cache_features.compression_options(name)


def test_proposal_defaults_are_the_librarys() -> None:
    options, ss, eb = P.ProposeOptions(), default_params("ss-fast"), default_params("edgeboxes")
    assert (options.max_boxes, options.max_size, options.min_size) == \
        (ss.max_boxes, ss.max_size, ss.min_size)
    assert (options.max_aspect_ratio, options.min_box_area, options.edge_model) == \
        (eb.max_aspect_ratio, eb.min_box_area, eb.edge_model)
    assert eb.max_boxes == ss.max_boxes and eb.max_size == ss.max_size
    # the options a stage is given are exactly the fields of the method's dataclass
    for method in P.PROPOSAL_METHODS:
        given = dataclasses.replace(options, method=method).method_options()
        assert set(given) <= {f.name for f in dataclasses.fields(default_params(method))}


def _signature_defaults(function) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("function, declared", [
    (propose.run, {"method": P.ProposeOptions.method}),
    (cache_features.run, {"scales": P.CacheOptions.scales, "flip": P.CacheOptions.flip,
                          "dtype": P.CacheOptions.dtype,
                          "compression": P.CacheOptions.compression}),
    (train_svm.run, {f.name: getattr(P.SvmOptions(), f.name)
                     for f in dataclasses.fields(P.SvmOptions)}),
    (train_bbox_reg.run, {"min_iou": P.BBoxRegOptions.min_iou,
                          "lambda_": P.BBoxRegOptions.lambda_,
                          "whiten": P.BBoxRegOptions.whiten}),
    # detect's scorer None: the SVMs with the test settings' per-class scorers (explicit
    # svm or softmax scores every class so)
    (detect.run, {f.name: getattr(P.DetectOptions(), f.name)
                  for f in dataclasses.fields(P.DetectOptions) if f.name != "scorer"}),
    (classify.run, {f.name: getattr(P.ClassifyOptions(), f.name)
                    for f in dataclasses.fields(P.ClassifyOptions)}),
    (pretrain.run, {"split": P.TRAIN_SPLIT, "backbone": P.PretrainOptions.backbone,
                    "config": PretrainConfig()}),
    (evaluate.run, {"metric": P.METRICS[0]}),
    (tune_detect.run, {"confidence": P.TuneOptions.confidence,
                       "resamples": P.TuneOptions.resamples,
                       "choose_scorer": P.TuneOptions.choose_scorer}),
    (train_and_test, {"C": P.ImageSvmOptions.C, "normalize": P.ImageSvmOptions.normalize}),
], ids=lambda x: getattr(x, "__module__", "") + "." + getattr(x, "__name__", ""))
def test_stage_signatures_take_the_declared_defaults(function, declared) -> None:
    defaults = _signature_defaults(function)
    for name, value in declared.items():
        assert defaults[name] == value, (function.__module__, name)


def _option_defaults(command_name: str) -> dict[str, object]:
    """Each option's default, as the command receives it (converted by its type)."""
    command = cli.commands[command_name]
    ctx = click.Context(command)
    values = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.default is not None:
            values[param.name] = param.type_cast_value(ctx, param.get_default(ctx))
    return values


def _fields(instance: object, *, skip: tuple[str, ...] = ()) -> dict[str, object]:
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)
            if f.name not in skip}


@pytest.mark.parametrize("command, declared", [
    ("propose", _fields(P.ProposeOptions(), skip=("edge_model",))),
    ("cache-features", {**_fields(P.CacheOptions(), skip=("weights",)),
                        "backbone": P.DEFAULT_BACKBONE}),
    ("train-svm", _fields(P.SvmOptions())),
    ("train-bbox-reg", _fields(P.BBoxRegOptions(), skip=("enabled",))),
    # unset (None) options mean "work it out" (the scorer's threshold, the model's test
    # settings): they have no default to compare
    ("detect", {**_fields(P.DetectOptions(), skip=("score_threshold", "iou_threshold",
                                                   "nms_method", "nms_sigma", "scorer")),
                "bbox_reg": P.BBoxRegOptions.enabled, "split": P.TEST_SPLIT}),
    ("tune-detect", {**_fields(P.DetectOptions(), skip=("score_threshold", "iou_threshold",
                                                        "nms_method", "nms_sigma")),
                     **_fields(P.TuneOptions(), skip=("enabled",)),
                     "bbox_reg": P.BBoxRegOptions.enabled, "metric": P.METRICS[0]}),
    ("finetune", _fields(FinetuneConfig(), skip=(
        "lr_gamma", "momentum", "weight_decay", "bias_lr_mult", "val_images", "levels",
        "fg_iou", "bg_iou_low", "bg_iou_high", "include_gt"))),
    ("pretrain", {**_fields(PretrainConfig(), skip=("momentum", "weight_decay", "lr_factor",
                                                    "lr_drop_epochs")),
                  **_fields(P.PretrainOptions(), skip=("split", "name", "seed", "training")),
                  "split": P.TRAIN_SPLIT}),
    ("classify", {**_fields(P.ClassifyOptions(), skip=("view_scales", "features",
                                                       "feature_size")),
                  "split": P.TEST_SPLIT}),
    ("image-svm", _fields(P.ImageSvmOptions())),
    ("make-demo-data", {"seed": DemoDataConfig().seed, "n_trainval": DemoDataConfig().n_trainval,
                        "n_test": DemoDataConfig().n_test,
                        "n_classes": DemoDataConfig().n_classes,
                        "image_size": (DemoDataConfig().image_width,
                                       DemoDataConfig().image_height)}),
    ("demo", {"n_trainval": DemoDataConfig().n_trainval, "n_test": DemoDataConfig().n_test,
              "iterations": DEMO_PIPELINE.finetune.iterations, "jobs": DEMO_PIPELINE.jobs}),
    ("train-svm", {"split": P.TRAIN_SPLIT}),
    ("propose", {"split": P.TRAIN_SPLIT}),
    ("cache-features", {"split": P.TRAIN_SPLIT}),
])
def test_option_defaults_are_the_declared_ones(command, declared) -> None:
    defaults = _option_defaults(command)
    for name, value in declared.items():
        assert name in defaults, (command, name)
        assert defaults[name] == value, (command, name, defaults[name], value)


def test_the_resolved_disagreements() -> None:
    # cache-features mirrors like the pipeline; fine-tuning trains on mirrored images
    assert P.CacheOptions().flip is True and _option_defaults("cache-features")["flip"] is True
    assert PipelineConfig().cache_features.flip is True and FinetuneConfig().flip is True
    # the pipeline's fine-tuning split and validation split are the command's
    config = PipelineConfig()
    assert (config.finetune_split, config.val_split) == (P.FINETUNE_SPLIT, P.VAL_SPLIT)
    assert config.train_split == _option_defaults("train-svm")["split"] == P.TRAIN_SPLIT


def _dataset(tmp_path, *splits: str):
    root = tmp_path / "_".join(splits or ("none",))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split in splits:
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("a\n")
    return root


def test_finetune_splits_one_rule(tmp_path) -> None:
    both = _dataset(tmp_path, "train", "val", "trainval")
    assert finetune_splits(both) == ("train", "val")
    train_only = _dataset(tmp_path, "train", "trainval")
    assert finetune_splits(train_only) == ("train", None)
    trainval_only = _dataset(tmp_path, "trainval")
    assert finetune_splits(trainval_only) == ("trainval", None)
    assert finetune_splits(trainval_only, fallback="all") == ("all", None)
    assert finetune_splits(both, None, None, fallback="trainval") == ("trainval", None)


def _help_records(command: click.Command):
    """``(option, its default or None, its help record)`` of every option of ``command``."""
    ctx = click.Context(command, info_name=command.name, show_default=True)
    unset = getattr(click.core, "UNSET", None)  # Click >= 8.3: "no default" is not None
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            default = param.get_default(ctx, call=False)
            yield param, None if default is unset else default, param.get_help_record(ctx)


def test_no_help_text_hard_codes_a_default_and_every_default_is_shown() -> None:
    for name, command in cli.commands.items():
        for param, default, (_, text) in _help_records(command):
            assert "[default" not in (param.help or ""), (name, param.name)
            assert not re.search(r"\bdefault:", param.help or ""), (name, param.name)
            shows = isinstance(param.show_default, str) or (
                default is not None and not (param.is_flag and not default
                                             and not param.secondary_opts))
            if shows and param.name != "help":
                assert "[default: " in text, (name, param.name, text)
