"""Commands about detections: ``eval`` (VOC average precision), ``export-coco`` (COCO JSON) and
``combine`` (paper 4.4)."""

from __future__ import annotations

from pathlib import Path

import click

from sppdet.stages.params import METRICS

from .context import Settings, pass_settings
from .options import Option, classes_option, dataset_argument, parse_classes, split_option
from .remedies import summary_text


@click.command("eval")
@dataset_argument
@click.argument("detections", type=click.Path(exists=True, path_type=Path))
@split_option("test", help_text="The split evaluated; the detections must have been made on it.")
@classes_option
@click.option("--voc2007", is_flag=True,
              help="The official VOC2007 protocol: 11-point interpolated AP (the default metric).")
@click.option("--metric", type=click.Choice(METRICS), default=None, cls=Option,
              show_default=METRICS[0],
              help="AP metric: 11point (VOC2007) or area (VOC2010 and later, area under the "
                   "interpolated PR curve).")
@click.option("--iou-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              help="Overlap that counts as a match (inclusive, as in the devkit).")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Report folder.", cls=Option,
              show_default="<work-dir>/eval/<model>/<dataset-tag>/<split>/; for comp4 input "
                           "the folder's name is the model")
@click.option("--write-comp4", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Also write the detections as comp4_det_<split>_<class>.txt "
                                  "files to DIR, for the official devkit.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write precision/recall curves, analysis figures and the gallery (PNG).")
@click.option("--analysis/--no-analysis", default=False, show_default=True,
              help="Type every false positive (Hoiem et al. 2012: localization, similar class, "
                   "other class, background): analysis.json, the types against the number of "
                   "detections, AP without each type, and each class's top false positives "
                   "drawn on their images.")
@click.option("--coco/--no-coco", default=False, show_default=True,
              help="Also COCO metrics (AP@[.5:.95], AP50, AP75, APs/m/l) with pycocotools "
                   "(the 'coco' extra), and coco_gt.json, coco_detections.json.")
@click.option("--gallery", type=click.IntRange(min=0), default=8, show_default=True,
              help="Images with their detections drawn in report.html (needs JPEGImages/).")
@click.option("--force", is_flag=True, default=False,
              help="Evaluate even detections made on another dataset, split or class list "
                   "(classes matched by name; detections on other images left out, with "
                   "warnings), and rebuild an up-to-date report.")
@pass_settings
def eval_command(settings: Settings, dataset: str, detections: Path, split: str,
                 classes: str | None, voc2007: bool, metric: str | None, iou_threshold: float,
                 out_dir: Path | None, write_comp4: Path | None, plots: bool, analysis: bool,
                 coco: bool, gallery: int, force: bool) -> None:
    """Average precision of DETECTIONS on a split of DATASET, with the VOC devkit's rules.

    DETECTIONS is a detections file made by `sppdet detect` or `sppdet combine`, or a folder
    of VOC result files comp4_det_<split>_<class>.txt from any tool (1-based boxes; a missing
    class file counts as no detections, with a warning). DATASET needs only Annotations/ and
    ImageSets/Main/<split>.txt, as for the devkit; images are used for the pictures. Prints
    the per-class AP table (as in the paper's table 11) and the protocol, and writes
    report.json, report.md, report.html and PR curves. Detections made on another dataset,
    split or class list are refused unless --force.
    """
    if voc2007 and metric not in (None, "11point"):
        raise click.UsageError("--voc2007 is the 11-point metric; it cannot be combined with "
                               f"--metric {metric}")
    from sppdet.stages import evaluate

    if out_dir is None:
        out_dir = evaluate.default_out_dir(settings.work_dir, dataset, split, detections)
    summary = evaluate.run(dataset, split, detections, out_dir, metric=metric or "11point",
                           iou_threshold=iou_threshold, classes=parse_classes(classes),
                           write_comp4=write_comp4, plots=plots, analysis=analysis, coco=coco,
                           gallery=gallery, force=force)
    click.echo(summary_text(summary))


@click.command("export-coco")
@dataset_argument
@click.argument("detections", required=False,
                type=click.Path(exists=True, path_type=Path))
@split_option("test", help_text="The split exported.")
@classes_option
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Output folder.", cls=Option,
              show_default="<work-dir>/coco/<dataset-tag>/")
@click.option("--force", is_flag=True, default=False,
              help="Export even detections made on another dataset, split or class list.")
@pass_settings
def export_coco_command(settings: Settings, dataset: str, detections: Path | None, split: str,
                        classes: str | None, out_dir: Path | None, force: bool) -> None:
    """Write a split of DATASET, and optionally DETECTIONS, as COCO JSON.

    Writes <split>_gt.json (COCO instances: categories 1..K in class order, images 1..N in
    split order with their VOC id as voc_id, difficult objects as crowd regions) and, given
    DETECTIONS (a detections file or a folder of comp4 files), <split>_detections.json (a
    COCO results list). Boxes: VOC's 1-based inclusive xmin..xmax become COCO's 0-based
    [x, y, w, h] with x = xmin - 1 and w = xmax - xmin + 1.
    """
    from sppdet.stages import evaluate
    from sppdet.stages.layout import dataset_tag

    if out_dir is None:
        out_dir = settings.work_dir / "coco" / dataset_tag(dataset)
    summary = evaluate.export_coco(dataset, split, out_dir, detections=detections,
                                   classes=parse_classes(classes), force=force)
    click.echo(summary_text(summary))


@click.command("combine")
@click.argument("detections", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", "-n", required=True,
              help="Name of the combined model; the output is <work-dir>/detections/<name>/"
                   "<dataset-tag>/<split>.h5.")
@click.option("--iou-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="NMS on the pooled windows suppresses a window whose IoU with a kept, more "
                   "confident window of its class is greater.",
              cls=Option, show_default="the inputs' setting")
@click.option("--score-threshold", type=float, default=None,
              help="Keep pooled windows scoring above this (windows under the inputs' own "
                   "threshold were never stored).",
              cls=Option, show_default="the inputs' setting")
@click.option("--max-per-image", type=click.IntRange(min=0), default=None,
              help="At most this many detections per image, 0 for no limit.",
              cls=Option, show_default="the inputs' setting")
@click.option("--force", is_flag=True, default=False,
              help="Rebuild even if up to date (and discard a partial run), and accept inputs "
                   "whose own inputs changed since they were made.")
@pass_settings
def combine_command(settings: Settings, detections: tuple[Path, ...], name: str,
                    iou_threshold: float | None, score_threshold: float | None,
                    max_per_image: int | None, force: bool) -> None:
    """Combine the detections of two or more models (paper section 4.4).

    For each image, the scored windows of all DETECTIONS files (before their NMS) are pooled
    and per-class NMS runs on the union, so a more confident window of one model suppresses
    the overlapping windows of another. The models' scores must be on one scale (e.g. SVM
    scores of two networks trained the same way). On equal scores the model listed first wins.
    All inputs must be detections of the same dataset split with the same classes.
    """
    if len(detections) < 2:
        raise click.UsageError("give at least two detections files to combine")
    from sppdet.stages import combine

    out = combine.output_path(settings.work_dir, name, detections)
    summary = combine.run(detections, out, name=name, iou_threshold=iou_threshold,
                          score_threshold=score_threshold,
                          max_per_image=max_per_image or None, no_limit=max_per_image == 0,
                          force=force)
    click.echo(summary_text(summary))


COMMANDS = [eval_command, export_coco_command, combine_command]
