"""Human- and machine-readable evaluation reports: AP tables, report.json, report.md, PR plots.

Every output states the protocol it used (``VOCEvaluation.protocol``, e.g. "VOC2007 11-point
AP, devkit rules (VOCevaldet)"), and lists the classes whose AP is undefined (no positives) and
so left out of the mean, and the classes whose every detection was ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.atomic import write_text_atomic
from sppdet.errors import ConfigError
from sppdet.evaluation.voc_ap import (
    FLAG_ALL_IGNORED,
    FLAG_NO_DETECTIONS,
    FLAG_NO_POSITIVES,
    VOCEvaluation,
)

NOT_DEFINED = "n/a"


def _percent(value: float | None, decimals: int) -> str:
    return NOT_DEFINED if value is None else f"{100.0 * value:.{decimals}f}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ap_table(
    evaluations: VOCEvaluation | Mapping[str, VOCEvaluation],
    *,
    classes_as_rows: bool = False,
    decimals: int = 1,
) -> str:
    """A Markdown table of AP in percent, laid out like the paper's table 11.

    Args:
        evaluations: one evaluation, or method name -> evaluation (same classes, same metric).
        classes_as_rows: ``False`` (default): one row per method, columns ``mAP`` then the
            classes, as in the paper; ``True``: one row per class (easier to read for many
            classes), methods as columns, mAP last.
        decimals: decimals of the percentages.

    Undefined APs (classes without positives) print as ``n/a``.
    """
    if isinstance(evaluations, VOCEvaluation):
        evaluations = {"sppdet": evaluations}
    if not evaluations:
        raise ConfigError("ap_table needs at least one evaluation")
    first = next(iter(evaluations.values()))
    for name, ev in evaluations.items():
        if ev.class_names != first.class_names or ev.metric != first.metric:
            raise ConfigError(
                f"evaluation {name!r} has other classes or another metric than the first; "
                "a table compares evaluations of the same classes and protocol"
            )
    classes = list(first.class_names)
    if not classes_as_rows:
        header = ["method", "mAP"] + classes
        rows = [
            [name, _percent(ev.mean_ap, decimals)]
            + [_percent(r.ap, decimals) for r in ev.per_class]
            for name, ev in evaluations.items()
        ]
    else:
        header = ["class"] + list(evaluations)
        rows = [
            [c] + [_percent(ev.per_class[i].ap, decimals) for ev in evaluations.values()]
            for i, c in enumerate(classes)
        ]
        rows.append(["**mAP**"] + [_percent(ev.mean_ap, decimals) for ev in evaluations.values()])
    return _markdown_table(header, rows)


def _notes(evaluation: VOCEvaluation) -> list[str]:
    notes = []
    excluded = [r.class_name for r in evaluation.per_class if FLAG_NO_POSITIVES in r.flags]
    if excluded:
        notes.append(
            "AP undefined (no non-difficult ground-truth object), left out of the mAP: "
            + ", ".join(excluded)
            + ". The devkit gives these classes AP 0 (11-point; area: 0 without detections, "
            "NaN with some); its mean over all classes with them as 0 is the devkit mAP "
            f"{_percent(evaluation.devkit_mean_ap, 1)} %."
        )
    ignored = [r.class_name for r in evaluation.per_class if FLAG_ALL_IGNORED in r.flags]
    if ignored:
        notes.append(
            "Every detection matched a difficult object, reported as AP 0 (the devkit gives "
            "NaN): " + ", ".join(ignored) + "."
        )
    empty = [
        r.class_name
        for r in evaluation.per_class
        if FLAG_NO_DETECTIONS in r.flags and FLAG_NO_POSITIVES not in r.flags
    ]
    if empty:
        notes.append("No detections, AP 0: " + ", ".join(empty) + ".")
    return notes


def report_dict(evaluation: VOCEvaluation, *, extra: Mapping[str, Any] | None = None) -> dict:
    """The content of ``report.json``: protocol, mAP and per-class numbers (JSON-safe: no NaN).

    Args:
        evaluation: the result to report.
        extra: more top-level entries (e.g. the split, the detections' path); must be JSON-able.
    """

    def finite_or_none(value: float | None) -> float | None:
        return None if value is None or math.isnan(value) else float(value)

    classes = []
    for r in evaluation.per_class:
        classes.append(
            {
                "class": r.class_name,
                "class_index": r.class_index,
                "ap": finite_or_none(r.ap),
                "ap_percent": None if r.ap is None else 100.0 * r.ap,
                "devkit_ap": finite_or_none(r.devkit_ap),
                "npos": r.npos,
                "n_detections": r.n_detections,
                "n_true_positives": r.n_true_positives,
                "n_false_positives": r.n_false_positives,
                "n_ignored": r.n_ignored,
                "flags": list(r.flags),
            }
        )
    out: dict[str, Any] = {
        "protocol": evaluation.protocol,
        "metric": evaluation.metric,
        "iou_threshold": evaluation.iou_threshold,
        "n_images": evaluation.n_images,
        "mean_ap": finite_or_none(evaluation.mean_ap),
        "mean_ap_percent": None if evaluation.mean_ap is None else 100.0 * evaluation.mean_ap,
        # the mean over every class, classes without positives as 0 (the VOC2007 devkit's)
        "devkit_mean_ap": finite_or_none(evaluation.devkit_mean_ap),
        "classes_in_mean": list(evaluation.classes_in_mean),
        "classes_excluded_from_mean": list(evaluation.classes_excluded_from_mean),
        "classes": classes,
        "notes": _notes(evaluation),
    }
    if extra:
        out.update(dict(extra))
    return out


def write_report_json(
    path: str | os.PathLike, evaluation: VOCEvaluation, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write :func:`report_dict` as indented JSON (atomically)."""
    path = Path(path)
    text = json.dumps(report_dict(evaluation, extra=extra), indent=2, allow_nan=False)
    write_text_atomic(path, text + "\n")
    return path


def report_markdown(
    evaluation: VOCEvaluation,
    *,
    title: str = "Detection evaluation",
    extra: Mapping[str, Any] | None = None,
    figures: list[str] | None = None,
    method: str = "sppdet",
    sections: Sequence[str] = (),
) -> str:
    """The text of ``report.md``: protocol, mAP, the AP table (one row named ``method``), a
    per-class detail table, then ``sections`` (more Markdown, e.g. COCO metrics) and the
    figures. ``extra`` entries print as a list (those whose value is a dict or list are left
    to report.json)."""
    lines = [f"# {title}", "", f"Protocol: {evaluation.protocol}, IoU >= "
             f"{evaluation.iou_threshold:g}.", "",
             f"Images: {evaluation.n_images}. mAP: {_percent(evaluation.mean_ap, 1)} %"
             f" over {len(evaluation.classes_in_mean)} of {len(evaluation.per_class)} classes"
             + (f"; devkit mAP (classes without ground truth as 0): "
                f"{_percent(evaluation.devkit_mean_ap, 1)} % over all "
                f"{len(evaluation.per_class)}" if evaluation.classes_excluded_from_mean
                else "") + ".",
             ""]
    plain = {k: v for k, v in (extra or {}).items() if not isinstance(v, (dict, list))}
    for key, value in plain.items():
        lines.append(f"- {key}: {value}")
    if plain:
        lines.append("")
    lines += ["## AP (%)", "", ap_table({method: evaluation}), "", "## Per class", ""]
    header = ["class", "AP (%)", "npos", "detections", "TP", "FP", "ignored", "flags"]
    rows = [
        [
            r.class_name,
            _percent(r.ap, 2),
            str(r.npos),
            str(r.n_detections),
            str(r.n_true_positives),
            str(r.n_false_positives),
            str(r.n_ignored),
            ", ".join(r.flags),
        ]
        for r in evaluation.per_class
    ]
    lines += [_markdown_table(header, rows), ""]
    notes = _notes(evaluation)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    for section in sections:
        lines += [section.rstrip("\n"), ""]
    if figures:
        lines += ["## Precision/recall curves", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def write_report_markdown(
    path: str | os.PathLike,
    evaluation: VOCEvaluation,
    *,
    title: str = "Detection evaluation",
    extra: Mapping[str, Any] | None = None,
    figures: list[str] | None = None,
    method: str = "sppdet",
    sections: Sequence[str] = (),
) -> Path:
    """Write :func:`report_markdown` to ``path`` (atomically)."""
    path = Path(path)
    write_text_atomic(
        path,
        report_markdown(evaluation, title=title, extra=extra, figures=figures, method=method,
                        sections=sections),
    )
    return path


def safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "class"


def plot_pr_curves(
    evaluation: VOCEvaluation,
    out_dir: str | os.PathLike,
    *,
    combined: bool = True,
    per_class: bool = True,
    dpi: int = 100,
) -> list[Path]:
    """Precision/recall curves as PNG files (matplotlib, Agg backend).

    Args:
        evaluation: the result to plot; classes without positives have no curve.
        out_dir: folder for ``pr_all.png`` (all classes in one figure, when ``combined``) and
            ``pr_<class>.png`` (one per class with positives, when ``per_class``).
        dpi: resolution.

    Returns:
        the paths written. Points where precision is undefined (only ignored detections so
        far) are not drawn.
    """
    from sppdet.plotting import pyplot, save_png

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plotted = [r for r in evaluation.per_class if r.ap is not None]
    written: list[Path] = []

    def draw(ax: Any, result: Any, label: str) -> None:
        # The devkit's own plot: plot(rec, prec, '-'), i.e. the raw cumulative curve.
        defined = ~np.isnan(result.precision)
        ax.plot(result.recall[defined], result.precision[defined], "-", label=label)

    def finish(ax: Any, title: str) -> None:
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(True, alpha=0.3)
        ax.set_title(title, fontsize=9)

    if combined:
        fig, ax = plt.subplots(figsize=(8, 6))
        for r in plotted:
            draw(ax, r, f"{r.class_name} ({100 * r.ap:.1f})")
        finish(ax, f"mAP {_percent(evaluation.mean_ap, 1)} %; {evaluation.protocol}")
        if plotted:
            ax.legend(fontsize=7, loc="lower left", ncol=2)
        path = out / "pr_all.png"
        save_png(fig, path, dpi=dpi)
        written.append(path)
    if per_class:
        for r in plotted:
            fig, ax = plt.subplots(figsize=(5, 4))
            draw(ax, r, r.class_name)
            finish(ax, f"{r.class_name}: AP {100 * r.ap:.1f} %\n{evaluation.protocol}")
            path = out / f"pr_{safe_file_name(r.class_name)}.png"
            save_png(fig, path, dpi=dpi)
            written.append(path)
    return written


def write_report(
    out_dir: str | os.PathLike,
    evaluation: VOCEvaluation,
    *,
    title: str = "Detection evaluation",
    extra: Mapping[str, Any] | None = None,
    plots: bool = True,
    method: str = "sppdet",
    sections: Sequence[str] = (),
    more_figures: Sequence[str] = (),
) -> dict[str, Path | list[Path]]:
    """Write ``report.json``, ``report.md`` and (when ``plots``) the PR curve PNGs to ``out_dir``.

    ``method`` names the row of the AP table in ``report.md``; ``sections`` are more Markdown
    for it and ``more_figures`` more image files (names in ``out_dir``) to show after the curves.

    Returns:
        ``{"json": path, "markdown": path, "figures": [paths]}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = plot_pr_curves(evaluation, out) if plots else []
    json_path = write_report_json(out / "report.json", evaluation, extra=extra)
    md_path = write_report_markdown(
        out / "report.md",
        evaluation,
        title=title,
        extra=extra,
        figures=[f.name for f in figures] + list(more_figures),
        method=method,
        sections=sections,
    )
    return {"json": json_path, "markdown": md_path, "figures": figures}
