"""Commands that train the detector's last stages: ``train-svm`` and ``train-bbox-reg``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sppdet.stages.params import TRAIN_SPLIT, BBoxRegOptions, ProposeOptions, SvmOptions

from .context import Settings, pass_settings
from .options import (backbone_choice, dask_option, dataset_argument, device_option, exclusive,
                      feature_variant_option, force_option, jobs_option, method_choice, option,
                      param_option, seed_option, split_option)
from .remedies import summary_text

F = TypeVar("F", bound=Callable[..., Any])


def _input_options(func: F) -> F:
    """--proposals/--method and --features/--backbone/--feature-variant, shared by both."""
    options = [
        option("--proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path),
               default=None,
               show_default="<work-dir>/proposals/<dataset-tag>/<split>.<method>.h5",
               help="Proposals artifact."),
        option("--method", type=method_choice(), default=None,
               show_default=ProposeOptions.method,
               help="Proposal method of the default proposals artifact."),
        option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
               default=None,
               show_default="<work-dir>/features/<dataset-tag>/<backbone>/<variant>/"
                            "<split>.h5",
               help="conv5 features artifact (from `sppdet cache-features`)."),
        option("--backbone", "-b", type=backbone_choice(), default=None,
               show_default="the one the fc checkpoint was fine-tuned on",
               help="Backbone of the default features artifact."),
        feature_variant_option,
    ]
    for decorate in reversed(options):
        func = decorate(func)
    return func


def _check_inputs(proposals: Path | None, method: str | None, features: Path | None,
                  backbone: str | None, feature_variant: str | None) -> None:
    exclusive(proposals=proposals, method=method)
    exclusive(features=features, backbone=backbone)
    exclusive(features=features, feature_variant=feature_variant)


@click.command("train-svm")
@dataset_argument
@split_option(TRAIN_SPLIT, help_text="Training split (ImageSets/Main/<split>.txt).")
@option("--name", "-n", required=True,
        help="Model name; the output is <work-dir>/models/<name>/svm.npz.")
@param_option(SvmOptions, "layer", "--layer",
              help="Features the SVMs are trained on: fc7 or fc6 of the fine-tuned fc layers "
                   "(needs the fc checkpoint), or pool5 (the SPP vector, no fc layers).")
@_input_options
@option("--fc", "fc_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
        show_default="<work-dir>/models/<name>/fc.pt",
        help="Fine-tuned fc checkpoint (fc6/fc7 only).")
@jobs_option
@dask_option
@seed_option
@param_option(SvmOptions, "C", "--C", help="SVM cost of each negative's hinge loss "
                                           "(liblinear -c).")
@param_option(SvmOptions, "positive_weight", "--positive-weight",
              help="Extra loss weight of positives (liblinear -w1).")
@param_option(SvmOptions, "bias_feature", "--bias-feature",
              help="Value of the constant bias feature, whose weight is regularised "
                   "(liblinear -B).")
@param_option(SvmOptions, "include_difficult", "--include-difficult/--no-include-difficult",
              help="Train on ground-truth boxes marked difficult too (the released code "
                   "does).")
@param_option(SvmOptions, "max_cached_negatives", "--max-cached-negatives",
              help="Cap of each class's cache of hard negatives; when full, the easiest are "
                   "dropped (with a warning). Memory: up to classes x cap x D x 4 bytes.")
@device_option
@force_option
@pass_settings
def train_svm_command(settings: Settings, dataset: str, split: str, name: str, layer: str,
                      proposals: Path | None, method: str | None, features: Path | None,
                      backbone: str | None, feature_variant: str | None,
                      fc_path: Path | None, jobs: int, dask: str | None, seed: int,
                      C: float, positive_weight: float, bias_feature: float,
                      include_difficult: bool, max_cached_negatives: int, device: str,
                      force: bool) -> None:
    """Train one linear SVM per class with hard-negative mining (R-CNN's recipe).

    Positives are the ground-truth boxes of the class; negatives are proposals with IoU < 0.3
    to every box of the class (windows with the same feature-map footprint kept once), mined
    in one pass over the images (hard: score > -1.0001; retrain after 2,000 new ones; evict
    those below -1.2). Features: SPP at each window's best scale, then --layer, scaled to a
    mean norm of 20. A class without positives gets no SVM (and no detections).
    """
    _check_inputs(proposals, method, features, backbone, feature_variant)
    from sppdet.parallel.dask_cluster import open_executor
    from sppdet.stages import train_svm
    from sppdet.stages.layout import model_dir
    from sppdet.stages.training_inputs import resolve_paths

    paths = resolve_paths(settings.work_dir, dataset, split, name, method=method,
                          proposals=proposals, features=features, backbone=backbone,
                          variant=feature_variant, fc=fc_path, needs_fc=layer != "pool5")
    out = model_dir(settings.work_dir, name) / train_svm.OUTPUT_NAME
    with open_executor(dask, jobs=jobs) as executor:
        summary = train_svm.run(dataset, split, out, proposals=paths.proposals,
                                features=paths.features, fc=paths.fc, layer=layer, jobs=jobs,
                                seed=seed, C=C, positive_weight=positive_weight,
                                bias_feature=bias_feature, include_difficult=include_difficult,
                                max_cached_negatives=max_cached_negatives, device=device,
                                force=force, executor=executor)
    click.echo(summary_text(summary))


@click.command("train-bbox-reg")
@dataset_argument
@split_option(TRAIN_SPLIT, help_text="Training split (ImageSets/Main/<split>.txt).")
@option("--name", "-n", required=True,
        help="Model name; the output is <work-dir>/models/<name>/bbox_reg.npz.")
@_input_options
@param_option(BBoxRegOptions, "min_iou", "--min-iou",
              help="A window trains the regressor if its IoU with its best-matching ground "
                   "truth is above this (SPP-net 0.5, R-CNN 0.6).")
@param_option(BBoxRegOptions, "lambda_", "--lambda", "lambda_",
              help="Ridge penalty (SPP-net 4000, R-CNN 1000).")
@param_option(BBoxRegOptions, "whiten", "--whiten/--no-whiten",
              help="Centre and scale the regression targets per class (the released code "
                   "does).")
@seed_option
@device_option
@force_option
@pass_settings
def train_bbox_reg_command(settings: Settings, dataset: str, split: str, name: str,
                           proposals: Path | None, method: str | None, features: Path | None,
                           backbone: str | None, feature_variant: str | None,
                           min_iou: float, lambda_: float, whiten: bool,
                           seed: int, device: str, force: bool) -> None:
    """Train one ridge box regressor per class on pool5 (SPP) features (R-CNN appendix C).

    Training windows are the proposals and ground-truth boxes whose best-matching ground
    truth overlaps them by more than --min-iou; features are SPP at the window's best scale,
    scaled to a mean norm of 20. A class without training windows keeps its boxes as they are.
    """
    _check_inputs(proposals, method, features, backbone, feature_variant)
    from sppdet.stages import train_bbox_reg
    from sppdet.stages.layout import model_dir
    from sppdet.stages.training_inputs import resolve_paths

    paths = resolve_paths(settings.work_dir, dataset, split, name, method=method,
                          proposals=proposals, features=features, backbone=backbone,
                          variant=feature_variant, needs_fc=False)
    out = model_dir(settings.work_dir, name) / train_bbox_reg.OUTPUT_NAME
    summary = train_bbox_reg.run(dataset, split, out, proposals=paths.proposals,
                                 features=paths.features, min_iou=min_iou, lambda_=lambda_,
                                 whiten=whiten, seed=seed, device=device, force=force)
    click.echo(summary_text(summary))


COMMANDS = [train_svm_command, train_bbox_reg_command]
