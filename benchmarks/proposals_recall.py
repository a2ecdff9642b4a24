"""Recall versus boxes of the proposal methods on real images, and what selective search needs.

Four measurements, single process, one OpenCV thread (CPU time of this process is the
"per core" figure; the machine load is printed beside it):

1. ``--methods``: recall at IoU 0.5 / 0.7 and AR for the top-k boxes of each method (library
   defaults; uncapped, so that k runs past the default cap of 2,000), boxes and CPU seconds
   per image.
2. ``--orders``: which order keeps the most objects under a cap, for the boxes of the
   selective search fast mode: the hierarchy rank order of the library (with ``--seeds``
   seeds, to show how much one seed's luck moves it), OpenCV's own order
   (``process()`` of one run with every colour space, scale and strategy, C library seeded
   with ``srand(0)``), and the scale-interleaved order sppdet used before (octave strata of
   box size taken round-robin, OpenCV's order inside each stratum).
3. ``--timing``: ss-fast beside OpenCV's own ``switchToSelectiveSearchFast``, image by image.
4. ``--variants``: selective search settings one change at a time, from OpenCV's
   ``switchToSelectiveSearchFast`` defaults to the paper's fast mode and past it (no resize),
   with recall per class and per object size: why selective search missed BCCD's cells.

Usage (from the project root; data sets are not part of the project, see shared/data):

    OMP_NUM_THREADS=1 python benchmarks/proposals_recall.py --data-root ../shared/data \\
        [--methods ss-fast edgeboxes] [--orders [--seeds 5]] [--variants] [--timing] \\
        [--datasets voc bccd] [--bccd-images 72] [--json out.json]

Data sets: ``voc``: the real VOC images of ``voc-fixtures`` (VOC2007 and VOC2012, every image
of ``ImageSets/Main/test.txt``); ``bccd``: the first ``--bccd-images`` images of BCCD's test
split. Difficult objects are excluded, degenerate ground-truth boxes dropped and counted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proposals_speed import load_dataset  # noqa: E402

from sppdet.ops.boxes import box_iou, xywh_to_xyxy  # noqa: E402
from sppdet.proposals import (  # noqa: E402
    default_params,
    evaluate_recall,
    propose_image,
)
from sppdet.proposals.common import finish_boxes, resize_longer_side  # noqa: E402
from sppdet.proposals.selective_search import (  # noqa: E402
    MODES,
    colour_image,
    grouping_boxes,
    hierarchy_rank_order,
    similarity_strategy,
)

BUDGETS = (100, 300, 500, 1000, 1500, 2000, 2500, None)
SIZE_BINS = (0, 32, 64, 96, 128, 10_000)  # sqrt(area) in original pixels

# Settings between OpenCV's fast mode and the paper's, one change at a time: colour spaces
# (hsv = OpenCV's 0-179 hue, hsv-full = 0-255), segmentation scales k, the minimum segment size
# (None: k) and the longer side the image is shrunk to (None: never).
VARIANTS: dict[str, dict] = {
    "opencv-fast": dict(spaces=("hsv", "lab"), ks=(150, 300, 450), min_region=100,
                        max_size=500),
    "k=50,100": dict(spaces=("hsv", "lab"), ks=(50, 100), min_region=100, max_size=500),
    "k=50,100 min=k": dict(spaces=("hsv", "lab"), ks=(50, 100), min_region=None,
                           max_size=500),
    "paper fast (hsv-full)": dict(spaces=("hsv-full", "lab"), ks=(50, 100), min_region=None,
                                  max_size=500),
    "paper fast, no resize": dict(spaces=("hsv-full", "lab"), ks=(50, 100), min_region=None,
                                  max_size=None),
}


def load_all(data_root: Path, bccd_images: int) -> dict[str, tuple[dict, dict, int]]:
    """name -> (images, ground truth, dropped degenerate boxes)."""
    sets: dict[str, tuple[dict, dict, int]] = {}
    images: dict = {}
    truths: dict = {}
    dropped = 0
    for year in ("VOC2007", "VOC2012"):
        root = data_root / "voc-fixtures" / year
        ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()
        more_images, more_truths, more_dropped = load_dataset(root, ids)
        images.update({f"{year}/{i}": v for i, v in more_images.items()})
        truths.update({f"{year}/{i}": v for i, v in more_truths.items()})
        dropped += more_dropped
    sets["voc"] = (images, truths, dropped)
    root = data_root / "bccd"
    ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[:bccd_images]
    sets["bccd"] = load_dataset(root, ids)
    return sets


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} CPUs"


def recall_line(report, label: str | None = None) -> str:
    r50, r70, ar = report.recall_at(0.5, label), report.recall_at(0.7, label), None
    ar = report.average_recall(label)
    cells = [f"{a:.3f}" if a is not None else "-" for a in r50]
    return (" | ".join(cells) + f" || R@0.7 {r70[-1]:.3f}, AR {ar[-1]:.3f} (all boxes)")


def budget_header() -> str:
    return " | ".join("all" if k is None else str(k) for k in BUDGETS)


def best_ious(truths: dict, proposals: dict) -> list[tuple[str, float, float]]:
    """(label, sqrt(area), best IoU over all boxes) of every non-difficult object."""
    rows = []
    for image_id, truth in truths.items():
        boxes = proposals[image_id]
        for j, box in enumerate(truth.boxes):
            if truth.difficult is not None and truth.difficult[j]:
                continue
            size = float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
            best = float(box_iou(box[None], boxes).max()) if len(boxes) else 0.0
            rows.append((truth.labels[j], size, best))
    return rows


def by_size_text(rows: list[tuple[str, float, float]]) -> str:
    parts = []
    for low, high in zip(SIZE_BINS[:-1], SIZE_BINS[1:]):
        hits = [best >= 0.5 for _, size, best in rows if low <= size < high]
        if hits:
            parts.append(f"[{low},{high if high < 10_000 else 'inf'}) px: "
                         f"{np.mean(hits):.3f} of {len(hits)}")
    return "; ".join(parts)


# ---------------------------------------------------------------- 1. methods


def run_methods(methods: list[str], sets: dict, results: dict) -> None:
    for name, (images, truths, dropped) in sets.items():
        print(f"\n== methods on {name}: {len(images)} images, {dropped} degenerate boxes dropped")
        print(f"recall@0.5 at top k = {budget_header()}")
        for method in methods:
            params = default_params(method)
            # Uncapped, so that the curve runs past the default cap (the cap keeps a prefix).
            params = replace(params, max_boxes=None if method.startswith("ss-") else 5000)
            proposals, cpu, wall = {}, 0.0, 0.0
            load_before = load_text()
            for image_id, image in images.items():
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                proposals[image_id] = propose_image(image, method, params).boxes
                cpu += time.process_time() - cpu_start
                wall += time.perf_counter() - wall_start
            report = evaluate_recall(truths, proposals, num_boxes=BUDGETS)
            counts = [len(p) for p in proposals.values()]
            print(f"-- {method}: {cpu / len(images):.2f} s CPU per image "
                  f"({wall / len(images):.2f} s wall; {load_before} before, {load_text()} "
                  f"after); boxes per image uncapped: mean {np.mean(counts):.0f}, "
                  f"median {np.median(counts):.0f}")
            print(f"   mean boxes used: " + " | ".join(f"{m:.0f}"
                                                     for m in report.mean_boxes_per_image))
            print(f"   all objects ({report.overall.num_objects}): {recall_line(report)}")
            for label in sorted(report.per_class):
                if name == "bccd":
                    print(f"   {label} ({report.per_class[label].num_objects}): "
                          f"{recall_line(report, label)}")
            print(f"   by size (all boxes): {by_size_text(best_ious(truths, proposals))}")
            results.setdefault("methods", []).append({
                "dataset": name, "method": method, "images": len(images),
                "cpu_seconds_per_image": cpu / len(images),
                "wall_seconds_per_image": wall / len(images),
                "boxes_mean": float(np.mean(counts)), "load": [load_before, load_text()],
                "report": report.to_dict(),
            })


# ---------------------------------------------------------------- 2. orders


def _opencv_one_run(image_bgr: np.ndarray, seed: int = 0) -> np.ndarray:
    """The fast mode as one OpenCV run, in OpenCV's own (srand-seeded) order."""
    segmentation = cv2.ximgproc.segmentation
    search = segmentation.createSelectiveSearchSegmentation()
    fast = MODES["fast"]
    for space in fast.colour_spaces:
        search.addImage(colour_image(image_bgr, space))
    for factor in fast.k_factors:
        k = default_params("ss-fast").k * factor
        search.addGraphSegmentation(segmentation.createGraphSegmentation(0.8, float(k), int(k)))
    for strategy in fast.strategies:
        search.addStrategy(similarity_strategy(strategy))
    srand = ctypes.CDLL(None).srand
    srand.argtypes = [ctypes.c_uint]
    srand(seed)
    return xywh_to_xyxy(np.asarray(search.process(), np.int64).reshape(-1, 4))


def scale_interleaved_order(boxes_xyxy: np.ndarray) -> np.ndarray:
    """sppdet's former order: octave strata floor(log2(sqrt(area))) taken round-robin, larger
    strata first in each round, the input order inside each stratum."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    stratum = np.floor(0.5 * np.log2(np.maximum(areas, 1.0))).astype(np.int64)
    by_stratum = np.argsort(stratum, kind="stable")
    sorted_strata = stratum[by_stratum]
    starts = np.searchsorted(sorted_strata, sorted_strata, side="left")
    position = np.empty_like(stratum)
    position[by_stratum] = np.arange(boxes.shape[0]) - starts
    return np.lexsort((-stratum, position)).astype(np.int64)


def run_orders(sets: dict, results: dict, seeds: int) -> None:
    params = default_params("ss-fast")
    fast = MODES["fast"]
    for name, (images, truths, _) in sets.items():
        orders: dict[str, dict] = {f"hierarchy rank, seed {seed}": {} for seed in range(seeds)}
        orders.update({"OpenCV": {}, "scale-interleaved (former)": {}})
        for image_id, image in images.items():
            height, width = image.shape[:2]
            resized, sx, sy = resize_longer_side(image, params.max_size)
            bgr = np.ascontiguousarray(resized[:, :, ::-1])
            # The library's groups, computed once and ranked with several seeds.
            groups = [grouping_boxes(colour_image(bgr, space), params.k * factor, params.sigma,
                                     fast.strategies)
                      for space in fast.colour_spaces for factor in fast.k_factors]
            ranked = {f"hierarchy rank, seed {seed}": hierarchy_rank_order(groups, seed)[0]
                      for seed in range(seeds)}
            opencv = _opencv_one_run(bgr)
            ranked["OpenCV"] = opencv
            ranked["scale-interleaved (former)"] = opencv[scale_interleaved_order(opencv)]
            for key, boxes in ranked.items():
                orders[key][image_id], _ = finish_boxes(
                    boxes, None, scale_x=sx, scale_y=sy, width=width, height=height,
                    min_size=params.min_size)
        print(f"\n== orders of the ss-fast boxes on {name} ({len(images)} images); "
              f"recall@0.5 at top k = {budget_header()}")
        for key, proposals in orders.items():
            report = evaluate_recall(truths, proposals, num_boxes=BUDGETS)
            print(f"-- {key:28s} {recall_line(report)}")
            results.setdefault("orders", []).append(
                {"dataset": name, "order": key, "report": report.to_dict()})


# ---------------------------------------------------------------- 3. timing


def run_timing(sets: dict, results: dict) -> None:
    """ss-fast against OpenCV's own switchToSelectiveSearchFast, image by image, same process."""
    for name, (images, _, _) in sets.items():
        ours = theirs = 0.0
        for image in images.values():
            start = time.process_time()
            propose_image(image, "ss-fast")
            ours += time.process_time() - start
            small, _, _ = resize_longer_side(image, default_params("ss-fast").max_size)
            start = time.process_time()
            search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
            search.setBaseImage(np.ascontiguousarray(small[:, :, ::-1]))
            search.switchToSelectiveSearchFast()
            search.process()
            theirs += time.process_time() - start
        n = len(images)
        print(f"\n== time on {name} ({n} images): ss-fast {ours / n:.2f} s CPU per image, "
              f"OpenCV's switchToSelectiveSearchFast {theirs / n:.2f} s; {load_text()}")
        results.setdefault("timing", []).append(
            {"dataset": name, "ss_fast": ours / n, "opencv_fast": theirs / n, "load": load_text()})


# ---------------------------------------------------------------- 4. variants


def variant_boxes(image_rgb: np.ndarray, spaces: tuple[str, ...], ks: tuple[int, ...],
                  min_region: int | None, max_size: int | None) -> np.ndarray:
    """Selective search with the fast mode's strategies and the given settings, ranked and
    finished as the library does."""
    height, width = image_rgb.shape[:2]
    resized, sx, sy = resize_longer_side(image_rgb, max_size)
    bgr = np.ascontiguousarray(resized[:, :, ::-1])
    segmentation = cv2.ximgproc.segmentation
    groups = []
    for space in spaces:
        converted = (cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV) if space == "hsv"
                     else colour_image(bgr, "hsv" if space == "hsv-full" else space))
        for k in ks:
            search = segmentation.createSelectiveSearchSegmentation()
            search.addImage(converted)
            search.addGraphSegmentation(segmentation.createGraphSegmentation(
                0.8, float(k), int(min_region or k)))
            for strategy in MODES["fast"].strategies:
                search.addStrategy(similarity_strategy(strategy))
            groups.append(xywh_to_xyxy(np.asarray(search.process(), np.int64).reshape(-1, 4)))
    boxes, _ = hierarchy_rank_order(groups, seed=0)
    boxes, _ = finish_boxes(boxes, None, scale_x=sx, scale_y=sy, width=width, height=height,
                            min_size=10.0)
    return boxes


def run_variants(sets: dict, results: dict) -> None:
    for name, (images, truths, _) in sets.items():
        print(f"\n== selective search settings on {name} ({len(images)} images); "
              f"recall@0.5 at top k = {budget_header()}")
        for key, settings in VARIANTS.items():
            proposals, cpu = {}, 0.0
            load_before = load_text()
            for image_id, image in images.items():
                start = time.process_time()
                proposals[image_id] = variant_boxes(image, **settings)
                cpu += time.process_time() - start
            report = evaluate_recall(truths, proposals, num_boxes=BUDGETS)
            counts = [len(p) for p in proposals.values()]
            rows = best_ious(truths, proposals)
            print(f"-- {key}: {settings}; {cpu / len(images):.2f} s CPU per image "
                  f"({load_before}); boxes mean {np.mean(counts):.0f}")
            print(f"   all: {recall_line(report)}")
            if name == "bccd":
                for label in sorted(report.per_class):
                    print(f"   {label}: {recall_line(report, label)}")
            print(f"   by size (all boxes): {by_size_text(rows)}")
            results.setdefault("variants", []).append({
                "dataset": name, "variant": key, "settings": {k: v for k, v in
                                                              settings.items()},
                "cpu_seconds_per_image": cpu / len(images), "boxes_mean": float(np.mean(counts)),
                "load": load_before, "report": report.to_dict()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--methods", nargs="*", default=["ss-fast", "edgeboxes"])
    parser.add_argument("--orders", action="store_true")
    parser.add_argument("--seeds", type=int, default=5,
                        help="--orders: rank the library's boxes with seeds 0 .. N-1")
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--timing", action="store_true",
                        help="time ss-fast beside OpenCV's own fast mode")
    parser.add_argument("--datasets", nargs="+", default=["voc", "bccd"],
                        choices=["voc", "bccd"])
    parser.add_argument("--bccd-images", type=int, default=72)
    parser.add_argument("--json", type=Path, help="write all numbers to this JSON file")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} cv2 threads="
          f"{cv2.getNumThreads()} opencv {cv2.__version__}; {load_text()}")
    sets = {k: v for k, v in load_all(args.data_root, args.bccd_images).items()
            if k in args.datasets}
    results: dict = {}
    if args.methods:
        run_methods(args.methods, sets, results)
    if args.orders:
        run_orders(sets, results, args.seeds)
    if args.variants:
        run_variants(sets, results)
    if args.timing:
        run_timing(sets, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
