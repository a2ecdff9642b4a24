"""Command ``detect``: on a dataset split (artifact + VOC result files) or on image files."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.io.item_store import parse_shard
from sppdet.stages import detect
from sppdet.stages.layout import (detections_path, features_dir, find_features, model_dir,
                                  proposals_path)
from sppdet.stages.training_inputs import backbone_name, fc_backbone

from .commands_features import parse_scales
from .context import Settings, pass_settings
from .options import (classes_option, device_option, feature_variant_option, force_option,
                      on_error_option, parse_classes, shard_option)


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--name", "-n", required=True, help="Model name (<work-dir>/models/<name>/).")
@click.option("--split", "-s", default="test", show_default=True,
              help="Split of DATASET to detect (dataset mode).")
@click.option("--scorer", type=click.Choice(list(detect.SCORERS)), default="svm",
              show_default=True, help="Per-class SVMs on fc7 (the paper) or the fine-tuned "
                                      "fc8 softmax.")
@click.option("--bbox-reg/--no-bbox-reg", default=True, show_default=True,
              help="Apply the box regressors (bbox_reg.npz).")
@click.option("--iou-threshold", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Per-class NMS: suppress a window whose IoU with a better one is above this.")
@click.option("--score-threshold", type=float, default=None,
              help="Keep windows scoring above this.  [default: -1.5 for SVM scores, 0.001 "
                   "for softmax]")
@click.option("--max-per-image", type=click.IntRange(min=0), default=100, show_default=True,
              help="At most this many detections per image (0: no limit).")
@click.option("--method", default="ss-fast", show_default=True,
              help="Proposal method: whose artifact is read (dataset mode) or what runs on "
                   "image files.")
@click.option("--proposals", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Proposals artifact.  [default: <work-dir>/proposals/<dataset>/<split>."
                   "<method>.h5]")
@click.option("--features", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Feature cache.  [default: <work-dir>/features/<dataset>/<backbone>/"
                   "<variant>/<split>.h5; conv5 computed on the fly when the split has no "
                   "cache]")
@feature_variant_option
@click.option("--scales", default=None, help="Scales for on-the-fly conv5.  [default: the "
                                             "fine-tuning's]")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Dataset mode: the detections artifact [default: <work-dir>/detections/"
                   "<name>/<dataset>/<split>.h5]. Image mode: folder for the drawn images "
                   "[default: <work-dir>/detections/<name>/images].")
@click.option("--draw-threshold", type=float, default=None,
              help="Image mode: draw detections scoring above this.  [default: 0 for SVM "
                   "scores, 0.5 for softmax]")
@click.option("--fc", "fc_mode", type=click.Choice(list(detect.FC_MODES)),
              default=detect.DEFAULT_FC, show_default=True,
              help="fc layers to score windows with: the trained float32 ones, their truncated "
                   "SVD (faster, approximate) or int8 weights (CPU only, faster, approximate).")
@click.option("--svd-energy", type=click.FloatRange(0, 1, min_open=True),
              default=detect.DEFAULT_SVD_ENERGY, show_default=True,
              help="With --fc svd: keep the smallest rank retaining this fraction of the "
                   "squared singular values of fc6 and fc7.")
@classes_option
@device_option
@shard_option
@on_error_option
@force_option
@pass_settings
def detect_command(settings: Settings, inputs: tuple[Path, ...], name: str, split: str,
                   scorer: str, bbox_reg: bool, iou_threshold: float,
                   score_threshold: float | None, max_per_image: int, method: str,
                   proposals: Path | None, features: Path | None,
                   feature_variant: str | None, scales: str | None,
                   out: Path | None, draw_threshold: float | None, fc_mode: str,
                   svd_energy: float, classes: str | None,
                   device: str, shard: str | None, on_error: str, force: bool) -> None:
    """Detect objects with a trained model.

    INPUTS is either one VOC-layout DATASET folder (every image of --split is detected; the
    result is a detections artifact plus VOC comp4 result files), or image files (proposals
    and conv5 are computed on the fly and the detections are drawn on the images).
    """
    models = model_dir(settings.work_dir, name)
    cap = max_per_image or None
    parsed_scales = parse_scales(scales) if scales else None
    if len(inputs) == 1 and inputs[0].is_dir():
        dataset = inputs[0]
        proposals = proposals or proposals_path(settings.work_dir, dataset, split, method)
        if features is not None and feature_variant is not None:
            raise click.UsageError("give either --features or --feature-variant, not both")
        if features is None:
            backbone = str(backbone_name(fc_backbone(models / "fc.pt")))
            cached = features_dir(settings.work_dir, dataset, backbone).glob(f"*/{split}.h5")
            if feature_variant is None and next(cached, None) is None:
                features = None  # no cache of the split: conv5 on the fly
            else:
                features = find_features(settings.work_dir, dataset, split, backbone,
                                         feature_variant)
        out = out or detections_path(settings.work_dir, name, dataset, split)
        summary = detect.run(dataset, split, out, model_dir=models, proposals=proposals,
                             features=features, scorer=scorer, use_bbox_reg=bbox_reg,
                             iou_threshold=iou_threshold, score_threshold=score_threshold,
                             max_per_image=cap, scales=parsed_scales, device=device,
                             classes=parse_classes(classes), shard=parse_shard(shard),
                             on_error=on_error, force=force, fc=fc_mode,
                             svd_energy=svd_energy)
        click.echo(summary.to_text())
        return
    folders = [p for p in inputs if p.is_dir()]
    if folders:
        raise click.UsageError(f"give one dataset folder or image files, not a mix "
                               f"({folders[0]} is a folder)")
    out = out or settings.work_dir / "detections" / name / "images"
    results = detect.run_images(list(inputs), model_dir=models, out_dir=out, method=method,
                                scorer=scorer, use_bbox_reg=bbox_reg,
                                iou_threshold=iou_threshold, score_threshold=score_threshold,
                                max_per_image=cap, scales=parsed_scales, device=device,
                                draw_threshold=draw_threshold, fc=fc_mode,
                                svd_energy=svd_energy)
    for result in results:
        click.echo(f"{result.path}: {len(result.detections)} detections -> {result.drawn}")
    click.echo(f"Detections listed in {out / 'detections.json'}")


COMMANDS = [detect_command]
