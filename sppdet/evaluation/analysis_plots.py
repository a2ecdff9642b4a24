"""Figures of the false-positive analysis (:mod:`.analysis`), drawn with matplotlib (Agg).

- :func:`plot_fp_types`: Hoiem et al.'s figure: for each class, the share of the top ``k``
  detections that are correct, localization errors, confusions with similar or other classes,
  or background, stacked, against ``k`` (log scale), with the recall reached at ``k``;
- :func:`plot_ap_impact`: each class's AP and its AP with each error type removed;
- :func:`plot_top_false_positives`: a class's highest-scoring false positives cut out of their
  images, each box drawn in its type's colour beside the object that decided the type.

(matplotlib comes through :mod:`sppdet.plotting`, which imports it only when a figure is drawn.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sppdet.evaluation.analysis import FP_TYPES, ClassAnalysis, ErrorAnalysis
from sppdet.plotting import pyplot, save_png

# Hoiem et al.'s colours, roughly: correct white, localization blue, similar purple, other
# yellow, background red.
TYPE_COLORS: dict[str, str] = {
    "correct": "#ffffff", "localization": "#3b75c4", "similar": "#9b59b6",
    "other": "#f1c40f", "background": "#d62728",
}
TYPE_SHORT = {"localization": "Loc", "similar": "Sim", "other": "Oth", "background": "BG"}


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, max(1, n))
    return math.ceil(n / cols), cols


def plot_fp_types(analysis: ErrorAnalysis, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """The stacked-area figure: one panel per class with detections.

    For the top ``k`` detections by score (``k`` on the x axis, log scale; ignored detections
    not counted), the fraction of each outcome, stacked bottom-up in the order correct,
    localization, similar, other, background; the black line is the recall at ``k``.
    """
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    # classes without objects have no recall to reach: left out, as in the paper
    panels = [c for c in analysis.per_class if c.outcome.shape[0] > 0 and c.npos > 0]
    rows, cols = _grid(max(1, len(panels)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows + 0.6), squeeze=False)
    order = ("correct",) + FP_TYPES
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, result in zip(axes.flat, panels):
        counted = result.outcome[result.outcome != "ignored"]
        k = np.arange(1, counted.shape[0] + 1)
        shares = [np.cumsum(counted == kind) / k for kind in order]
        ax.stackplot(k, *shares, colors=[TYPE_COLORS[o] for o in order],
                     labels=["Cor"] + [TYPE_SHORT[t] for t in FP_TYPES],
                     edgecolor="#444444", linewidth=0.3)
        if result.npos > 0:
            ax.plot(k, np.cumsum(counted == "correct") / result.npos, "k-", linewidth=1.2,
                    label="recall")
        ax.set_xscale("log")
        ax.set_xlim(1, max(2, k[-1] if k.size else 2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1)
        ap = "n/a" if result.ap is None else f"{100 * result.ap:.1f}"
        ax.set_title(f"{result.class_name} (AP {ap}, {result.npos} objects)", fontsize=9)
        ax.set_xlabel("top detections", fontsize=8)
        ax.set_ylabel("share of detections", fontsize=8)
        ax.tick_params(labelsize=7)
    if not panels:
        axes.flat[0].text(0.5, 0.5, "no class with objects and detections", ha="center")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8,
               frameon=False)
    fig.suptitle("Detections by type, best first (Hoiem et al. 2012)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_png(fig, path, dpi=dpi)


def plot_ap_impact(analysis: ErrorAnalysis, path: str | os.PathLike, *,
                   dpi: int = 100) -> Path:
    """Per class: its AP (dark bar) and its AP with each error type removed (lighter bars)."""
    plt = pyplot()
    classes = [c for c in analysis.per_class if c.ap is not None]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(classes) + 1.5), 3.6))
    width = 0.16
    x = np.arange(len(classes))
    ax.bar(x - 2 * width, [100 * c.ap for c in classes], width, color="#333333", label="AP")
    for offset, kind in enumerate(FP_TYPES, start=-1):
        values = [100 * (c.ap_without[kind] or 0.0) for c in classes]
        ax.bar(x + offset * width, values, width, color=TYPE_COLORS[kind], edgecolor="#444444",
               linewidth=0.3, label=f"without {TYPE_SHORT[kind]}")
    ax.set_xticks(x, [c.class_name for c in classes], fontsize=8, rotation=30 if len(classes)
                  > 8 else 0)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    fig.tight_layout()
    return save_png(fig, path, dpi=dpi)


def _crop_window(boxes: list[tuple[float, ...]], width: int, height: int) -> tuple[int, ...]:
    """A 0-based pixel window around 1-based boxes, with a margin of half their size."""
    x1 = min(b[0] for b in boxes) - 1
    y1 = min(b[1] for b in boxes) - 1
    x2 = max(b[2] for b in boxes)
    y2 = max(b[3] for b in boxes)
    mx, my = max(8.0, 0.5 * (x2 - x1)), max(8.0, 0.5 * (y2 - y1))
    return (max(0, int(x1 - mx)), max(0, int(y1 - my)), min(width, int(math.ceil(x2 + mx))),
            min(height, int(math.ceil(y2 + my))))


def plot_top_false_positives(result: ClassAnalysis, load_image: Callable[[str], np.ndarray],
                             path: str | os.PathLike, *, dpi: int = 100) -> Path | None:
    """One PNG of a class's top false positives on their images; ``None`` when it has none.

    Each panel: the detection (solid, its type's colour) and the object that decided the type
    (dashed white), titled ``#rank type score overlap``.
    """
    if not result.top:
        return None
    plt = pyplot()
    from matplotlib.patches import Rectangle

    rows, cols = _grid(len(result.top))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, fp in zip(axes.flat, result.top):
        image = load_image(fp.image_id)
        height, width = image.shape[:2]
        boxes = [fp.box_voc] + ([fp.object_box_voc] if fp.object_box_voc else [])
        cx1, cy1, cx2, cy2 = _crop_window(boxes, width, height)
        ax.imshow(image[cy1:cy2, cx1:cx2], extent=(cx1, cx2, cy2, cy1))
        for box, style, color in ((fp.object_box_voc, "--", "white"),
                                  (fp.box_voc, "-", TYPE_COLORS[fp.fp_type])):
            if box is None:
                continue
            # 1-based inclusive pixels xmin..xmax cover [xmin - 1, xmax) in image coordinates
            ax.add_patch(Rectangle((box[0] - 1, box[1] - 1), box[2] - box[0] + 1,
                                   box[3] - box[1] + 1, fill=False, linestyle=style,
                                   edgecolor=color, linewidth=1.6))
        overlap = "" if not np.isfinite(fp.overlap) else f" ov {fp.overlap:.3f}"
        near = " (dup)" if fp.duplicate else "" if fp.object_class is None or \
            fp.fp_type == "localization" else f" ({fp.object_class})"
        ax.set_title(f"#{fp.rank} {TYPE_SHORT[fp.fp_type]}{near} {fp.score:.2f}{overlap}",
                     fontsize=7, color="black")
    fig.suptitle(f"{result.class_name}: top false positives (solid: detection, dashed: the "
                 "object that set its type)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_png(fig, path, dpi=dpi)
