"""Ablation of the test-time steps of issue 18 on trained models: per-class AP of each row.

For every model (one per seed) and every row, ``sppdet detect`` runs on the test split with the
row's settings and ``sppdet eval --voc2007`` scores it; the table gives each row's per-class AP
and mAP as the mean over the models, with each model's mAP beside it (the spread between seeds
is the yardstick for every difference in the table). The rows:

* ``paper``: hard NMS at IoU 0.3 for every class (the paper's test setting);
* ``soft``: Gaussian Soft-NMS, sigma 0.5 (Bodla et al.'s default), for every class;
* ``tuned``: the model's own test settings (``test_settings.json``, chosen on validation by the
  pipeline's tune step), i.e. ``detect`` with no NMS option; a model without them is skipped;
* ``softmax``: the fine-tuned fc8 softmax instead of the SVMs, hard NMS at 0.3.

The models are trained beforehand (``sppdet pipeline ... --seed S`` with a model name per seed);
the proposals and the feature cache are those each model's pipeline used.

Usage:
    PYTHONPATH=. python3 benchmarks/quality_ablation.py WORK DATASET --models spp,spp-s1
        [--split test] [--rows paper,soft,tuned,softmax] [--jobs 2] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROWS = {
    "paper": ["--nms", "hard", "--iou-threshold", "0.3"],
    "soft": ["--nms", "gaussian", "--nms-sigma", "0.5"],
    "tuned": [],
    "softmax": ["--scorer", "softmax", "--nms", "hard", "--iou-threshold", "0.3"],
}
LABELS = {
    "paper": "hard NMS 0.3 (paper)",
    "soft": "Soft-NMS Gaussian 0.5",
    "tuned": "per-class NMS chosen on val (default)",
    "softmax": "softmax scores, hard NMS 0.3",
}


def sppdet(work: Path, *args: str) -> None:
    command = [sys.executable, "-m", "sppdet", "-q", "-w", str(work), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def class_aps(report: Path) -> dict[str, float]:
    data = json.loads(report.read_text())
    return {c["class"]: 100.0 * c["ap"] for c in data["classes"]}


def run_row(work: Path, dataset: str, split: str, model: str, row: str,
            jobs: int) -> dict[str, float]:
    """Detect ``split`` with ``model`` and the row's options, evaluate; class -> AP (%)."""
    out = work / "ablation" / model / f"{row}.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    sppdet(work, "detect", dataset, "--name", model, "--split", split, "--out", str(out),
           "--jobs", str(jobs), *ROWS[row])
    report_dir = work / "ablation" / model / f"{row}.eval"
    sppdet(work, "eval", dataset, str(out), "--voc2007", "--out", str(report_dir),
           "--no-plots")
    return class_aps(report_dir / "report.json")


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: row -> model -> class -> AP (%). Per-class cells are the mean over the
    models (seeds); the mAP is the mean of each model's mAP, which are listed beside it."""
    classes = list(next(iter(next(iter(results.values())).values())))
    lines = ["| test-time setting | " + " | ".join(classes) + " | mAP (mean) | mAP per seed |",
             "|---|" + "---:|" * (len(classes) + 2)]
    for row, by_model in results.items():
        per_class = [statistics.mean(aps[c] for aps in by_model.values()) for c in classes]
        per_seed = [statistics.mean(aps.values()) for aps in by_model.values()]
        lines.append(f"| {LABELS[row]} | " + " | ".join(f"{v:.1f}" for v in per_class) +
                     f" | **{statistics.mean(per_seed):.1f}** | " +
                     " / ".join(f"{v:.1f}" for v in per_seed) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the work dir holding the models")
    parser.add_argument("dataset", help="VOC-layout dataset")
    parser.add_argument("--models", required=True, help="model names, one per seed")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    models = args.models.split(",")
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {list(ROWS)}")

    results: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        for model in models:
            settings = args.work / "models" / model / "test_settings.json"
            if row == "tuned" and not settings.exists():
                print(f"{model}: no test_settings.json, row 'tuned' skipped", flush=True)
                continue
            aps = run_row(args.work, args.dataset, args.split, model, row, args.jobs)
            results.setdefault(row, {})[model] = aps
            print(f"{row:8s} {model:12s} mAP {statistics.mean(aps.values()):5.1f}  " +
                  "  ".join(f"{c} {v:5.1f}" for c, v in aps.items()), flush=True)

    table = format_table(results)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
