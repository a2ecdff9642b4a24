"""Time the conv trunks on the CPU: seconds per image for 1 scale and for 5 scales.

Each configuration runs in its own Python process, because the allocator setting
(``sppdet.backbones.cpu_tuning.keep_freed_memory``) is process-wide and cannot be undone.

Usage (from the project root)::

    python3 benchmarks/backbone_speed.py --compare            # the table in backbone_speed.md
    python3 benchmarks/backbone_speed.py --lrn-micro          # LRN alone
    python3 benchmarks/backbone_speed.py --backbone zf5 --allocator keep --channels-last

The image is resized so that its shorter side equals each scale (bilinear, no antialiasing, as
in the released SPP-net code) and run through ``backbone(...)`` under ``torch.inference_mode``.
Reported: median (and minimum) wall seconds per image over ``--repeats`` runs after one warm-up
run, the process's CPU seconds per image (user + system, all threads: about threads x wall when
the machine is otherwise idle), minor page faults per image, the process's peak resident
memory, and the 1-minute load average (other processes on the machine slow the wall times).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A 500x375 VOC2007 photo from the shared check data (SOURCES.md there), which sits next to the
# project folder (or one level further up for a checkout inside a work tree folder).
_SHARED_IMAGE = os.path.join("shared", "data", "voc-fixtures", "VOC2007", "JPEGImages",
                             "000005.jpg")
DEFAULT_IMAGE = next(
    (path for path in (os.path.join(ROOT, "..", _SHARED_IMAGE),
                       os.path.join(ROOT, "..", "..", _SHARED_IMAGE)) if os.path.isfile(path)),
    os.path.join(ROOT, "..", _SHARED_IMAGE),
)
ONE_SCALE = (688,)
FIVE_SCALES = (480, 576, 688, 864, 1200)


def load_image(path: str | None) -> tuple[np.ndarray, str]:
    """RGB uint8 image from ``path``, or a fixed random 375x500 image when there is none."""
    import cv2

    if path and os.path.isfile(path):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is not None:
            return np.ascontiguousarray(bgr[:, :, ::-1]), os.path.relpath(path, ROOT)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8), "random 500x375"


def resize_min_side(image: np.ndarray, scale: int) -> np.ndarray:
    """Resize so that min(height, width) == scale (bilinear, no antialiasing)."""
    import cv2

    height, width = image.shape[:2]
    factor = scale / min(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def run_one(args: argparse.Namespace) -> dict:
    """Time one configuration in this process; returns the measurements as a dict."""
    import torch

    from sppdet.backbones import build_backbone
    from sppdet.backbones.cpu_tuning import keep_freed_memory

    allocator_applied = keep_freed_memory() if args.allocator == "keep" else False
    torch.set_num_threads(args.threads)
    backbone = build_backbone(args.backbone, pretrained=args.backbone == "efficientnet_lite0")
    if args.lrn == "torch":
        from sppdet.backbones.lrn import CrossChannelLRN

        for name, module in list(backbone.features.named_children()):
            if isinstance(module, CrossChannelLRN):
                setattr(backbone.features, name, torch.nn.LocalResponseNorm(
                    module.size, module.alpha, module.beta, module.k))
    if args.fold_bn:
        backbone.fold_batch_norm()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    backbone = backbone.to(memory_format=memory_format)
    image, image_label = load_image(args.image)

    inputs = {}
    for scale in sorted(set(ONE_SCALE + FIVE_SCALES)):
        resized = resize_min_side(image, scale)
        inputs[scale] = backbone.preprocess(resized)[None].contiguous(
            memory_format=memory_format)

    def run_scales(scales: tuple[int, ...]) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) for one image at ``scales``."""
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for scale in scales:
                backbone(inputs[scale])
        return time.perf_counter() - start_wall, time.process_time() - start_cpu

    results = {"backbone": args.backbone, "allocator": args.allocator,
               "allocator_applied": allocator_applied, "channels_last": args.channels_last,
               "lrn": args.lrn if args.backbone in ("zf5", "convnet5", "overfeat5",
                                                    "overfeat7") else None,
               "fold_bn": args.fold_bn,
               "threads": args.threads, "image": image_label, "torch": torch.__version__}
    for label, scales in (("1-scale", ONE_SCALE), ("5-scale", FIVE_SCALES)):
        run_scales(scales)  # warm-up
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times, quiet = [], []
        for _ in range(args.repeats):
            if args.quiet_wait > 0:
                quiet.append(wait_until_quiet(args.quiet_wait, samples=3))
            times.append(run_scales(scales))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
        if quiet:
            results[f"{label} repeats started quiet"] = sum(quiet)
        walls, cpus = [wall for wall, _ in times], [cpu for _, cpu in times]
        results[f"{label} s/image"] = round(statistics.median(walls), 3)
        results[f"{label} min s/image"] = round(min(walls), 3)
        results[f"{label} cpu s/image"] = round(statistics.median(cpus), 3)
        results[f"{label} page faults/image"] = faults // args.repeats
    results["peak RSS MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["load average"] = round(os.getloadavg()[0], 2)
    return results


def lrn_micro(args: argparse.Namespace) -> list[dict]:
    """Time LRN alone on ZF-5's two LRN inputs for the 688 scale of a 500x375 image.

    Compares torch.nn.LocalResponseNorm, sppdet's banded slice-add sum and the same band as a
    dense [C, C] matmul (the alternative that was not kept).
    """
    import torch

    from sppdet.backbones.lrn import local_response_norm

    torch.set_num_threads(args.threads)
    reference = torch.nn.LocalResponseNorm(3, alpha=5e-5, beta=0.75, k=1.0)

    def dense_matmul(x: "torch.Tensor") -> "torch.Tensor":
        channels = x.shape[1]
        offset = torch.arange(channels)[None, :] - torch.arange(channels)[:, None]
        band = (offset.abs() <= 1).to(x.dtype)
        window = (band @ (x * x).flatten(2)).view_as(x)
        return x * window.mul_(5e-5 / 3).add_(1.0).pow_(-0.75)

    rows = []
    # ZF-5 conv1 and conv2 outputs for a 688x917 input (the 688 scale of a 500x375 image).
    for shape in ((1, 96, 344, 459), (1, 256, 87, 116)):
        x = torch.randn(shape).mul_(50).relu_()
        row = {"shape": list(shape)}
        for label, function in (
            ("torch", lambda: reference(x)),
            ("banded", lambda: local_response_norm(x, 3, 5e-5, 0.75, 1.0)),
            ("dense matmul", lambda: dense_matmul(x)),
        ):
            function()
            times = []
            for _ in range(max(args.repeats, 5)):
                start = time.perf_counter()
                function()
                times.append(time.perf_counter() - start)
            row[f"{label} min s"] = round(min(times), 4)
            row[f"{label} median s"] = round(statistics.median(times), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def runnable_tasks() -> int:
    """Tasks running or ready to run on the machine now (4th field of /proc/loadavg)."""
    try:
        with open("/proc/loadavg") as handle:
            return int(handle.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0


def wait_until_quiet(max_wait_s: float, samples: int = 3) -> bool:
    """Wait (at most ``max_wait_s``) until no other process wants the CPU for ``samples``
    consecutive seconds; True if that happened. Timings on a shared machine are otherwise
    dominated by other people's work."""
    deadline = time.monotonic() + max_wait_s
    quiet = 0
    while time.monotonic() < deadline:
        quiet = quiet + 1 if runnable_tasks() <= 1 else 0  # 1 = this process reading the file
        if quiet >= samples:
            return True
        time.sleep(1.0)
    return False


def compare(args: argparse.Namespace) -> list[dict]:
    """Run every configuration of the comparison, each in a fresh process."""
    configs = [  # backbone, allocator, channels_last, lrn, fold_bn
        ("zf5", "default", False, "torch", False),
        ("zf5", "default", False, "banded", False),
        ("zf5", "keep", False, "torch", False),
        ("zf5", "keep", False, "banded", False),
        ("zf5", "keep", True, "banded", False),
        ("efficientnet_lite0", "default", False, "banded", False),
        ("efficientnet_lite0", "keep", False, "banded", False),
        ("efficientnet_lite0", "keep", True, "banded", False),
        ("efficientnet_lite0", "keep", True, "banded", True),
    ]
    rows = []
    for backbone, allocator, channels_last, lrn, fold_bn in configs:
        command = [sys.executable, os.path.abspath(__file__), "--backbone", backbone,
                   "--allocator", allocator, "--lrn", lrn, "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--json"]
        if channels_last:
            command.append("--channels-last")
        if fold_bn:
            command.append("--fold-bn")
        if args.image:
            command += ["--image", args.image]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS=str(args.threads))
        command += ["--quiet-wait", str(args.quiet_wait)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        row = json.loads(output.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    columns = ["backbone", "allocator", "channels_last", "lrn", "fold_bn", "1-scale min s/image",
               "1-scale s/image", "5-scale min s/image", "5-scale s/image",
               "5-scale cpu s/image", "5-scale page faults/image", "peak RSS MiB",
               "load average", "5-scale repeats started quiet"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(column)) for column in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="zf5")
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help="image file (default: a 500x375 VOC2007 photo from ../shared/data; "
                             "a fixed random image when absent)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--allocator", choices=("default", "keep"), default="keep",
                        help="keep: sppdet.backbones.cpu_tuning.keep_freed_memory()")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fold-bn", action="store_true",
                        help="fold BatchNorm into the convs (efficientnet_lite0)")
    parser.add_argument("--lrn", choices=("banded", "torch"), default="banded",
                        help="LRN implementation of the paper's trunks: sppdet's banded sum "
                             "or torch.nn.LocalResponseNorm")
    parser.add_argument("--compare", action="store_true",
                        help="run the whole comparison table, one process per row")
    parser.add_argument("--quiet-wait", type=float, default=0.0,
                        help="before each timed repeat wait up to this many seconds for the "
                             "machine to be idle (0: do not wait)")
    parser.add_argument("--lrn-micro", action="store_true",
                        help="time the LRN implementations alone on ZF-5's LRN inputs")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.lrn_micro:
        lrn_micro(args)
        return
    if args.compare:
        print_table(compare(args))
        return
    row = run_one(args)
    print(json.dumps(row) if args.json else json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
