"""The paper's tables 2 and 3 in miniature: SPP-net classification variants side by side.

Trains ZF-5 + SPP + fc6/fc7/fc8 from scratch (sppdet.classification) on image-level examples
under several settings that differ in one thing each -- same examples, epochs, seed and
learning-rate schedule -- and tests each with the centre crop, the full image and 10 views
pooled from one feature map (paper 3.1.4-3.1.5):

* ``no-spp``: one 6x6 pooling level (the paper's baseline), single-size training;
* ``spp``: the 4-level pyramid {6, 3, 2, 1}, single-size training;
* ``spp-multi``: the pyramid, multi-size training alternating epochs between the crop size and
  the small size (the paper's multi-size training);
* ``spp-random``: the pyramid, one size per epoch drawn from [small, crop].

Sizes are the paper's halved (crop 112, small 90, images stored at shorter side 128) so that
a CPU can train every variant in minutes; their ratios are the paper's (224 / 180 / 256).

Datasets: ``demo`` (object and background crops of a synthetic dataset made here with
``make_demo_data``) or a VOC-layout folder such as ../shared/data/bccd (crops of its objects),
trained on ``trainval`` and tested on ``test``. ``--max-per-class`` caps the training examples of
each class (BCCD has ~10 red cells per image).

Usage (results: benchmarks/results/pretrain_<dataset>.md):
    PYTHONPATH=. python3 benchmarks/pretrain_tables.py demo --work /tmp/pt-demo
    PYTHONPATH=. python3 benchmarks/pretrain_tables.py ../shared/data/bccd --work /tmp/pt-bccd \
        --max-per-class 400
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from sppdet.backbones import build_backbone
from sppdet.classification.evaluate import evaluate_modes
from sppdet.classification.examples import (
    ExampleSet,
    holdout_split,
    load_example_images,
    voc_crop_examples,
)
from sppdet.classification.model import SPPClassifier, ViewSettings
from sppdet.classification.training import ClassifierTrainer, PretrainConfig
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data

VARIANTS = {
    "no-spp": dict(levels=(6,), multi_size="off"),
    "spp": dict(levels=(6, 3, 2, 1), multi_size="off"),
    "spp-multi": dict(levels=(6, 3, 2, 1), multi_size="alternate"),
    "spp-random": dict(levels=(6, 3, 2, 1), multi_size="random"),
}


def cap_per_class(examples: ExampleSet, cap: int, seed: int) -> ExampleSet:
    """At most ``cap`` examples of each class, drawn at random (seeded), in the original order."""
    if cap <= 0:
        return examples
    labels = examples.labels()
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in np.unique(labels):
        rows = np.nonzero(labels == label)[0]
        keep += rng.permutation(rows)[:cap].tolist()
    return examples.subset(sorted(keep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="'demo' or a VOC-layout folder")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--lr-drop-epochs", type=int, nargs="*", default=[9],
                        help="fixed schedule (the same for every variant); none = on plateau")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--small", type=int, default=90)
    parser.add_argument("--image", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-per-class", type=int, default=0)
    parser.add_argument("--demo-images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--jsonl", type=Path, default=None,
                        help="append each finished row here, and report every row in it (so a "
                             "long run can be split or resumed; default <work>/rows.jsonl)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    if args.dataset == "demo":
        root = args.work / "demo-data"
        if not (root / "ImageSets").exists():
            make_demo_data(root, DemoDataConfig(seed=7, n_trainval=args.demo_images,
                                                n_test=args.demo_images // 3), jobs=2)
        name = "demo"
    else:
        root = Path(args.dataset)
        name = root.name
    train_all = voc_crop_examples(root, "trainval")
    train_set = cap_per_class(train_all, args.max_per_class, seed=0)
    test_set = voc_crop_examples(root, "test", classes=train_all.classes)
    started = time.perf_counter()
    train_images = load_example_images(train_set, short_side=args.image, jobs=2)
    test_images = load_example_images(test_set, short_side=args.image, jobs=2)
    print(f"{name}: {len(train_set)} training examples {train_set.counts()}, "
          f"{len(test_set)} test examples {test_set.counts()} "
          f"(decoded in {time.perf_counter() - started:.0f} s)", flush=True)
    views = ViewSettings(size=args.crop, scales=(args.image,), views="10")

    jsonl = args.jsonl or args.work / "rows.jsonl"
    done = {(row["variant"], row["seed"]) for row in read_rows(jsonl)}
    for seed in args.seeds:
        fit_set, val_set = holdout_split(train_set, 0.1, seed=seed)
        index = {id(example): i for i, example in enumerate(train_set.examples)}
        fit_images = [train_images[index[id(e)]] for e in fit_set.examples]
        val_images = [train_images[index[id(e)]] for e in val_set.examples]
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            config = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                    lr_drop_epochs=tuple(args.lr_drop_epochs),
                                    crop_size=args.crop, small_size=args.small,
                                    image_size=args.image, hidden=args.hidden, seed=seed,
                                    **VARIANTS[variant])
            model = SPPClassifier(build_backbone("zf5", seed=seed), len(train_set.classes),
                                  levels=config.levels, hidden=config.hidden, seed=seed)
            t0 = time.perf_counter()
            result = ClassifierTrainer(config).train(model, fit_images, fit_set.labels(),
                                                     val_images, val_set.labels())
            train_seconds = time.perf_counter() - t0
            results, _ = evaluate_modes(model, test_images, test_set.labels(),
                                        train_set.classes, crop_size=args.crop,
                                        image_size=args.image, views=views)
            row = {"variant": variant, "seed": seed, "train_seconds": train_seconds,
                   "final_lr": result.history[-1].lr,
                   "val_error": result.history[-1].val_error,
                   "sizes": sorted({s.input_size for s in result.history}),
                   **{r.mode: r.top1_error for r in results},
                   **{f"{r.mode}_top5": r.top5_error for r in results}}
            with jsonl.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    rows = read_rows(jsonl)

    out = args.out or Path("benchmarks/results") / f"pretrain_{name}.md"
    write_results(out, name, args, rows, train_set, test_set)
    print(f"wrote {out}")


def read_rows(path: Path) -> list[dict]:
    """Rows of earlier (possibly interrupted) runs, one JSON object per line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_results(out: Path, name: str, args: argparse.Namespace, rows: list[dict],
                  train_set: ExampleSet, test_set: ExampleSet) -> None:
    if args.lr_drop_epochs:
        drops = ", ".join(str(epoch + 1) for epoch in args.lr_drop_epochs)
        schedule = f"from epoch {drops} on (1-based; the same for every variant)"
    else:
        schedule = "after 2 epochs without a lower held-out error"
    lines = [f"# SPP-net classification variants on {name} (tables 2 and 3 in miniature)", "",
             f"Command: `PYTHONPATH=. python3 benchmarks/pretrain_tables.py {args.dataset} "
             f"--work {args.work} --epochs {args.epochs} --seeds "
             f"{' '.join(map(str, sorted({row['seed'] for row in rows})))}"
             f"{f' --max-per-class {args.max_per_class}' if args.max_per_class else ''}`; "
             f"{date.today().isoformat()}, {platform.machine()} CPU, {args.threads} threads, "
             f"torch {torch.__version__}.", "",
             f"ZF-5 from scratch, crop {args.crop}, small size {args.small}, examples stored at "
             f"shorter side {args.image}; {args.epochs} epochs, batch {args.batch_size}, "
             f"lr {args.lr} divided by 10 {schedule}, "
             f"fc6/fc7 width {args.hidden}, dropout 0.5, flips and colour jitter 0.2; 10% of "
             f"each class held out for the schedule.", "",
             f"Training examples: {len(train_set)} ({train_set.counts()}); test examples: "
             f"{len(test_set)} ({test_set.counts()}).", "",
             "Top-1 error (%) on the test examples; crop = centre crop, full = whole example at "
             "its stored size, 10-view = centre + 4 corners and their mirrors pooled from one "
             "map.", "",
             "| variant | seed | input sizes | crop | full | 10-view | train time (s) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['seed']} | {row['sizes']} | "
                     f"{100 * row['crop']:.2f} | {100 * row['full']:.2f} | "
                     f"{100 * row['multiview']:.2f} | {row['train_seconds']:.0f} |")
    if len({row["seed"] for row in rows}) > 1:
        lines += ["", "Mean over seeds:", "", "| variant | crop | full | 10-view |",
                  "|---|---:|---:|---:|"]
        for variant in dict.fromkeys(row["variant"] for row in rows):
            mine = [row for row in rows if row["variant"] == variant]
            means = [100 * np.mean([row[mode] for row in mine])
                     for mode in ("crop", "full", "multiview")]
            lines.append(f"| {variant} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    lines += ["", "Raw rows (JSON):", "", "```"] + [json.dumps(row) for row in rows] + ["```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
