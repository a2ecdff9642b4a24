"""What ``eval`` writes beside the VOC report when asked: COCO metrics and files, and the
false-positive analysis with its figures (each with its section of report.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sppdet.data.voc import VOCDataset
from sppdet.evaluation import ClassDetections, ImageGroundTruth, VOCEvaluation
from sppdet.io.atomic import write_text_atomic


def _percent(value: float | None, decimals: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{decimals}f}"


def image_info(data: VOCDataset) -> dict[str, dict[str, Any]]:
    return {a.image_id: {"width": a.width, "height": a.height,
                         "file_name": None if a.image_path is None else a.image_path.name}
            for a in data}


def coco_outputs(data: VOCDataset, by_class: Mapping[str, ClassDetections],
                 ground_truth: list[ImageGroundTruth], out_dir: Path) -> dict[str, Any]:
    """Write ``coco_gt.json`` and ``coco_detections.json``; return pycocotools' metrics."""
    from sppdet.evaluation.coco import (
        coco_detections,
        coco_ground_truth,
        coco_image_numbers,
        coco_metrics,
        write_json,
    )

    gt = coco_ground_truth(ground_truth, data.classes,
                           image_info=image_info(data))
    results = coco_detections(by_class, data.classes,
                              coco_image_numbers(ground_truth))
    write_json(out_dir / "coco_gt.json", gt)
    write_json(out_dir / "coco_detections.json", results)
    return coco_metrics(gt, results)


def coco_markdown(coco: Mapping[str, Any]) -> str:
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    return "\n".join([
        "## COCO metrics (pycocotools)", "",
        "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
        "| " + " | ".join(_percent(coco.get(n)) for n in names) + " |", "",
        "AP averages IoU 0.50:0.05:0.95 (101-point interpolation, at most 100 detections per "
        "image); difficult objects are crowd regions. Ground truth and detections: "
        "coco_gt.json, coco_detections.json."])


def analysis_outputs(data: VOCDataset, by_class: Mapping[str, ClassDetections],
                     ground_truth: list[ImageGroundTruth], evaluation: VOCEvaluation,
                     out_dir: Path, *, plots: bool) -> tuple[dict[str, Any], list[Path], list[Path]]:
    """Write ``analysis.json`` and (when ``plots``) its figures; return the JSON content,
    the summary figures and the per-class false-positive pictures."""
    from sppdet.evaluation.analysis import analyse_false_positives

    result = analyse_false_positives(ground_truth, by_class, evaluation)
    content = result.to_dict()
    write_text_atomic(out_dir / "analysis.json",
                      json.dumps(content, indent=2, allow_nan=False) + "\n")
    summary: list[Path] = []
    pictures: list[Path] = []
    if plots:
        from sppdet.evaluation.analysis_plots import (
            plot_ap_impact,
            plot_fp_types,
            plot_top_false_positives,
        )
        from sppdet.evaluation.report import safe_file_name

        summary = [plot_fp_types(result, out_dir / "analysis_fp_types.png"),
                   plot_ap_impact(result, out_dir / "analysis_ap_impact.png")]
        if data.images_present:
            for c in result.per_class:
                drawn = plot_top_false_positives(
                    c, data.load_image,
                    out_dir / f"analysis_top_fp_{safe_file_name(c.class_name)}.png")
                if drawn is not None:
                    pictures.append(drawn)
    return content, summary, pictures


def analysis_markdown(content: Mapping[str, Any], figures: Sequence[Path]) -> str:
    types = list(content["fp_types"])
    lines = ["## False-positive analysis (Hoiem et al. 2012)", "",
             "; ".join(f"**{k}**: {v}" for k, v in content["fp_types"].items()) + ". "
             + content["type_order"].capitalize() + ".", "",
             "| class | FP | " + " | ".join(types) + " | AP | "
             + " | ".join(f"AP w/o {t}" for t in types) + " |",
             "|" + "---|" * (3 + 2 * len(types))]
    for c in content["classes"]:
        lines.append(f"| {c['class']} | {c['n_false_positives']} | "
                     + " | ".join(str(c["fp_types"][t]) for t in types)
                     + f" | {_percent(c['ap'])} | "
                     + " | ".join(_percent(c["ap_without"][t]) for t in types) + " |")
    lines.append("")
    lines += [f"![{f.name}]({f.name})" for f in figures]
    return "\n".join(lines)
