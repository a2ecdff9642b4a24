"""Speed and recall of the proposal methods on real images, single process, one thread.

For each method: seconds per image (wall clock and CPU time of this process; on a shared
machine the CPU time is the fairer "one core" figure), boxes per image, and recall at IoU 0.5
and 0.7 and AR at the box budgets, per data set. Annotations are VOC XML, parsed here with
xml.etree (1-based inclusive -> 0-based continuous with sppdet.ops.boxes.voc_to_xyxy); degenerate
ground-truth boxes are dropped and counted.

Usage (from the project root; data sets are not part of the project, see shared/data):

    OMP_NUM_THREADS=1 python benchmarks/proposals_speed.py --data-root ../shared/data \\
        [--methods ss-fast edgeboxes] [--bccd-images 20] [--exclude 000084] \\
        [--json out.json] [--plot-dir plots/]

Data sets: ``voc-fixtures/VOC2007`` (all images in JPEGImages) and the first ``--bccd-images``
images of ``bccd/ImageSets/Main/test.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sppdet.ops.boxes import voc_to_xyxy  # noqa: E402
from sppdet.proposals import (  # noqa: E402
    METHODS,
    ImageGroundTruth,
    default_params,
    evaluate_recall,
    propose_image,
)


def read_voc_annotation(path: Path) -> tuple[ImageGroundTruth, int]:
    """Objects of one VOC XML file and the number of degenerate boxes dropped."""
    root = ET.parse(path).getroot()
    boxes, labels, difficult = [], [], []
    dropped = 0
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:  # 1-based inclusive: xmin == xmax is one pixel wide
            dropped += 1
            continue
        flag = obj.find("difficult")
        boxes.append([xmin, ymin, xmax, ymax])
        labels.append(obj.find("name").text.strip())
        difficult.append(flag is not None and flag.text.strip() == "1")
    truth = ImageGroundTruth(
        voc_to_xyxy(np.array(boxes, dtype=np.float64).reshape(-1, 4)),
        labels,
        np.array(difficult, dtype=bool),
    )
    return truth, dropped


def load_dataset(root: Path, image_ids: list[str]) -> tuple[dict, dict, int]:
    images, truths, dropped = {}, {}, 0
    for image_id in image_ids:
        bgr = cv2.imread(str(root / "JPEGImages" / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {image_id} under {root}")
        images[image_id] = np.ascontiguousarray(bgr[:, :, ::-1])
        truths[image_id], count = read_voc_annotation(root / "Annotations" / f"{image_id}.xml")
        dropped += count
    return images, truths, dropped


def run_method(method: str, images: dict) -> tuple[dict, float, float]:
    params = default_params(method)
    proposals, wall, cpu = {}, 0.0, 0.0
    for image_id, image in images.items():
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        proposals[image_id] = propose_image(image, method, params)
        wall += time.perf_counter() - wall_start
        cpu += time.process_time() - cpu_start
    return proposals, wall / len(images), cpu / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--bccd-images", type=int, default=20)
    parser.add_argument("--exclude", nargs="*", default=[], help="image ids to leave out")
    parser.add_argument("--json", type=Path, help="write all numbers to this JSON file")
    parser.add_argument("--plot-dir", type=Path, help="write recall-vs-boxes PNGs here")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    voc_root = args.data_root / "voc-fixtures" / "VOC2007"
    bccd_root = args.data_root / "bccd"
    voc_ids = sorted(p.stem for p in (voc_root / "JPEGImages").glob("*.jpg"))
    bccd_ids = (bccd_root / "ImageSets" / "Main" / "test.txt").read_text().split()
    datasets = {
        "voc2007-fixtures": (voc_root, [i for i in voc_ids if i not in args.exclude]),
        "bccd-test": (bccd_root, [i for i in bccd_ids[: args.bccd_images] if i not in args.exclude]),
    }
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} cv2 threads={cv2.getNumThreads()} "
        f"opencv {cv2.__version__}; excluded: {args.exclude or 'none'}"
    )
    results = []
    for name, (root, ids) in datasets.items():
        if not ids:
            continue
        images, truths, dropped = load_dataset(root, ids)
        sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images.values()})
        print(f"\n== {name}: {len(images)} images ({', '.join(sizes)}); {dropped} degenerate "
              "ground-truth boxes dropped")
        for method in args.methods:
            proposals, wall, cpu = run_method(method, images)
            report = evaluate_recall(truths, proposals)
            counts = [len(p) for p in proposals.values()]
            k2000 = report.num_boxes.index(2000)
            row = {
                "dataset": name,
                "method": method,
                "images": len(images),
                "seconds_per_image_wall": wall,
                "seconds_per_image_cpu": cpu,
                "boxes_per_image_mean": float(np.mean(counts)),
                "boxes_per_image_min": int(np.min(counts)),
                "boxes_per_image_max": int(np.max(counts)),
                "recall@0.5_2000": report.recall_at(0.5)[k2000],
                "recall@0.7_2000": report.recall_at(0.7)[k2000],
                "ar_2000": report.average_recall()[k2000],
                "report": report.to_dict(),
            }
            results.append(row)
            print(
                f"-- {method}: {cpu:.3f} s/image CPU ({wall:.3f} s wall), boxes/image "
                f"{row['boxes_per_image_mean']:.0f} [{row['boxes_per_image_min']}, "
                f"{row['boxes_per_image_max']}]; at 2000 boxes: recall@0.5 "
                f"{row['recall@0.5_2000']:.3f}, recall@0.7 {row['recall@0.7_2000']:.3f}, "
                f"AR {row['ar_2000']:.3f}"
            )
            print(report.to_text())
            if args.plot_dir:
                args.plot_dir.mkdir(parents=True, exist_ok=True)
                report.plot(args.plot_dir / f"recall_{name}_{method}.png", f"{method} on {name}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
