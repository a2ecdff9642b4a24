"""Time the train-svm and train-bbox-reg stages on a fabricated split of VOC size per image.

The split: N images of 500 x 375 pixels (VOC's typical size) with 1-3 objects of 20 classes,
P proposals per image (random boxes plus jittered copies of the ground truth), and a conv5
cache with C channels (112: EfficientNet-Lite0's stride-16 cut) at the paper's 5 scales, in
float16; the maps are informative (a channel per class is high inside its objects, four
channels mark box edges, all have noise). The fc layers are a randomly initialised
:class:`sppdet.features.fc_head.FcHead` with 4096-wide fc6/fc7 (the timing does not depend on the
weights). The JPEG files are 8 x 8 placeholders: nothing here reads pixels, the annotation
gives the image size.

Subcommands:

- ``make DIR``: write the dataset and the artifacts;
- ``run DIR``: run both stages (``stages.train_svm.run``, ``stages.train_bbox_reg.run``) and
  print their summaries, with the split of time between pooling, fc and the solver, and the
  peak resident memory;
- ``per-class DIR``: the alternative where each class makes its own pass over the images
  (``sppdet.training.svm.per_class.train_class_svms``, features recomputed per class) against
  the shared pass (``train_class_svms_shared``), on the first few images and classes.

Usage (results: benchmarks/train_svm_speed_results.md):
    PYTHONPATH=. python3 benchmarks/train_svm_speed.py make /tmp/svm_bench --images 200
    PYTHONPATH=. python3 benchmarks/train_svm_speed.py run /tmp/svm_bench
    PYTHONPATH=. python3 benchmarks/train_svm_speed.py per-class /tmp/svm_bench --images 10
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record, write_artifact
from sppdet.data.voc import VOC_CLASSES, VOCDataset
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.training.finetune.compatibility import model_meta
from sppdet.ops.scales import PAPER_SCALES, resized_size

STRIDE = 16
CELL_CENTER = 7.5
WIDTH, HEIGHT = 500, 375


def _write_xml(path: Path, image_id: str, objects: list[tuple[str, tuple[int, ...]]]) -> None:
    parts = ["<annotation>", f"<filename>{image_id}.jpg</filename>",
             f"<size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>"]
    for name, (xmin, ymin, xmax, ymax) in objects:
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                     f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
                     f"<ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>")
    path.write_text("\n".join(parts))


def make_dataset(root: Path, n_images: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    placeholder = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    ids = []
    for i in range(n_images):
        image_id = f"{i:06d}"
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = int(rng.integers(40, 300)), int(rng.integers(40, 250))
            x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
            objects.append((VOC_CLASSES[int(rng.integers(0, 20))], (x + 1, y + 1, x + w, y + h)))
        _write_xml(root / "Annotations" / f"{image_id}.xml", image_id, objects)
        placeholder.save(root / "JPEGImages" / f"{image_id}.jpg")
        ids.append(image_id)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def proposals_for(rng: np.random.Generator, gt: np.ndarray, count: int) -> np.ndarray:
    n_jitter = min(count // 4, 60 * len(gt))
    xy = rng.uniform(0, [WIDTH - 20, HEIGHT - 20], size=(count - n_jitter, 2))
    wh = np.exp(rng.uniform(np.log(20), np.log(400), size=(count - n_jitter, 2)))
    boxes = [np.concatenate([xy, xy + wh], axis=1)]
    per_box = n_jitter // len(gt)
    for box in gt:
        w, h = box[2] - box[0], box[3] - box[1]
        shift = rng.uniform(-0.3, 0.3, size=(per_box, 2)) * [w, h]
        scale = np.exp(rng.uniform(-0.3, 0.3, size=(per_box, 2)))
        cx, cy = (box[0] + box[2]) / 2 + shift[:, 0], (box[1] + box[3]) / 2 + shift[:, 1]
        nw, nh = w * scale[:, 0], h * scale[:, 1]
        boxes.append(np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], axis=1))
    out = np.concatenate(boxes)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, WIDTH)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, HEIGHT)
    out = out[(out[:, 2] - out[:, 0] > 4) & (out[:, 3] - out[:, 1] > 4)]
    return out[:count].astype(np.float32)


def conv_maps(ann, channels: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    maps = {}
    for scale in PAPER_SCALES:
        h_in, w_in = resized_size(ann.height, ann.width, scale)
        hm, wm = -(-h_in // STRIDE), -(-w_in // STRIDE)
        cy = (STRIDE * np.arange(hm) + CELL_CENTER) * ann.height / h_in
        cx = (STRIDE * np.arange(wm) + CELL_CENTER) * ann.width / w_in
        fmap = rng.uniform(0, 0.3, size=(channels, hm, wm)).astype(np.float32)
        for box, label in zip(ann.boxes, ann.labels):
            inside = ((cy >= box[1]) & (cy < box[3]))[:, None] & \
                ((cx >= box[0]) & (cx < box[2]))[None, :]
            fmap[label] += 3.0 * inside
            for edge, (coord, axis) in enumerate(((cx, 1), (cy, 0), (cx, 1), (cy, 0))):
                bump = np.exp(-0.5 * ((coord - box[edge]) / 8.0) ** 2)
                fmap[20 + edge] += 2.0 * (bump[None, :] if axis == 1 else bump[:, None]) * inside
        maps[scale] = fmap.astype(np.float16)
    return maps


def make(args: argparse.Namespace) -> None:
    root = Path(args.dir)
    start = time.perf_counter()
    dataset = make_dataset(root / "data", args.images, args.seed)
    data = VOCDataset(dataset, "trainval", VOC_CLASSES)
    rng = np.random.default_rng(args.seed + 1)
    with ItemStore(root / "proposals.h5", Record("propose", {"method": "fabricated",
                                                              "seed": args.seed})) as store:
        for ann in data:
            store.write(ann.image_id, {"boxes": proposals_for(rng, ann.boxes, args.proposals)},
                        {"width": ann.width, "height": ann.height})
        store.finalize(data.image_ids)
    record = Record("cache-features", {
        "backbone": {"name": "efficientnet_lite0", "weights": "fabricated"},
        "stride": STRIDE, "channels": args.channels, "scales": list(PAPER_SCALES),
        "flip": False, "dtype": "float16"})
    with ItemStore(root / "features.h5", record) as store:
        for ann in data:
            store.write(ann.image_id,
                        {f"s{s}": m for s, m in conv_maps(ann, args.channels, rng).items()},
                        {"width": ann.width, "height": ann.height,
                         "cell_centers": {str(s): [CELL_CENTER, CELL_CENTER]
                                          for s in PAPER_SCALES}})
        store.finalize(data.image_ids)
    head = FcHead(args.channels * 50, 20, hidden=args.hidden, seed=args.seed)
    fc = root / "models" / "bench" / "fc.pt"
    fc.parent.mkdir(parents=True, exist_ok=True)
    with FeatureCache(root / "features.h5") as cache:
        params = model_meta(cache, VOC_CLASSES, (6, 3, 2, 1))  # as `sppdet finetune` records
    with write_artifact(fc, Record("finetune", params)) as tmp:
        head.save(tmp, **params)
    print(f"wrote {args.images} images x {args.proposals} proposals, C={args.channels}, "
          f"hidden {args.hidden} to {root} in {time.perf_counter() - start:.1f} s")


def run(args: argparse.Namespace) -> None:
    from sppdet.progress import configure_logging
    from sppdet.stages import train_bbox_reg, train_svm

    configure_logging(quiet=True)
    root = Path(args.dir)
    out = root / "models" / "bench"
    if "svm" in args.stages:
        summary = train_svm.run(root / "data", "trainval", out / "svm.npz",
                                proposals=root / "proposals.h5", features=root / "features.h5",
                                fc=out / "fc.pt", layer=args.layer, jobs=args.jobs,
                                device="cpu", force=True)
        print(summary.to_text())
        print(f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}"
              " GB")
    if "bbox" in args.stages:
        summary = train_bbox_reg.run(root / "data", "trainval", out / "bbox_reg.npz",
                                     proposals=root / "proposals.h5",
                                     features=root / "features.h5", device="cpu", force=True)
        print(summary.to_text())
        print(f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}"
              " GB")


def per_class(args: argparse.Namespace) -> None:
    """Shared pass vs one pass per class, on the first ``--images`` images and ``--classes``
    classes present in them."""
    from sppdet.io.item_store import ItemReader
    from sppdet.stages.training_inputs import image_truth, scale_from_norms, scale_sample
    from sppdet.training.svm.estimator import HardNegativeSVM
    from sppdet.training.svm.inputs import ImageNegatives
    from sppdet.training.svm.per_class import train_class_svms
    from sppdet.training.svm.shared import train_class_svms_shared
    from sppdet.training.windows import SharedNegativeStream, collect_positives
    from sppdet.features.window_features import WindowFeaturizer

    root = Path(args.dir)
    data = VOCDataset(root / "data", "trainval", VOC_CLASSES)
    truth = dict(list(image_truth(data).items())[:args.images])
    present = sorted({VOC_CLASSES[k] for t in truth.values() for k in t.labels},
                     key=VOC_CLASSES.index)[:args.classes]
    fc = root / "models" / "bench" / "fc.pt"
    head, _ = FcHead.load(fc)
    with FeatureCache(root / "features.h5") as cache, \
            ItemReader(root / "proposals.h5") as reader:
        sample = scale_sample(reader, list(truth), seed=0)
        positives, _, norms = collect_positives(WindowFeaturizer(cache, head, "fc7"), truth,
                                                VOC_CLASSES, scale_windows=sample)
    feature_scale = scale_from_norms(norms, "fc7")
    stream = SharedNegativeStream(str(root / "features.h5"), str(root / "proposals.h5"),
                                  str(fc), "fc7", VOC_CLASSES, truth)
    estimator = HardNegativeSVM()
    results = {}

    start = time.perf_counter()
    shared = train_class_svms_shared(present, positives, stream, estimator=estimator,
                                     feature_scale=feature_scale)
    results["shared"] = (time.perf_counter() - start, shared.stream_stats)

    stats_per_class = []

    def one_class(name):
        passes = stream([name])
        stats_per_class.append(passes.stats)
        for item in passes:
            mask = item.negative_masks[name]
            yield ImageNegatives(item.image_id, item.features[mask], item.proposal_index[mask])

    start = time.perf_counter()
    separate = train_class_svms(present, positives, one_class, estimator=estimator,
                                feature_scale=feature_scale)
    results["per-class"] = (time.perf_counter() - start, stats_per_class)
    for name in present:
        same = np.array_equal(shared.models[name].coef_, separate.models[name].coef_)
        print(f"{name}: same model {same}")
    solver = {"shared": sum(m.solver_seconds_ for m in shared.models.values()),
              "per-class": sum(m.solver_seconds_ for m in separate.models.values())}
    for key, (seconds, stats) in results.items():
        pool = sum(s.get("pool_seconds", 0.0) for s in stats)
        fc_s = sum(s.get("fc_seconds", 0.0) for s in stats)
        print(f"{key}: {len(truth)} images, {len(present)} classes: {seconds:.1f} s "
              f"(pool {pool:.1f} s, fc {fc_s:.1f} s, solver {solver[key]:.1f} s, passes "
              f"{len(stats)})")
    print(json.dumps({k: v[0] for k, v in results.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("dir")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--proposals", type=int, default=2000)
    p.add_argument("--channels", type=int, default=112)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=make)
    p = sub.add_parser("run")
    p.add_argument("dir")
    p.add_argument("--layer", default="fc7")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--stages", nargs="+", default=["svm", "bbox"], choices=["svm", "bbox"])
    p.set_defaults(func=run)
    p = sub.add_parser("per-class")
    p.add_argument("dir")
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--classes", type=int, default=3)
    p.set_defaults(func=per_class)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
