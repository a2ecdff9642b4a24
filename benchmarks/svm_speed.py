"""Time the SVM training of sppdet.training.svm on synthetic fc7-like features.

Two measurements:

1. ``solver``: one liblinear fit (``sppdet.training.svm.solver.fit_linear_svm``, the R-CNN
   settings) for one class with P positives and M negatives of dimension D, each size in a
   fresh subprocess so that its peak resident memory (ru_maxrss) is its own. Also reports the
   primal objective and, with ``--compare-tol``, how far liblinear's default tolerance (0.1,
   what the released code ran with) is from a tight solve.
2. ``trainer``: ``sppdet.training.svm.per_class.train_class_svms`` with hard-negative mining
   for K classes whose negatives are streamed image by image, with n_jobs = 1 and 2.

Features: ReLU of a low-rank Gaussian plus noise (fc7 after ReLU is sparse and correlated),
positives shifted along a class direction so that the classes overlap a little, all scaled to
mean L2 norm 20 as the pipeline does.

Usage (results: benchmarks/svm_speed_results.md):
    OMP_NUM_THREADS=1 PYTHONPATH=. python3 benchmarks/svm_speed.py solver --dim 1280 \
        --negatives 5000 20000 50000 --compare-tol 1e-4
    PYTHONPATH=. python3 benchmarks/svm_speed.py trainer --dim 1280 --classes 3 --jobs 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

LATENT = 64


def _basis(dim: int) -> np.ndarray:
    return np.random.default_rng(12345).normal(size=(LATENT, dim)) / np.sqrt(LATENT)


def _direction(class_index: int) -> np.ndarray:
    direction = np.random.default_rng(777 + class_index).normal(size=LATENT)
    return direction / np.linalg.norm(direction)


def synthetic_features(
    rng: np.random.Generator, n: int, dim: int, shift: np.ndarray | None = None
) -> np.ndarray:
    """``[n, dim]`` float32 ReLU features; ``shift`` moves the latent mean (positives)."""
    latent = rng.normal(size=(n, LATENT))
    if shift is not None:
        latent += shift
    x = latent @ _basis(dim) + 0.5 * rng.normal(size=(n, dim)) - 0.6
    # About 20 / mean norm: the scale the pipeline applies (estimate_feature_scale).
    return (np.maximum(x, 0.0) * (20.0 / np.sqrt(0.243 * dim))).astype(np.float32)


#: How far positives sit from negatives along the class direction (latent units); smaller is a
#: harder problem with more margin violations. Set by --shift.
SHIFT = {"value": 2.5}


def _positive_shift(class_index: int) -> np.ndarray:
    return SHIFT["value"] * _direction(class_index)


# ----------------------------------------------------------------------------------------------
# 1. One solver call
# ----------------------------------------------------------------------------------------------


def solver_one(dim: int, num_pos: int, num_neg: int, tol: float, compare_tol: float | None) -> dict:
    from sppdet.training.svm.solver import fit_linear_svm, svm_objective

    rng = np.random.default_rng(0)
    pos = synthetic_features(rng, num_pos, dim, _positive_shift(0))
    neg = synthetic_features(rng, num_neg, dim)
    settings = dict(C=1e-3, bias_feature=10.0, positive_weight=2.0)
    start = time.perf_counter()
    w, b = fit_linear_svm(pos, neg, tol=tol, **settings)
    seconds = time.perf_counter() - start
    objective = svm_objective(w, b, pos, neg, **settings).total
    result = {
        "dim": dim, "positives": num_pos, "negatives": num_neg, "shift": SHIFT["value"],
        "tol": tol,
        "seconds": round(seconds, 2), "objective": objective,
        "mean_norm": float(np.linalg.norm(neg, axis=1).mean()),
        "zero_fraction": float((neg == 0).mean()),
        "train_accuracy": float(
            np.concatenate([(pos @ w + b) > 0, (neg @ w + b) < 0]).mean()
        ),
    }
    if compare_tol is not None:
        start = time.perf_counter()
        w2, b2 = fit_linear_svm(pos, neg, tol=compare_tol, max_iter=100_000, **settings)
        result["tight_tol"] = compare_tol
        result["tight_seconds"] = round(time.perf_counter() - start, 2)
        tight = svm_objective(w2, b2, pos, neg, **settings).total
        result["tight_objective"] = tight
        result["relative_gap"] = (objective - tight) / tight
        result["score_corr"] = float(np.corrcoef(neg @ w + b, neg @ w2 + b2)[0, 1])
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


# ----------------------------------------------------------------------------------------------
# 2. The per-class trainer with mining
# ----------------------------------------------------------------------------------------------


def write_negatives(path: str, dim: int, num_images: int, per_image: int) -> None:
    """All images' candidate negatives in one .npy file (a stand-in for the feature cache)."""
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                      shape=(num_images, per_image, dim))
    for i in range(num_images):
        rng = np.random.default_rng(10_000 + i)
        # Every 4th image holds objects of another class: hard negatives for each class.
        shift = _positive_shift(1 + i % 3) if i % 4 == 0 else None
        store[i] = synthetic_features(rng, per_image, dim, shift)
    store.flush()
    del store


def streamed_negatives(class_name: str, path: str):
    """One class's negatives read image by image from the file (module-level for joblib)."""
    from sppdet.training.svm.inputs import ImageNegatives

    store = np.load(path, mmap_mode="r")
    for i in range(store.shape[0]):
        yield ImageNegatives(f"img{i:05d}", np.array(store[i]))


def trainer(dim: int, num_classes: int, jobs: list[int], num_pos: int, num_images: int,
            per_image: int) -> list[dict]:
    import tempfile
    from functools import partial

    from sppdet.training.svm.estimator import HardNegativeSVM
    from sppdet.training.svm.per_class import train_class_svms

    classes = [f"class{k}" for k in range(num_classes)]
    positives = {
        name: synthetic_features(np.random.default_rng(k), num_pos, dim, _positive_shift(k))
        for k, name in enumerate(classes)
    }
    results = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "negatives.npy")
        write_negatives(path, dim, num_images, per_image)
        start = time.perf_counter()
        for _ in streamed_negatives("class0", path):
            pass
        read_seconds = time.perf_counter() - start
        factory = partial(streamed_negatives, path=path)
        # CPU seconds of each class alone: what an idle machine's n_jobs scaling depends on
        # (3 classes on 2 workers cannot beat max(t_a + t_b, t_c) for the best split).
        cpu_seconds = {}
        for name in classes:
            start = time.process_time()
            HardNegativeSVM().fit(positives[name], factory(name))
            cpu_seconds[name] = round(time.process_time() - start, 1)
        for n_jobs in jobs:
            start = time.perf_counter()
            out = train_class_svms(classes, positives, factory, estimator=HardNegativeSVM(),
                                   n_jobs=n_jobs)
            seconds = time.perf_counter() - start
            results.append({
                "n_jobs": n_jobs, "classes": num_classes, "dim": dim, "images": num_images,
                "negatives_per_image": per_image, "seconds": round(seconds, 1),
                "one_pass_read_seconds": round(read_seconds, 2),
                "cpu_seconds_per_class": cpu_seconds,
                "retrainings": {c: len(m.history_) for c, m in out.models.items()},
                "peak_cache": {c: max(r.num_negatives for r in m.history_)
                               for c, m in out.models.items()},
                "final_cache": {c: m.history_[-1].cache_size for c, m in out.models.items()},
            })
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solver")
    s.add_argument("--dim", type=int, default=1280)
    s.add_argument("--positives", type=int, default=500)
    s.add_argument("--negatives", type=int, nargs="+", default=[5000, 20000, 50000])
    s.add_argument("--tol", type=float, default=0.1)
    s.add_argument("--compare-tol", type=float, default=None)
    s.add_argument("--shift", type=float, default=2.5)
    s.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    t = sub.add_parser("trainer")
    t.add_argument("--dim", type=int, default=1280)
    t.add_argument("--classes", type=int, default=3)
    t.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    t.add_argument("--positives", type=int, default=500)
    t.add_argument("--images", type=int, default=100)
    t.add_argument("--per-image", type=int, default=500)
    t.add_argument("--shift", type=float, default=2.5)
    args = parser.parse_args()

    SHIFT["value"] = args.shift
    print(f"# cpus={os.cpu_count()} load={os.getloadavg()}", file=sys.stderr)
    if args.command == "solver":
        if args.one:
            print(json.dumps(solver_one(args.dim, args.positives, args.negatives[0], args.tol,
                                        args.compare_tol)))
            return
        for num_neg in args.negatives:
            command = [sys.executable, __file__, "solver", "--one", "--dim", str(args.dim),
                       "--positives", str(args.positives), "--negatives", str(num_neg),
                       "--tol", str(args.tol), "--shift", str(args.shift)]
            if args.compare_tol is not None:
                command += ["--compare-tol", str(args.compare_tol)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            print(out.stdout.strip(), flush=True)
    else:
        for row in trainer(args.dim, args.classes, args.jobs, args.positives, args.images,
                           args.per_image):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
