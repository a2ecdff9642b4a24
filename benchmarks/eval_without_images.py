"""Evaluation from the annotations alone gives the AP it gives with the images.

Writes comp4 files of jittered copies of a dataset's ground truth (hits, near misses,
duplicates and wrong classes, fixed by --seed), copies ``Annotations/`` and ``ImageSets/`` to
a folder without ``JPEGImages/``, runs ``sppdet eval`` on both and prints the per-class AP
side by side.

    PYTHONPATH=. python3 benchmarks/eval_without_images.py ../shared/data/voc-fixtures/VOC2007 \\
        --split test --work /tmp/eval-without-images
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from sppdet.data.voc import VOCDataset
from sppdet.evaluation import ClassDetections, write_comp4_file
from sppdet.evaluation.comp4 import comp4_filename
from sppdet.stages import evaluate


def jittered_comp4(data: VOCDataset, folder: Path, seed: int) -> None:
    """One to three noisy boxes per object, 15 % of them under another class name."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[str, float, np.ndarray]]] = {c: [] for c in data.classes}
    for ann in data:
        for box, label in zip(ann.boxes_voc, ann.labels):
            for _ in range(int(rng.integers(1, 4))):
                noisy = box + rng.normal(0, 0.08 * (box[2] - box[0] + 1), 4)
                name = data.classes[label]
                if rng.random() < 0.15:
                    name = data.classes[int(rng.integers(0, len(data.classes)))]
                rows[name].append((ann.image_id, float(rng.random()), noisy))
    folder.mkdir(parents=True, exist_ok=True)
    for name, found in rows.items():
        if not found:
            continue  # a missing file: no detections for that class
        ids, scores, boxes = zip(*found)
        write_comp4_file(folder / comp4_filename(data.split, name),
                         ClassDetections.from_voc(list(ids), np.array(scores), np.array(boxes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    bare = args.work / "annotations-only"
    for folder in ("Annotations", "ImageSets"):
        shutil.copytree(args.dataset / folder, bare / folder)
    comp4 = args.work / "jittered"
    jittered_comp4(VOCDataset(args.dataset, args.split), comp4, args.seed)
    reports = {}
    for name, root in (("with images", args.dataset), ("annotations only", bare)):
        summary = evaluate.run(root, args.split, comp4, args.work / name.replace(" ", "-"),
                               metric="11point", analysis=True)
        reports[name] = summary.report
        for line in summary.info + summary.warnings:
            print(f"{name}: {line}")
    a, b = reports.values()
    print(f"{'class':<12} {'with images':>12} {'annotations only':>17}")
    for ca, cb in zip(a["classes"], b["classes"]):
        print(f"{ca['class']:<12} {fmt(ca['ap']):>12} {fmt(cb['ap']):>17}")
    print(f"{'mAP':<12} {fmt(a['mean_ap']):>12} {fmt(b['mean_ap']):>17}")
    same = [ca["ap"] for ca in a["classes"]] == [cb["ap"] for cb in b["classes"]]
    print("identical per-class AP:", same)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.4f}"


if __name__ == "__main__":
    main()
