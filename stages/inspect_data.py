"""Stage ``inspect-data``: what a dataset split holds, and everything wrong with it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sppdet.data.images import read_image
from sppdet.data.voc import DataProblem, VOCDataset
from sppdet.errors import DataError
from sppdet.progress import progress


@dataclass
class ClassCounts:
    objects: int = 0
    difficult: int = 0
    truncated: int = 0
    images: int = 0


@dataclass
class InspectReport:
    """Counts and problems of one split.

    Attributes:
        dataset: dataset folder.
        split: split name.
        classes: class names in label order.
        n_images: usable images.
        per_class: class name -> :class:`ClassCounts`.
        image_sizes: Counter of ``(width, height)``.
        problems: every problem found (reading XML and, when checked, decoding images).
    """

    dataset: str
    split: str
    classes: tuple[str, ...]
    n_images: int
    per_class: dict[str, ClassCounts]
    image_sizes: Counter
    problems: list[DataProblem] = field(default_factory=list)
    images_checked: bool = False

    @property
    def n_severe(self) -> int:
        return sum(p.severe for p in self.problems)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "classes": list(self.classes),
            "n_images": self.n_images,
            "per_class": {k: vars(v) for k, v in self.per_class.items()},
            "image_sizes": {f"{w}x{h}": n for (w, h), n in sorted(self.image_sizes.items())},
            "images_checked": self.images_checked,
            "problems": [vars(p) for p in self.problems],
        }


def run(dataset: str | Path, split: str, *, classes: Sequence[str] | None = None,
        strict: bool = False, check_images: bool = True) -> InspectReport:
    """Read a split, optionally decode every image, and count what is there.

    Args:
        dataset: VOC-layout dataset folder.
        split: split name.
        classes: class list (default: discovered, see :func:`sppdet.data.voc.discover_classes`).
        strict: raise :class:`DataError` at the end if any severe problem was found.
        check_images: decode every image and compare its size with the XML's.

    Raises:
        DataError: the split cannot be read at all, or (strict) it has severe problems.
    """
    data = VOCDataset(dataset, split, classes)
    problems = list(data.problems)
    if check_images:
        for ann in progress(data, total=len(data), desc="checking images"):
            try:
                image = read_image(ann.image_path)
            except DataError as exc:
                problems.append(DataProblem("image-unreadable", ann.image_id,
                                            str(ann.image_path), str(exc).split(": ", 1)[-1]))
                continue
            height, width = image.shape[:2]
            if (width, height) != (ann.width, ann.height):
                problems.append(DataProblem(
                    "size-mismatch", ann.image_id, str(ann.image_path),
                    f"image is {width}x{height} but the XML says {ann.width}x{ann.height}"))
    per_class = {name: ClassCounts() for name in data.classes}
    sizes: Counter = Counter()
    for ann in data:
        sizes[(ann.width, ann.height)] += 1
        for label in np.unique(ann.labels):
            per_class[data.classes[label]].images += 1
        for label, difficult, truncated in zip(ann.labels, ann.difficult, ann.truncated):
            counts = per_class[data.classes[label]]
            counts.objects += 1
            counts.difficult += int(difficult)
            counts.truncated += int(truncated)
    report = InspectReport(dataset=str(dataset), split=split, classes=data.classes,
                           n_images=len(data), per_class=per_class, image_sizes=sizes,
                           problems=problems, images_checked=check_images)
    if strict and report.n_severe:
        raise DataError(f"{report.n_severe} problem(s) in {dataset} split '{split}' (strict "
                        "mode):\n  " + "\n  ".join(str(p) for p in problems if p.severe))
    return report


def format_report(report: InspectReport, max_problems: int | None = None) -> str:
    """A one-screen text summary: per-class table, image sizes, problems by kind."""
    lines = [f"Dataset {report.dataset}, split '{report.split}': {report.n_images} images, "
             f"{len(report.classes)} classes"]
    width = max([len("class"), *(len(c) for c in report.classes)])
    lines.append(f"  {'class':<{width}}  {'images':>6}  {'objects':>7}  {'difficult':>9}  "
                 f"{'truncated':>9}")
    total = ClassCounts()
    for name in report.classes:
        c = report.per_class[name]
        lines.append(f"  {name:<{width}}  {c.images:>6}  {c.objects:>7}  {c.difficult:>9}  "
                     f"{c.truncated:>9}")
        total.objects += c.objects
        total.difficult += c.difficult
        total.truncated += c.truncated
    lines.append(f"  {'total':<{width}}  {report.n_images:>6}  {total.objects:>7}  "
                 f"{total.difficult:>9}  {total.truncated:>9}")
    if report.image_sizes:
        widths = [w for (w, _), n in report.image_sizes.items() for _ in range(n)]
        heights = [h for (_, h), n in report.image_sizes.items() for _ in range(n)]
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.image_sizes.most_common(3))
        lines.append(f"Image sizes: width {min(widths)}-{max(widths)}, height "
                     f"{min(heights)}-{max(heights)}; most common: {common}")
    if not report.images_checked:
        lines.append("Images were not decoded (image checks were off).")
    if report.problems:
        by_kind = Counter(p.kind for p in report.problems)
        lines.append(f"Problems: {len(report.problems)} ("
                     + ", ".join(f"{k}: {n}" for k, n in sorted(by_kind.items())) + ")")
        shown = report.problems if max_problems is None else report.problems[:max_problems]
        for problem in shown:
            marker = "!" if problem.severe else "-"
            lines.append(f"  {marker} [{problem.kind}] {problem}")
        if len(shown) < len(report.problems):
            hidden = len(report.problems) - len(shown)
            lines.append(f"  ... {hidden} more (above the listing limit)")
    else:
        lines.append("Problems: none")
    return "\n".join(lines)


def write_json(report: InspectReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
