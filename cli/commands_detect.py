"""Commands ``detect`` (on a dataset split: artifact + VOC result files; or on image files) and
``tune-detect`` (the model's test settings, chosen on the validation split)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from sppdet.stages.params import (DEFAULT_DETECT_FC, DEFAULT_IOU_THRESHOLD,
                                  DEFAULT_NMS_METHOD, DEFAULT_SOFT_NMS_SIGMA, DEFAULT_SVD_ENERGY,
                                  DETECT_FC_MODES, DEFAULT_DRAW_THRESHOLDS,
                                  DEFAULT_SCORE_THRESHOLDS, IMPORT_METHOD, METRICS, TEST_SPLIT,
                                  DetectOptions, ProposeOptions, TuneOptions)

from .context import Settings, pass_settings
from .options import (IntListType, classes_option, dask_option, device_option, exclusive,
                      feature_variant_option, force_option, jobs_option, method_choice,
                      on_error_option, option, param_option, parse_classes, shard_option)
from .remedies import summary_text
from .scaleout import run_maybe_ranked


def _per_scorer(values: dict[str, float]) -> str:
    return ", ".join(f"{value:g} for {scorer}" for scorer, value in values.items())


def _tuned(value: object) -> str:
    return f"the model's test_settings.json, else {value}"


_NMS_OVERRIDE = (" Giving any of --nms, --iou-threshold, --nms-sigma applies them to every "
                 "class instead of the model's test settings (tune-detect).")


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@option("--name", "-n", required=True, help="Model name (<work-dir>/models/<name>/).")
@option("--split", "-s", default=TEST_SPLIT, show_default=True,
        help="Split of DATASET to detect (dataset mode).")
@param_option(DetectOptions, "scorer", "--scorer", default=None,
              show_default="the SVMs, with the fc8 softmax (as log-odds) for the classes "
                           "whose test settings chose it",
              help="Per-class SVMs on fc7 (the paper) or the fine-tuned fc8 softmax, for every "
                   "class (test settings that chose per-class scorers are then not used).")
@option("--bbox-reg/--no-bbox-reg", default=True, show_default=True,
        help="Apply the box regressors (bbox_reg.npz).")
@param_option(DetectOptions, "iou_threshold", "--iou-threshold",
              show_default=_tuned(DEFAULT_IOU_THRESHOLD),
              help="Per-class NMS: suppress a window whose IoU with a better one is above "
                   "this.")
@param_option(DetectOptions, "nms_method", "--nms", show_default=_tuned(DEFAULT_NMS_METHOD),
              help="Hard NMS, or Soft-NMS (Bodla et al. 2017) that lowers the scores of "
                   "overlapping windows instead of removing them: linear (1 - IoU above "
                   "--iou-threshold) or gaussian." + _NMS_OVERRIDE)
@param_option(DetectOptions, "nms_sigma", "--nms-sigma",
              show_default=_tuned(DEFAULT_SOFT_NMS_SIGMA),
              help="Gaussian Soft-NMS: the part of a score above the score threshold is "
                   "multiplied by exp(-IoU^2 / sigma).")
@param_option(DetectOptions, "score_threshold", "--score-threshold", type=float,
              show_default=_per_scorer(DEFAULT_SCORE_THRESHOLDS),
              help="Keep windows scoring above this. With per-class scorers from the test "
                   "settings it applies to every class in that class's units (SVM score, or "
                   "log-odds of the softmax; default there -1.5 and -6.9). Image files: "
                   "given, it replaces the per-class operating points of the model's test "
                   "settings.")
@param_option(DetectOptions, "max_per_image", "--max-per-image", type=click.IntRange(min=0),
              help="At most this many detections per image (0: no limit).")
@option("--method", type=method_choice(), default=None,
        show_default=f"the method the model was trained on, else {ProposeOptions.method}",
        help="Proposal method: whose artifact is read (dataset mode) or what runs on "
             "image files.")
@option("--proposals", type=click.Path(dir_okay=False, path_type=Path), default=None,
        show_default="<work-dir>/proposals/<dataset-tag>/<split>.<method>.h5",
        help="Proposals artifact (dataset mode).")
@option("--features", type=click.Path(dir_okay=False, path_type=Path), default=None,
        show_default="<work-dir>/features/<dataset-tag>/<backbone>/<variant>/<split>.h5; "
                     "conv5 computed on the fly when the split has no cache",
        help="Feature cache (dataset mode).")
@feature_variant_option
@option("--scales", type=IntListType("scale", min=1), default=None,
        show_default="the fine-tuning's", help="Scales for on-the-fly conv5.")
@option("--out", type=click.Path(path_type=Path), default=None,
        show_default="dataset mode: <work-dir>/detections/<name>/<dataset-tag>/"
                     "<split>.h5; image mode: <work-dir>/detections/<name>/images",
        help="Dataset mode: the detections artifact. Image mode: folder for the drawn "
             "images.")
@option("--draw-threshold", type=float, default=None,
        show_default="each class's operating point from the model's test_settings.json, "
                     "else " + _per_scorer(DEFAULT_DRAW_THRESHOLDS),
        help="Image mode: draw detections scoring above this.")
@option("--fc", "fc_mode", type=click.Choice(list(DETECT_FC_MODES)), default=DEFAULT_DETECT_FC,
        show_default=True,
        help="fc layers to score windows with: auto = int8 on the CPU and float32 on a GPU; "
             "float = the trained float32 ones; svd = their truncated SVD (approximate); "
             "int8 = int8 weights (CPU only; about 0.6x the fc time of float32, within 0.3 "
             "mAP on the demo and BCCD).")
@option("--svd-energy", type=click.FloatRange(0, 1, min_open=True),
        default=DEFAULT_SVD_ENERGY, show_default=True,
        help="With --fc svd: keep the smallest rank retaining this fraction of the squared "
             "singular values of fc6 and fc7.")
@classes_option
@device_option
@jobs_option
@dask_option
@shard_option
@on_error_option
@force_option
@pass_settings
def detect_command(settings: Settings, inputs: tuple[Path, ...], name: str, split: str,
                   scorer: str | None, bbox_reg: bool, iou_threshold: float | None,
                   nms_method: str | None, nms_sigma: float | None,
                   score_threshold: float | None, max_per_image: int,
                   method: str | None,
                   proposals: Path | None, features: Path | None,
                   feature_variant: str | None, scales: tuple[int, ...] | None,
                   out: Path | None, draw_threshold: float | None, fc_mode: str,
                   svd_energy: float, classes: str | None, device: str, jobs: int,
                   dask: str | None, shard: tuple[int, int] | None, on_error: str,
                   force: bool) -> None:
    """Detect objects with a trained model.

    INPUTS is either one VOC-layout DATASET folder (every image of --split is detected; the
    result is a detections artifact plus VOC comp4 result files), or image files (proposals
    and conv5 are computed on the fly and the detections are drawn on the images).

    When the model has test settings (`sppdet tune-detect`, run by the pipeline), its
    per-class NMS (and per-class scorer: SVM, or the fc8 softmax as log-odds) is used unless
    an NMS option or --scorer is given, and on image files only the detections at each
    class's operating point are drawn and listed.
    """
    cap = max_per_image or None
    if len(inputs) == 1 and inputs[0].is_dir():
        exclusive(proposals=proposals, method=method)
        exclusive(features=features, feature_variant=feature_variant)
        from sppdet.stages import detect
        from sppdet.stages.layout import detections_path, model_dir
        from sppdet.stages.training_inputs import detect_inputs

        dataset = inputs[0]
        proposals, features = detect_inputs(settings.work_dir, dataset, split, name,
                                            method=method, proposals=proposals,
                                            features=features, variant=feature_variant)
        out = out or detections_path(settings.work_dir, name, dataset, split)
        from sppdet.parallel.dask_cluster import open_executor

        with open_executor(dask, jobs=jobs) as executor:
            run = functools.partial(
                detect.run, dataset, split, out, model_dir=model_dir(settings.work_dir, name),
                proposals=proposals, features=features, scorer=scorer,
                use_bbox_reg=bbox_reg, iou_threshold=iou_threshold,
                score_threshold=score_threshold, max_per_image=cap, scales=scales,
                classes=parse_classes(classes), on_error=on_error, force=force, jobs=jobs,
                executor=executor, fc=fc_mode, svd_energy=svd_energy, nms_method=nms_method,
                nms_sigma=nms_sigma)
            summary = run_maybe_ranked(run, shard=shard, device=device,
                                       sums=("computed", "resumed"))
        if summary is not None:
            click.echo(summary_text(summary))
        return
    if dask is not None or jobs > 1:
        raise click.UsageError("--dask and --jobs apply to a dataset, not to image files")
    folders = [p for p in inputs if p.is_dir()]
    if folders:
        raise click.UsageError(f"give one dataset folder or image files, not a mix "
                               f"({folders[0]} is a folder)")
    if method == IMPORT_METHOD:
        raise click.UsageError("--method import reads a proposals artifact; image files need "
                               "a method that computes proposals")
    from sppdet.stages import detect
    from sppdet.stages.layout import detection_images_dir, model_dir
    from sppdet.stages.training_inputs import trained_method

    out = out or detection_images_dir(settings.work_dir, name)
    if method is None:  # the model's own method, unless it was trained on imported boxes
        trained = trained_method(model_dir(settings.work_dir, name) / "fc.pt")
        method = trained if trained not in (None, IMPORT_METHOD) else ProposeOptions.method
    summary = detect.run_images(list(inputs), model_dir=model_dir(settings.work_dir, name),
                                out_dir=out, method=method,
                                scorer=scorer, use_bbox_reg=bbox_reg,
                                iou_threshold=iou_threshold, score_threshold=score_threshold,
                                max_per_image=cap, scales=scales, device=device,
                                draw_threshold=draw_threshold, fc=fc_mode,
                                svd_energy=svd_energy, nms_method=nms_method,
                                nms_sigma=nms_sigma)
    for result in summary.results:
        click.echo(f"{result.path}: {len(result.detections)} detections -> {result.drawn}")
    click.echo(f"NMS: {summary.nms}")
    if summary.operating_points is not None:
        points = ", ".join(f"{name} >= {score:.3g}" if score is not None else f"{name}: all"
                           for name, score in summary.operating_points.items())
        click.echo(f"Kept at the operating points chosen on validation: {points}")
    click.echo(f"Detections listed in {summary.listing}")
    if summary.failures:
        click.echo(f"Not detected: {len(summary.failures)} of {len(inputs)} image(s):")
        for reason in summary.failures.values():
            click.echo(f"  {reason}")
        if on_error == "fail":
            raise click.ClickException(f"{len(summary.failures)} image(s) could not be "
                                       "detected (listed above; --on-error skip accepts that)")


@click.command("tune-detect")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@option("--name", "-n", required=True, help="Model name (<work-dir>/models/<name>/).")
@param_option(DetectOptions, "scorer", "--scorer",
              help="The scores detect will use: per-class SVMs on fc7 or the fc8 softmax.")
@option("--bbox-reg/--no-bbox-reg", default=True, show_default=True,
        help="Whether detect will apply the box regressors.")
@param_option(DetectOptions, "score_threshold", "--score-threshold", type=float,
              show_default=_per_scorer(DEFAULT_SCORE_THRESHOLDS),
              help="The score threshold detect will use (candidates score above it).")
@param_option(DetectOptions, "max_per_image", "--max-per-image", type=click.IntRange(min=0),
              help="The per-image cap detect will use (0: no limit).")
@option("--metric", type=click.Choice(METRICS), default=METRICS[0], show_default=True,
        help="The AP that chooses: 11point (VOC2007) or area (VOC2010 and later).")
@param_option(TuneOptions, "confidence", "--confidence",
              help="Leave the paper's hard NMS at 0.3 for a class only when a setting beats it "
                   "in at least this share of bootstrap resamples of the validation images "
                   "(0: always take the best validation AP).")
@param_option(TuneOptions, "resamples", "--resamples",
              help="Bootstrap resamples of the validation images (drawn with a fixed seed).")
@param_option(TuneOptions, "choose_scorer", "--choose-scorer/--no-choose-scorer",
              help="Per class, use the fc8 softmax scores instead of the SVMs' where they beat "
                   "them in at least --confidence of the bootstrap resamples of the "
                   "validation images.")
@device_option
@jobs_option
@dask_option
@force_option
@pass_settings
def tune_detect_command(settings: Settings, dataset: Path, name: str, scorer: str,
                        bbox_reg: bool, score_threshold: float | None, max_per_image: int,
                        metric: str, confidence: float, resamples: int, choose_scorer: bool,
                        device: str, jobs: int, dask: str | None, force: bool) -> None:
    """Choose the model's test settings on the validation split and store them with it.

    The fc layers were fine-tuned with the validation split held out, but the SVMs and box
    regressors were trained on trainval. So a selection model (SVMs and box regressors
    trained the same way on the fine-tuning split, in <work-dir>/models/<name>/selection/)
    detects the validation split, and per class an NMS (hard NMS at IoU 0.3-0.6, linear or
    Gaussian Soft-NMS) and the score of best F1 (the operating point for drawings and image
    files) are written to <work-dir>/models/<name>/test_settings.json. `sppdet detect` uses
    them from then on. A class keeps hard NMS at 0.3 unless a setting beats its validation AP
    in at least --confidence of bootstrap resamples of the validation images (then the one
    of best validation AP among those): with a few dozen objects per class, the best
    validation AP alone is mostly noise. With the SVM scorer, each class is first given the
    fc8 softmax scores (as log-odds) instead of the SVMs' where they win in at least
    --confidence of the same resamples (--no-choose-scorer: SVMs for every class). The test
    split is never looked at.
    """
    from sppdet.parallel.dask_cluster import open_executor
    from sppdet.stages import tune_detect
    from sppdet.stages.layout import model_dir

    with open_executor(dask, jobs=jobs) as executor:
        summary = tune_detect.run(dataset, model_dir(settings.work_dir, name), scorer=scorer,
                                  use_bbox_reg=bbox_reg, score_threshold=score_threshold,
                                  max_per_image=max_per_image or None, metric=metric,
                                  jobs=jobs, device=device, force=force, executor=executor,
                                  confidence=confidence, resamples=resamples,
                                  choose_scorer=choose_scorer)
    click.echo(summary.to_text())


COMMANDS = [detect_command, tune_detect_command]
