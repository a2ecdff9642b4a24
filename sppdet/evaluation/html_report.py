"""``report.html``: the evaluation on one self-contained page (no network, no script).

Every figure is embedded as base64 (PNG, or JPEG for the gallery's photos), so the file can be mailed or archived alone. The
page holds the protocol and the means, the AP table (with COCO numbers when computed), the
notes, the precision/recall curves, the false-positive analysis and a gallery of detections.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; margin: 4px; }
figure { display: inline-block; margin: 4px; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; }
.note { color: #7a4b00; }
"""


def _percent(value: float | None, decimals: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{decimals}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: Path, caption: str | None = None) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    alt = html.escape(caption or Path(path).name)
    tag = f'<img src="data:{mime};base64,{data}" alt="{alt}">'
    if caption is None:
        return tag
    return f"<figure>{tag}<figcaption>{html.escape(caption)}</figcaption></figure>"


def report_html(
    report: Mapping[str, Any],
    *,
    title: str,
    pr_curves: Sequence[Path] = (),
    analysis: Mapping[str, Any] | None = None,
    analysis_figures: Sequence[Path] = (),
    false_positive_figures: Sequence[Path] = (),
    gallery: Sequence[tuple[Path, str]] = (),
) -> str:
    """The page's text.

    Args:
        report: the content of ``report.json`` (its ``coco`` entry, when present, adds the
            COCO metrics).
        title: the page title.
        pr_curves: PNGs of the precision/recall curves.
        analysis: the content of ``analysis.json``, when the analysis ran.
        analysis_figures: its summary PNGs (types against detections, AP impact).
        false_positive_figures: one PNG per class of its top false positives.
        gallery: ``(image file, caption)`` of images with their detections drawn.
    """
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Protocol: {html.escape(str(report['protocol']))}, IoU &ge; "
             f"{report['iou_threshold']:g}. Images: {report['n_images']}.</p>"]
    n_classes = len(report["classes"])
    means = [f"<b>mAP {_percent(report['mean_ap'])} %</b> over "
             f"{len(report['classes_in_mean'])} of {n_classes} classes"]
    if report.get("classes_excluded_from_mean"):
        means.append(f"devkit mAP {_percent(report.get('devkit_mean_ap'))} % over all "
                     f"{n_classes} classes (classes without ground truth counted as 0, as "
                     "the VOC2007 devkit does)")
    coco = report.get("coco")
    if coco:
        means.append(f"COCO AP@[.5:.95] {_percent(coco['AP'])} %, AP50 "
                     f"{_percent(coco['AP50'])} % (pycocotools)")
    parts.append("<p>" + "; ".join(means) + ".</p>")
    for key in ("model", "dataset", "split", "detections", "input"):
        if key in report:
            parts.append(f"<div>{html.escape(key)}: {html.escape(str(report[key]))}</div>")

    parts.append("<h2>Average precision (%)</h2>")
    header = ["class", "AP", "npos", "detections", "TP", "FP", "ignored"]
    if coco:
        header += ["COCO AP", "COCO AP50"]
    header.append("flags")
    rows = []
    for c in report["classes"]:
        row = [c["class"], _percent(c["ap"]), str(c["npos"]), str(c["n_detections"]),
               str(c["n_true_positives"]), str(c["n_false_positives"]), str(c["n_ignored"])]
        if coco:
            per = coco.get("per_class", {}).get(c["class"], {})
            row += [_percent(per.get("AP")), _percent(per.get("AP50"))]
        row.append(", ".join(c["flags"]))
        rows.append(row)
    parts.append(_table(header, rows))
    if coco:
        names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
        parts.append("<h3>COCO metrics (%)</h3>")
        parts.append(_table(names, [[_percent(coco.get(n)) for n in names]]))
    if report.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f'<li class="note">{html.escape(n)}</li>' for n in report["notes"]) + "</ul>")
    if pr_curves:
        parts.append("<h2>Precision/recall curves</h2>")
        parts += [_image(p) for p in pr_curves]
    if analysis is not None:
        parts.append("<h2>False-positive analysis</h2>")
        parts.append(f"<p>{html.escape(analysis['method'])}. "
                     + "; ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}"
                                 for k, v in analysis["fp_types"].items()) + ".</p>")
        types = list(analysis["fp_types"])
        rows = [[c["class"], str(c["n_false_positives"])] + [str(c["fp_types"][t])
                                                              for t in types]
                + [_percent(c["ap"])] + [_percent(c["ap_without"][t]) for t in types]
                for c in analysis["classes"]]
        parts.append(_table(["class", "FP"] + types + ["AP"] + [f"AP w/o {t}" for t in types],
                            rows))
        parts += [_image(p) for p in analysis_figures]
        if false_positive_figures:
            parts.append("<h3>Top false positives per class</h3>")
            parts += [_image(p) for p in false_positive_figures]
    if gallery:
        parts.append("<h2>Detections</h2>")
        parts += [_image(p, caption) for p, caption in gallery]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report_html(path: str | os.PathLike, report: Mapping[str, Any], **kwargs: Any) -> Path:
    """Write :func:`report_html` to ``path`` (atomically); keyword arguments as there."""
    from sppdet.io.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, report_html(report, **kwargs))
    return path
