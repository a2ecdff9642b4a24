"""Stage ``eval``: PASCAL VOC average precision of detections, with the devkit's rules.

Input: a detections artifact (``detect`` or ``combine``) or a folder of VOC result files
(``comp4_det_<split>_<class>.txt``, from sppdet or any other tool). The ground truth is read
as the devkit reads it, from ``Annotations/`` and ``ImageSets/Main/<split>.txt`` alone: the
images are optional (only the pictures need them) and boxes are kept as written. A class
whose comp4 file is missing has no detections (a warning names the files).

Output, in one folder: ``report.json`` (the artifact, with a record), ``report.md``,
``report.html`` (one self-contained page) and the precision/recall curves ``pr_all.png`` and
``pr_<class>.png``; with ``analysis``, ``analysis.json`` and its figures
(:mod:`sppdet.evaluation.analysis`); with ``coco``, ``coco_gt.json``,
``coco_detections.json`` and the COCO metrics in the report (:mod:`sppdet.evaluation.coco`).

Detections made on another dataset, split or class list than the one evaluated are refused
(their record says what they were made on); ``force`` evaluates anyway, matching classes by
name and leaving out detections on images outside the split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.hashing import file_sha256
from sppdet.io.records import (
    Record,
    check_inputs_current,
    input_ref,
    read_record,
    record_path,
    write_record,
)
from sppdet.data.voc import VOCDataset
from sppdet.detector.detections_io import DetectionsArtifact, data_mismatch, read_detections_artifact
from sppdet.errors import ArtifactError, ConfigError, DataError, Remedy
from sppdet.evaluation import (
    METRICS,
    ClassDetections,
    ImageGroundTruth,
    class_detections_from_images,
    evaluate_detections,
    read_comp4_dir,
    write_comp4_files,
    write_report,
)
from sppdet.progress import get_logger

from .common import dataset_params
from .left_out import left_out_warnings
from .evaluate_outputs import (
    analysis_markdown,
    analysis_outputs,
    coco_markdown,
    coco_outputs,
    image_info,
)
from .layout import eval_dir
from .runner import StageOutput

log = get_logger("eval")
STAGE = "eval"
# 2: overlaps on the devkit's own coordinates, images optional, boxes unclipped, report.html,
# analysis and COCO metrics
STAGE_VERSION = 2
REPORT_NAME = "report.json"


@dataclass
class EvalSummary:
    """What an eval run found (printed at the end).

    Attributes:
        out_dir: the report folder.
        model: the detections' model name (the folder name for comp4 input).
        report: the content of ``report.json``.
        up_to_date: the report was already there for these inputs and options.
        figures: PNG files written (PR curves, analysis figures, gallery).
        comp4_dir: where comp4 files were written, if asked.
        warnings: what ``force`` let through, missing comp4 files, images that failed in
            ``detect``.
        info: facts worth a line (e.g. evaluated without images).
    """

    out_dir: Path
    model: str
    report: dict[str, Any]
    up_to_date: bool = False
    figures: list[Path] = field(default_factory=list)
    comp4_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def mean_ap(self) -> float | None:
        return self.report.get("mean_ap")

    def to_text(self) -> str:
        report = self.report
        n_classes = len(report["classes"])
        lines = [f"Evaluated {self.model} on {report.get('dataset')} split "
                 f"'{report.get('split')}': {report['n_images']} images, {n_classes} classes",
                 f"Protocol: {report['protocol']}, IoU >= {report['iou_threshold']:g}"]
        lines += ["", ap_table_text(report, self.model), ""]
        in_mean = len(report["classes_in_mean"])
        mean = f"mAP {_percent(report['mean_ap'])} % over {in_mean} of {n_classes} classes"
        if report.get("classes_excluded_from_mean"):
            mean += (" (classes without ground truth left out); devkit mAP "
                     f"{_percent(report.get('devkit_mean_ap'))} % over all {n_classes} "
                     "(those counted as 0)")
        lines.append(mean)
        coco = report.get("coco")
        if coco:
            lines.append("COCO (pycocotools): " + ", ".join(
                f"{name} {_percent(coco.get(name))}" for name in
                ("AP", "AP50", "AP75", "APs", "APm", "APl")) + " %")
        analysis = report.get("analysis")
        if analysis:
            totals = analysis["totals"]
            lines.append(f"False positives ({analysis['n_false_positives']}): " + ", ".join(
                f"{kind} {count}" for kind, count in totals.items()))
        lines += [f"Note: {note}" for note in report.get("notes", [])]
        lines += [f"Note: {note}" for note in self.info]
        lines += [f"Warning: {warning}" for warning in self.warnings]
        state = "up to date" if self.up_to_date else "written"
        lines.append(f"Report {state}: {self.out_dir / 'report.md'} (+ report.html, "
                     "report.json" + (f", {len(self.figures)} figures)" if self.figures
                                      else ")"))
        if self.comp4_dir is not None:
            lines.append(f"comp4 files written to {self.comp4_dir}")
        return "\n".join(lines)


def _percent(value: float | None, decimals: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{decimals}f}"


def ap_table_text(report: Mapping[str, Any], method: str, decimals: int = 1) -> str:
    """A plain-text AP table (%) in the layout of the paper's table 11: one row, mAP first.

    Args:
        report: the content of ``report.json`` (:func:`sppdet.evaluation.report_dict`).
        method: the row's name.
    """
    header = ["method", "mAP"] + [c["class"] for c in report["classes"]]
    row = [method, _percent(report["mean_ap"], decimals)]
    row += [_percent(c["ap"], decimals) for c in report["classes"]]
    widths = [max(len(h), len(r)) for h, r in zip(header, row)]
    first = f"{header[0]:<{widths[0]}}"
    return "\n".join([
        "  ".join([first] + [f"{h:>{w}}" for h, w in zip(header[1:], widths[1:])]),
        "  ".join([f"{row[0]:<{widths[0]}}"] + [f"{v:>{w}}" for v, w in zip(row[1:], widths[1:])]),
    ])


def _model_name(detections: Path) -> str:
    if detections.is_dir():
        return detections.resolve().name
    record = read_record(detections, made_by="detect")
    model = record.params.get("model")
    if not isinstance(model, str) or not model:
        raise ArtifactError(f"{detections}: the record names no model; is it a detections "
                            "artifact (made by `sppdet detect` or `sppdet combine`)?")
    return model


def default_out_dir(work_dir: Path, dataset: str | Path, split: str,
                    detections: str | Path) -> Path:
    """``<work>/eval/<model>/<dataset-tag>/<split>/``; for a comp4 folder, its name is the model."""
    return eval_dir(work_dir, _model_name(Path(detections)), dataset, split)


def _ground_truth(data: VOCDataset) -> list[ImageGroundTruth]:
    # boxes_voc: the XML's own numbers, unclipped, as the devkit evaluates them
    return [ImageGroundTruth(a.image_id, a.boxes, a.labels, a.difficult, a.boxes_voc)
            for a in data]


def _read_dataset(dataset: str | Path, split: str,
                  classes: Sequence[str] | None) -> VOCDataset:
    """The split as the devkit reads it: annotations and split file; images optional."""
    return VOCDataset(dataset, split, classes, require_images=False, clip_boxes=False)


def _data_identity(data: VOCDataset) -> dict[str, Any]:
    """:func:`dataset_params` when every image is there; without images its fingerprint
    (which covers the image files' sizes) cannot be made, and is ``None``."""
    if data.images_present:
        return dataset_params(data)
    return {"dataset": str(data.root.resolve()), "split": data.split,
            "classes": list(data.classes), "n_images": len(data), "fingerprint": None,
            "annotations": hashlib.sha256(b"".join(
                (data.root / "Annotations" / f"{i}.xml").read_bytes()
                for i in data.image_ids)).hexdigest()[:16]}


def _by_class_name(artifact: DetectionsArtifact, data: VOCDataset,
                   warnings: list[str]) -> dict[str, ClassDetections]:
    """The artifact's detections keyed by class name, restricted to the split's images and to
    the dataset's classes (both only differ under ``force``)."""
    per_class = class_detections_from_images(artifact.detections, len(artifact.classes))
    known = set(data.image_ids)
    out: dict[str, ClassDetections] = {}
    dropped_images: set[str] = set()
    for name, detections in zip(artifact.classes, per_class):
        if name not in data.classes:
            if len(detections):
                warnings.append(f"{len(detections)} detection(s) of class {name!r}, which the "
                                "dataset's class list lacks, were left out")
            continue
        inside = np.array([i in known for i in detections.image_ids], dtype=bool)
        if not inside.all():
            dropped_images.update(str(i) for i in detections.image_ids[~inside])
            detections = detections.subset(inside)
        out[name] = detections
    if dropped_images:
        warnings.append(f"detections on {len(dropped_images)} image(s) outside split "
                        f"'{data.split}' were left out, e.g. {sorted(dropped_images)[:5]}")
    return out


@dataclass
class _Loaded:
    """Detections ready to evaluate, and what the record says about them."""

    data: VOCDataset
    data_identity: dict[str, Any]
    by_class: Mapping[str, ClassDetections]
    model: str
    artifact: DetectionsArtifact | None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _load_comp4(dataset: str | Path, split: str, folder: Path,
                classes: Sequence[str] | None, *, force: bool) -> _Loaded:
    data = _read_dataset(dataset, split, classes)
    # a missing class file is no detections, as the devkit evaluates class by class
    comp4 = read_comp4_dir(folder, split, data.classes, known_image_ids=data.image_ids,
                           unknown_images="drop" if force else "error",
                           missing_files="empty")
    warnings = []
    if comp4.missing_classes:
        names = [f"comp4_det_{split}_{c}.txt" for c in comp4.missing_classes]
        warnings.append(f"no comp4 file for {len(names)} class(es) in {folder}: "
                        + ", ".join(names) + "; counted as no detections")
    for name, count in comp4.n_dropped.items():
        warnings.append(f"{count} line(s) of {comp4.paths[name].name} on images outside split "
                        f"'{split}' were left out (forced)")
    # comp4 files have no record: their content identifies them
    params = {"comp4": {"folder": str(folder.resolve()),
                        "files": {n: file_sha256(p) for n, p in comp4.paths.items()}}}
    return _Loaded(data=data, data_identity=_data_identity(data), by_class=comp4.detections,
                   model=folder.resolve().name, artifact=None, params=params,
                   warnings=warnings)


def _load_artifact(dataset: str | Path, split: str, path: Path,
                   classes: Sequence[str] | None, *, force: bool) -> _Loaded:
    artifact = read_detections_artifact(path)
    if not force:
        check_inputs_current(artifact.record, path)
    data = _read_dataset(dataset, split, classes if classes else artifact.classes)
    identity = _data_identity(data)
    warnings = []
    compared = identity
    if identity["fingerprint"] is None:
        # without images only the split, the classes and the image count can be compared
        compared = {**identity, "fingerprint": artifact.data.get("fingerprint")}
        if identity["n_images"] != artifact.data.get("n_images"):
            compared["fingerprint"] = "images absent"
        warnings.append("the dataset's images are absent, so only its split, classes and image "
                        "count were checked against the detections' record")
    mismatch = data_mismatch(compared, artifact.data)
    if mismatch is not None:
        if not force:
            raise DataError(
                f"{path} holds detections made on {mismatch}", remedy=Remedy.rerun(
                    alternative=f"evaluate them against the data they were made on "
                                f"({artifact.data.get('dataset')}, split "
                                f"'{artifact.data.get('split')}')", force=True))
        warnings.append(f"the detections were made on {mismatch} (forced)")
    by_class = _by_class_name(artifact, data, warnings)
    if artifact.failures:
        warnings.append(f"{len(artifact.failures)} image(s) failed in detect and count as "
                        "images without detections: " + ", ".join(list(artifact.failures)[:5]))
    return _Loaded(data=data, data_identity=identity, by_class=by_class, model=artifact.model,
                   artifact=artifact, inputs={"detections": input_ref(path, made_by="detect")},
                   warnings=warnings)


def _load(dataset: str | Path, split: str, detections: Path, classes: Sequence[str] | None,
          *, force: bool) -> _Loaded:
    if detections.is_dir():
        return _load_comp4(dataset, split, detections, classes, force=force)
    return _load_artifact(dataset, split, detections, classes, force=force)


def run(dataset: str | Path, split: str, detections: str | Path, out_dir: str | Path, *,
        metric: str = "11point", iou_threshold: float = 0.5,
        classes: Sequence[str] | None = None, write_comp4: str | Path | None = None,
        plots: bool = True, analysis: bool = False, coco: bool = False, gallery: int = 8,
        force: bool = False) -> EvalSummary:
    """Evaluate detections on a split and write the report.

    Args:
        dataset: VOC-layout dataset folder (the ground truth); only ``Annotations/`` and
            ``ImageSets/Main/<split>.txt`` are needed, images only for the pictures.
        split: the split evaluated.
        detections: a detections artifact (``.h5`` with a record) or a folder of
            ``comp4_det_<split>_<class>.txt`` files (a missing class file: no detections).
        out_dir: the report folder.
        metric: ``"11point"`` (VOC2007, default) or ``"area"`` (VOC2010+).
        iou_threshold: overlap that counts as a match, inclusive (VOC: 0.5).
        classes: the dataset's class list; default: the artifact's class list (or the
            dataset's own list for comp4 input, see :func:`sppdet.data.voc.discover_classes`).
        write_comp4: also write the artifact's detections as comp4 files to this folder (for
            the official devkit); not for comp4 input.
        plots: write the PR curves (and the analysis figures, the gallery).
        analysis: type the false positives (``analysis.json`` and figures).
        coco: COCO metrics with pycocotools, and the COCO JSON files.
        gallery: images with their detections drawn in report.html (0: none; needs images).
        force: evaluate detections made on another dataset, split or class list (classes
            matched by name, detections on images outside the split left out, each with a
            warning) or from stale inputs, and rebuild a report that is up to date.

    Raises:
        ConfigError: bad options, or ``coco`` without pycocotools. DataError: the dataset or
            the comp4 files cannot be read, or the detections were made on other data
            (without ``force``). ArtifactError: the artifact is missing, unfinished, or stale
            (without ``force``).
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if gallery < 0:
        raise ConfigError(f"gallery must be >= 0 images, got {gallery}")
    if coco:
        from sppdet.evaluation.coco import _pycocotools

        _pycocotools()  # fail before any work when the extra is missing
    detections = Path(detections)
    out_dir = Path(out_dir)
    if detections.is_dir() and write_comp4 is not None:
        raise ConfigError("comp4 files are written from a detections artifact; "
                          f"{detections} already is a folder of comp4 files")
    loaded = _load(dataset, split, detections, classes, force=force)
    data, artifact, warnings = loaded.data, loaded.artifact, loaded.warnings
    info = [] if data.images_present else [
        f"{sum(a.image_path is None for a in data)} of {len(data)} images are absent from "
        f"{data.root / 'JPEGImages'}: evaluated from the annotations alone, without pictures"]
    warnings.extend(left_out_warnings(data))
    params: dict[str, Any] = {"metric": metric, "iou_threshold": iou_threshold, "plots": plots,
                              "analysis": analysis, "coco": coco, "gallery": gallery,
                              "data": loaded.data_identity, "classes": list(data.classes),
                              **loaded.params}
    record = Record(STAGE, params, inputs=loaded.inputs, stage_version=STAGE_VERSION)
    report_path = out_dir / REPORT_NAME
    output = StageOutput(report_path, record, force=force)

    comp4_dir = None
    if write_comp4 is not None and artifact is not None:
        comp4_dir = Path(write_comp4)
        write_comp4_files(comp4_dir, split, artifact.classes, artifact.detections)

    if output.is_current():
        report = json.loads(report_path.read_text())
        figures = sorted(out_dir.glob("*.png")) + sorted(out_dir.glob("gallery_*.jpg")) \
            if plots else []
        return EvalSummary(out_dir=out_dir, model=loaded.model, report=report, up_to_date=True,
                           figures=figures, comp4_dir=comp4_dir, warnings=warnings, info=info)

    ground_truth = _ground_truth(data)
    evaluation = evaluate_detections(ground_truth, loaded.by_class, data.classes,
                                     metric=metric, iou_threshold=iou_threshold)
    model = loaded.model
    extra: dict[str, Any] = {"model": model, "dataset": str(data.root.resolve()),
                             "split": split, "detections": str(detections.resolve()),
                             "input": "comp4 files" if artifact is None
                             else "detections artifact"}
    with output.writing():
        log.debug("eval %s on %s split %s -> %s (%s)", detections, dataset, split, out_dir,
                  metric)
        for warning in warnings:  # the summary shows them; the log file keeps them
            log.debug("warning: %s", warning)
        # no record while the files are rewritten: a crash never leaves a record that
        # vouches for a half-written report
        if record_path(report_path).exists():
            os.unlink(record_path(report_path))
        for stale in list(out_dir.glob("analysis_*.png")) + list(out_dir.glob("gallery_*.jpg")):
            stale.unlink()
        sections: list[str] = []
        analysis_content, analysis_figures, fp_pictures = None, [], []
        if coco:
            extra["coco"] = coco_outputs(data, loaded.by_class, ground_truth, out_dir)
            sections.append(coco_markdown(extra["coco"]))
        if analysis:
            analysis_content, analysis_figures, fp_pictures = analysis_outputs(
                data, loaded.by_class, ground_truth, evaluation, out_dir, plots=plots)
            extra["analysis"] = {"file": "analysis.json",
                                 "totals": analysis_content["totals"],
                                 "n_false_positives": analysis_content["n_false_positives"]}
            sections.append(analysis_markdown(analysis_content,
                                               analysis_figures + fp_pictures))
        gallery_images: list[tuple[Path, str]] = []
        if plots and gallery and data.images_present:
            from sppdet.evaluation.gallery import draw_gallery, operating_scores

            gallery_images = draw_gallery(ground_truth, loaded.by_class, data.classes,
                                          operating_scores(evaluation, loaded.by_class),
                                          data.load_image, out_dir, n_images=gallery)
        title = f"{model} on {data.root.name} {split}"
        written = write_report(out_dir, evaluation, title=title, extra=extra, plots=plots,
                               method=model, sections=sections)
        report = json.loads(report_path.read_text())
        from sppdet.evaluation.html_report import write_report_html

        write_report_html(out_dir / "report.html", report, title=title,
                          pr_curves=list(written["figures"]), analysis=analysis_content,
                          analysis_figures=analysis_figures,
                          false_positive_figures=fp_pictures, gallery=gallery_images)
        record.summary = {"mean_ap": evaluation.mean_ap, "warnings": warnings}
        write_record(report_path, record)
    figures = (list(written["figures"]) + analysis_figures + fp_pictures
               + [p for p, _ in gallery_images])
    return EvalSummary(out_dir=out_dir, model=loaded.model, report=report, figures=figures,
                       comp4_dir=comp4_dir, warnings=warnings, info=info)


@dataclass
class ExportSummary:
    """What ``export-coco`` wrote."""

    ground_truth: Path
    detections: Path | None
    n_images: int
    n_objects: int
    n_crowd: int
    n_detections: int
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"COCO ground truth: {self.ground_truth} ({self.n_images} images, "
                 f"{self.n_objects} objects, {self.n_crowd} difficult as crowd regions)"]
        if self.detections is not None:
            lines.append(f"COCO detections: {self.detections} ({self.n_detections})")
        lines.append("Boxes: x = xmin - 1, y = ymin - 1, w = xmax - xmin + 1, "
                     "h = ymax - ymin + 1 (VOC 1-based inclusive -> COCO 0-based)")
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def export_coco(dataset: str | Path, split: str, out_dir: str | Path, *,
                detections: str | Path | None = None, classes: Sequence[str] | None = None,
                force: bool = False) -> ExportSummary:
    """Write a split's ground truth (and detections) as COCO JSON.

    Args:
        dataset: VOC-layout dataset folder (annotations and split file; images optional).
        split: the split.
        out_dir: folder for ``<split>_gt.json`` and ``<split>_detections.json``.
        detections: a detections artifact or a folder of comp4 files, as for :func:`run`.
        classes: the class list (categories 1..K in this order); default as for :func:`run`.
        force: as for :func:`run` (detections made on other data).
    """
    from sppdet.evaluation.coco import (
        coco_detections,
        coco_ground_truth,
        coco_image_numbers,
        write_json,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    if detections is not None:
        loaded = _load(dataset, split, Path(detections), classes, force=force)
        data, warnings = loaded.data, loaded.warnings
    else:
        data = _read_dataset(dataset, split, classes)
    ground_truth = _ground_truth(data)
    gt = coco_ground_truth(ground_truth, data.classes, image_info=image_info(data))
    gt_path = write_json(out / f"{split}_gt.json", gt)
    det_path, n_det = None, 0
    if detections is not None:
        results = coco_detections(loaded.by_class, data.classes,
                                  coco_image_numbers(ground_truth))
        det_path = write_json(out / f"{split}_detections.json", results)
        n_det = len(results)
    return ExportSummary(ground_truth=gt_path, detections=det_path, n_images=len(data),
                         n_objects=len(gt["annotations"]),
                         n_crowd=sum(a["iscrowd"] for a in gt["annotations"]),
                         n_detections=n_det, warnings=warnings)
