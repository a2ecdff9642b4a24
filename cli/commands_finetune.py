"""Command ``finetune``: fc6, fc7 and a new fc8 trained on cached SPP features."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.io.records import read_record
from sppdet.training.finetune.config import INITS, SELECT_BY, FinetuneConfig
from sppdet.stages import finetune
from sppdet.stages.layout import find_features, locate_features, model_dir, proposals_path

from .context import Settings, pass_settings
from .options import (classes_option, dataset_argument, device_option,
                      feature_variant_option, force_option, parse_classes, seed_option)

_DEFAULTS = FinetuneConfig()


def _recorded(path: Path, key: str, made_by: str) -> str:
    """The proposal method or backbone name recorded in an input artifact."""
    params = read_record(path, made_by=made_by).params
    value = params.get(key)
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        raise click.UsageError(f"{path} records no {key}; give the validation file explicitly")
    return value


@click.command("finetune")
@dataset_argument
@click.option("--name", "-n", required=True,
              help="Model name; the output is <work-dir>/models/<name>/fc.pt.")
@click.option("--train-split", default="train", show_default=True,
              help="Split to train on (trainval as in the paper, or train to keep val held "
                   "out).")
@click.option("--val-split", default=None,
              help="Held-out split for validation and checkpoint selection; 'none' for no "
                   "validation (the last iteration is kept). Never the test split.  "
                   "[default: val when the dataset has it]")
@click.option("--method", default="ss-fast", show_default=True,
              help="Proposal method whose artifacts are read (when --proposals is not given).")
@click.option("--proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Proposals artifact of the training split.  [default: "
                                 "<work-dir>/proposals/<dataset>/<train-split>.<method>.h5]")
@click.option("--val-proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Proposals artifact of the validation split.  [default: as "
                                 "for training, with the training file's method]")
@click.option("--backbone", "-b", default="efficientnet_lite0", show_default=True,
              help="Backbone whose cached features are read (when --features is not given).")
@click.option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Features artifact of the training split.  [default: "
                                 "<work-dir>/features/<dataset>/<backbone>/<variant>/"
                                 "<train-split>.h5]")
@feature_variant_option
@click.option("--val-features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Features artifact of the validation split.  [default: the "
                                 "validation split's file in the training file's variant "
                                 "folder]")
@click.option("--iterations", type=click.IntRange(min=1), default=_DEFAULTS.iterations,
              show_default=True, help="Mini-batches (released code: 3 x 30,000).")
@click.option("--hidden", type=click.IntRange(min=1), default=_DEFAULTS.hidden,
              show_default=True, help="Width of fc6 and fc7 (the paper: 4096).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.lr,
              show_default=True, help="Learning rate of the first of --lr-steps equal parts.")
@click.option("--lr-steps", type=click.IntRange(min=1), default=_DEFAULTS.lr_steps,
              show_default=True, help="Equal parts of the iterations; the rate drops 10x at "
                                      "each new part (3: 1e-3, 1e-4, 1e-5).")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size,
              show_default=True, help="Windows per mini-batch.")
@click.option("--fg-fraction", type=click.FloatRange(0.0, 1.0),
              default=_DEFAULTS.fg_fraction, show_default=True,
              help="Share of positive windows (IoU >= 0.5) in a mini-batch.")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True),
              default=_DEFAULTS.dropout, show_default=True, help="Dropout after fc6 and fc7.")
@click.option("--init", type=click.Choice(INITS), default=_DEFAULTS.init, show_default=True,
              help="Initialisation of fc6/fc7: he (std sqrt(2/fan_in)), gaussian (std "
                   "0.005, slow from scratch), or pretrained (the paper's: copy fc6/fc7 from "
                   "the weights file the training features were cached with, which must hold "
                   "them, e.g. `cache-features --backbone zf5 --weights FILE` with a FILE "
                   "from `sppdet pretrain`; --hidden must equal its fc6 width; inputs are "
                   "not scaled).")
@click.option("--scale-inputs/--no-scale-inputs", default=_DEFAULTS.scale_inputs,
              show_default=True,
              help="Scale pooled features by one factor (estimated on training windows, "
                   "folded into fc6 when saving) so their values have an RMS of 1 (always "
                   "off with --init pretrained).")
@click.option("--flip/--no-flip", default=_DEFAULTS.flip, show_default=True,
              help="Train on the mirrored images too, when the cache holds them.")
@click.option("--images-per-chunk", type=click.IntRange(min=1),
              default=_DEFAULTS.images_per_chunk, show_default=True,
              help="Images whose windows feed a chunk of mini-batches.")
@click.option("--iterations-per-chunk", type=click.IntRange(min=1),
              default=_DEFAULTS.iterations_per_chunk, show_default=True,
              help="Mini-batches pooled together (memory: this x batch size x feature size).")
@click.option("--val-every", type=click.IntRange(min=0), default=_DEFAULTS.val_every,
              show_default=True, help="Validate every N iterations (0: only at the end).")
@click.option("--val-windows", type=click.IntRange(min=1), default=_DEFAULTS.val_windows,
              show_default=True, help="Windows in the fixed validation sample.")
@click.option("--select-by", type=click.Choice(SELECT_BY), default=_DEFAULTS.select_by,
              show_default=True, help="Keep the weights with the lowest validation loss, the "
                                      "highest validation accuracy, or the last ones.")
@click.option("--checkpoint-every", type=click.IntRange(min=0),
              default=_DEFAULTS.checkpoint_every, show_default=True,
              help="Save the training state every N iterations (0: never); a rerun resumes.")
@click.option("--log-every", type=click.IntRange(min=1), default=_DEFAULTS.log_every,
              show_default=True, help="Log the training loss every N iterations.")
@device_option
@classes_option
@seed_option
@force_option
@pass_settings
def finetune_command(settings: Settings, dataset: str, name: str, train_split: str,
                     val_split: str | None, method: str, proposals: Path | None,
                     val_proposals: Path | None, backbone: str, features: Path | None,
                     feature_variant: str | None, val_features: Path | None, device: str,
                     classes: str | None, force: bool,
                     **hyper_parameters: object) -> None:
    """Fine-tune fc6, fc7 and a new (K+1)-way fc8 on cached SPP features (paper 4.1).

    Mini-batches of --batch-size windows (--fg-fraction positives, IoU >= 0.5 with a ground
    truth box; negatives IoU in [0.1, 0.5)) drawn across many images, a random cached scale
    per window, mirrored images when cached. SGD with momentum 0.9 and weight decay 5e-4.
    Validation on a held-out split picks the checkpoint. A killed run resumes from its last
    checkpoint when rerun with the same options.
    """
    work = settings.work_dir
    if val_split is None:
        val_split = finetune.default_val_split(dataset)
    elif val_split.lower() == "none":
        val_split = None
    train_proposals = proposals or proposals_path(work, dataset, train_split, method)
    if features is not None and feature_variant is not None:
        raise click.UsageError("give either --features or --feature-variant, not both")
    train_features = features or find_features(work, dataset, train_split, backbone,
                                               feature_variant)
    if val_split is not None:
        if val_proposals is None:
            val_method = _recorded(train_proposals, "method", "propose") if proposals else method
            val_proposals = proposals_path(work, dataset, val_split, val_method)
        if val_features is None:
            # the same variant as the training file when it lies in the layout, else the
            # only cache of the validation split made with the training file's backbone
            located = locate_features(work, dataset, train_features)
            if located is None:
                located = (_recorded(train_features, "backbone", "cache-features"), None)
            val_features = find_features(work, dataset, val_split, *located)
    # every other option is a field of FinetuneConfig, under the same name
    config = FinetuneConfig(**hyper_parameters)  # type: ignore[arg-type]
    out = model_dir(work, name) / finetune.MODEL_FILE
    summary = finetune.run(dataset, out, train_split=train_split,
                           train_proposals=train_proposals, train_features=train_features,
                           val_split=val_split, val_proposals=val_proposals,
                           val_features=val_features, config=config,
                           classes=parse_classes(classes), device=device, force=force)
    click.echo(summary.to_text())


COMMANDS = [finetune_command]
