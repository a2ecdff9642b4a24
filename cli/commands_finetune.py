"""Command ``finetune``: fc6, fc7 and a new fc8 trained on cached SPP features."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.stages.params import (DEFAULT_BACKBONE, FINETUNE_SPLIT, TRAIN_SPLIT, VAL_SPLIT,
                                  ProposeOptions)
from sppdet.training.finetune.config import INITS, SELECT_BY, FinetuneConfig

from .context import Settings, pass_settings
from .options import (backbone_choice, classes_option, dataset_argument, device_option, exclusive,
                      feature_variant_option, force_option, method_choice, option, parse_classes,
                      seed_option)
from .remedies import summary_text

_DEFAULTS = FinetuneConfig()


@click.command("finetune")
@dataset_argument
@option("--name", "-n", required=True,
        help="Model name; the output is <work-dir>/models/<name>/fc.pt.")
@option("--train-split", default=None,
        show_default=f"{FINETUNE_SPLIT} when the dataset has it, else {TRAIN_SPLIT} "
                     "(then without validation)",
        help="Split to train on (trainval as in the paper, or train to keep val held "
             "out).")
@option("--val-split", default=None,
        show_default=f"{VAL_SPLIT} when the dataset has it",
        help="Held-out split for validation and checkpoint selection; 'none' for no "
             "validation (the last iteration is kept). Never the test split.")
@option("--method", type=method_choice(), default=None,
        show_default=ProposeOptions.method,
        help="Proposal method whose artifacts are read (when --proposals is not given).")
@option("--proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        show_default="<work-dir>/proposals/<dataset-tag>/<train-split>.<method>.h5",
        help="Proposals artifact of the training split.")
@option("--val-proposals", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None, show_default="as for training, with the training file's method",
        help="Proposals artifact of the validation split.")
@option("--backbone", "-b", type=backbone_choice(), default=None,
        show_default=DEFAULT_BACKBONE,
        help="Backbone whose cached features are read (when --features is not given).")
@option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        show_default="<work-dir>/features/<dataset-tag>/<backbone>/<variant>/"
                     "<train-split>.h5",
        help="Features artifact of the training split.")
@feature_variant_option
@option("--val-features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        show_default="the validation split's file in the training file's variant folder",
        help="Features artifact of the validation split.")
@option("--iterations", type=click.IntRange(min=1), default=_DEFAULTS.iterations,
        show_default=True, help="Mini-batches (released code: 3 x 30,000).")
@option("--hidden", type=click.IntRange(min=1), default=_DEFAULTS.hidden,
        show_default=True, help="Width of fc6 and fc7 (the paper: 4096).")
@option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.lr,
        show_default=True, help="Learning rate of the first of --lr-steps equal parts.")
@option("--lr-steps", type=click.IntRange(min=1), default=_DEFAULTS.lr_steps,
        show_default=True, help="Equal parts of the iterations; the rate drops 10x at "
                                "each new part (3: 1e-3, 1e-4, 1e-5).")
@option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size,
        show_default=True, help="Windows per mini-batch.")
@option("--fg-fraction", type=click.FloatRange(0.0, 1.0),
        default=_DEFAULTS.fg_fraction, show_default=True,
        help="Share of positive windows (IoU >= 0.5) in a mini-batch.")
@option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True),
        default=_DEFAULTS.dropout, show_default=True, help="Dropout after fc6 and fc7.")
@option("--init", type=click.Choice(INITS), default=_DEFAULTS.init, show_default=True,
        help="Initialisation of fc6/fc7: he (std sqrt(2/fan_in)), gaussian (std "
             "0.005, slow from scratch), or pretrained (the paper's: copy fc6/fc7 from "
             "the weights file the training features were cached with, which must hold "
             "them, e.g. `cache-features --backbone zf5 --weights FILE` with a FILE "
             "from `sppdet pretrain`; --hidden must equal its fc6 width; inputs are "
             "not scaled).")
@option("--scale-inputs/--no-scale-inputs", default=_DEFAULTS.scale_inputs,
        show_default=True,
        help="Scale pooled features by one factor (estimated on training windows, "
             "folded into fc6 when saving) so their values have an RMS of 1 (always "
             "off with --init pretrained).")
@option("--flip/--no-flip", default=_DEFAULTS.flip, show_default=True,
        help="Train on the mirrored images too, when the cache holds them.")
@option("--images-per-chunk", type=click.IntRange(min=1),
        default=_DEFAULTS.images_per_chunk, show_default=True,
        help="Images whose windows feed a chunk of mini-batches.")
@option("--iterations-per-chunk", type=click.IntRange(min=1),
        default=_DEFAULTS.iterations_per_chunk, show_default=True,
        help="Mini-batches pooled together (memory: this x batch size x feature size).")
@option("--val-every", type=click.IntRange(min=0), default=_DEFAULTS.val_every,
        show_default=True, help="Validate every N iterations (0: only at the end).")
@option("--val-windows", type=click.IntRange(min=1), default=_DEFAULTS.val_windows,
        show_default=True, help="Windows in the fixed validation sample.")
@option("--select-by", type=click.Choice(SELECT_BY), default=_DEFAULTS.select_by,
        show_default=True, help="Keep the weights with the lowest validation loss, the "
                                "highest validation accuracy, or the last ones.")
@option("--checkpoint-every", type=click.IntRange(min=0),
        default=_DEFAULTS.checkpoint_every, show_default=True,
        help="Save the training state every N iterations (0: never); a rerun resumes.")
@option("--log-every", type=click.IntRange(min=1), default=_DEFAULTS.log_every,
        show_default=True, help="Log the training loss every N iterations.")
@device_option
@classes_option
@seed_option
@force_option
@pass_settings
def finetune_command(settings: Settings, dataset: str, name: str, train_split: str | None,
                     val_split: str | None, method: str | None, proposals: Path | None,
                     val_proposals: Path | None, backbone: str | None, features: Path | None,
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
    exclusive(proposals=proposals, method=method)
    exclusive(features=features, backbone=backbone)
    exclusive(features=features, feature_variant=feature_variant)
    validate = val_split is None or val_split.lower() != "none"
    from sppdet.stages import finetune
    from sppdet.stages.layout import model_dir
    from sppdet.stages.training_inputs import finetune_inputs

    inputs = finetune_inputs(settings.work_dir, dataset, train_split=train_split,
                             val_split=val_split if validate else None, validate=validate,
                             method=method, proposals=proposals, val_proposals=val_proposals,
                             backbone=backbone, features=features, variant=feature_variant,
                             val_features=val_features, default_backbone=DEFAULT_BACKBONE)
    # every other option is a field of FinetuneConfig, under the same name
    config = FinetuneConfig(**hyper_parameters)  # type: ignore[arg-type]
    out = model_dir(settings.work_dir, name) / finetune.MODEL_FILE
    summary = finetune.run(dataset, out, train_split=inputs.train_split,
                           train_proposals=inputs.train_proposals,
                           train_features=inputs.train_features, val_split=inputs.val_split,
                           val_proposals=inputs.val_proposals,
                           val_features=inputs.val_features, config=config,
                           classes=parse_classes(classes), device=device, force=force)
    click.echo(summary_text(summary))


COMMANDS = [finetune_command]
