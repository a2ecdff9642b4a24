"""SPP-net vs R-CNN feature extraction time on one image: the paper's headline speed-up, measured.

Setting (paper section 4.1 and table of REFERENCE 2): one 500x375 photo, 2,000 windows, ZF-5,
both methods in the same process on the same threads, each with its own fc6/fc7:

* **SPP-net**: resize the image to each scale (1 scale: 688; 5 scales: 480..1200), conv1..conv5
  once per scale, SPP pooling of every window ({6, 3, 2, 1} = 50 bins x 256 = 12,800-d; with 5
  scales each window at the scale chosen by ``select_scales``), fc6 (12,800 -> 4,096) + fc7.
* **R-CNN**: warp every window with 16 pixels of context to 224 x 224 (``warp_windows``), the
  whole trunk per window in batches, pool5 to 6 x 6 (9,216-d, ``rcnn_pool5``), fc6 (9,216 ->
  4,096) + fc7. The trunk, its kernels, memory format and thread count are the SPP path's.

Every step is timed in rounds; each round runs both methods (so load from other processes hits
both alike), the first ``--warmup`` rounds are dropped and the median of the others is reported.
The trunk is timed layer by layer (the same modules ``backbone(x)`` runs, in order) to show the
share of LRN and max pooling. R-CNN's trunk may be timed on a subset of the windows
(``--rcnn-timed-windows``) and scaled up: every warped window costs the same. fc layers run
on all windows at once for both methods (R-CNN's pool5 rows of the timed subset are repeated
to the full count).

FLOPs are counted analytically: multiply-adds x 2 of every conv (from the actual layer output
sizes) and fc layer; LRN, pooling, warping and resizing are not counted.

Usage (from the project root)::

    PYTHONPATH=. python3 benchmarks/spp_vs_rcnn.py               # full run (a few minutes)
    PYTHONPATH=. python3 benchmarks/spp_vs_rcnn.py --quick       # smoke run, seconds

The last line printed is ``speedup_1scale=X speedup_5scale=Y conv_only_1scale=A
conv_only_5scale=B`` (whole-feature and conv-only speed-ups of SPP-net over R-CNN).
Results on this project's machine: ``benchmarks/results/spp_vs_rcnn.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import shlex
import statistics
import sys
import time
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from benchmarks.machine import load_average, machine_name  # noqa: E402
from sppdet.backbones import build_backbone  # noqa: E402
from sppdet.backbones.lrn import CrossChannelLRN  # noqa: E402
from sppdet.backbones.sequential import SequentialBackbone  # noqa: E402
from sppdet.features.fast_fc import fast_fc_head  # noqa: E402
from sppdet.features.fc_head import FcHead  # noqa: E402
from sppdet.rcnn.features import rcnn_feature_dim, rcnn_pool5, rcnn_pool5_features  # noqa: E402
from sppdet.ops.scales import PAPER_SCALES, SINGLE_SCALE, resize_image, resized_size  # noqa: E402
from sppdet.ops.spp import (DEFAULT_LEVELS, pool_distinct_windows,  # noqa: E402
                             pool_windows, spp_output_dim)
from sppdet.rcnn.warp import DEFAULT_CONTEXT_PAD, DEFAULT_WARP_SIZE, warp_windows  # noqa: E402

# A 500x375 VOC2007 photo from the shared check data (SOURCES.md there), next to the project
# folder or one level further up for a checkout inside a work-tree folder. Selective search
# "fast" gives it 2,000 windows (the cap).
_SHARED_IMAGE = os.path.join("shared", "data", "voc-fixtures", "VOC2007", "JPEGImages",
                             "000003.jpg")
DEFAULT_IMAGE = next(
    (path for path in (os.path.join(ROOT, "..", _SHARED_IMAGE),
                       os.path.join(ROOT, "..", "..", _SHARED_IMAGE)) if os.path.isfile(path)),
    os.path.join(ROOT, "..", _SHARED_IMAGE),
)
FC_HIDDEN = 4096
NUM_CLASSES = 20  # fc8 exists in FcHead but is not run: features stop at fc7

# Paper (REFERENCE 2): GPU speed-ups of SPP-net (ZF-5) over R-CNN (ZF-5).
PAPER_GPU_CONV_ONLY = {"1-scale": 270.0, "5-scale": 49.0}
PAPER_GPU_WHOLE = {"1-scale": 102.0, "5-scale": 38.0}
# REFERENCE 12: GFLOPs the project's notes give for this setting.
REFERENCE_GFLOP = {"spp1": 31.4, "spp5": 213.5, "rcnn_conv": 4728.0, "fc": 277.0}

COLUMNS = ("SPP 1-scale", "SPP 5-scale", "R-CNN")
#: Row labels of the printed table, in order (the smoke test checks them).
ROW_LABELS = (
    "image resize / window warp (s)",
    "conv1-conv5 with LRN, pools (s)",
    "  of which LRN (s)",
    "  of which max pool1, pool2 (s)",
    "conv GFLOP",
    "conv GFLOP/s",
    "pooling: SPP pyramid / pool5 (s)",
    "fc6+fc7 (s)",
    "fc6+fc7 GFLOP",
    "whole feature (s)",
    "conv-only speed-up, measured",
    "conv-only speed-up, FLOP ratio",
    "conv-only speed-up, paper GPU",
    "whole-feature speed-up, measured",
    "whole-feature speed-up, FLOP ratio",
    "whole-feature speed-up, paper GPU",
    "speed-up without fc, measured",
    "conv-only speed-up without LRN",
    "conv-only speed-up, rounds min-max",
    "whole-feature speed-up, rounds min-max",
)


# ------------------------------------------------------------------------------------ inputs
def load_image(path: str | None) -> tuple[np.ndarray, str]:
    """RGB uint8 image from ``path``, or a deterministic synthetic 375x500 image when absent."""
    import cv2

    if path and os.path.isfile(path):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is not None:
            return np.ascontiguousarray(bgr[:, :, ::-1]), os.path.normpath(path)
    # Smooth noise plus a few flat shapes, so selective search finds object-like regions.
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8), (0, 0), 4)
    for _ in range(12):
        x, y = rng.integers(0, 450), rng.integers(0, 330)
        w, h = rng.integers(20, 200), rng.integers(20, 150)
        image[y:y + h, x:x + w] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return image, f"synthetic 500x375 (seed 0; {path} not found)"


def random_windows(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Proposal-like boxes ``[count, 4]``: sides log-uniform from 10 px to the image side."""
    sizes = np.exp(rng.uniform(np.log(10), np.log([width, height]), size=(count, 2)))  # [N, 2]
    x1 = rng.uniform(0, width - sizes[:, 0])
    y1 = rng.uniform(0, height - sizes[:, 1])
    return np.stack([x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1]], axis=1)


def make_windows(image: np.ndarray, count: int, method: str, seed: int) -> tuple[np.ndarray, str]:
    """``count`` windows of the image and a line saying where they came from.

    ``method="ss-fast"`` takes selective search's first ``count`` boxes and tops up with
    random windows if it gave fewer; ``"random"`` draws them all at random.
    """
    height, width = image.shape[:2]
    rng = np.random.default_rng(seed)
    boxes = np.zeros((0, 4))
    label = "random (sides log-uniform 10 px .. image side, seed %d)" % seed
    if method == "ss-fast":
        from sppdet.proposals.propose import propose_image

        boxes = propose_image(image, "ss-fast").boxes[:count].astype(np.float64)
        label = f"{len(boxes)} from selective search fast (sppdet.proposals, defaults)"
        if len(boxes) < count:
            label += f" + {count - len(boxes)} random (seed {seed})"
    extra = random_windows(rng, count - len(boxes), height, width)
    return np.concatenate([boxes, extra], axis=0), label


# ------------------------------------------------------------------------------------- FLOPs
def conv_gflop(features: nn.Sequential, batch: int, height: int, width: int,
               in_channels: int = 3) -> float:
    """GFLOPs (multiply-adds x 2) of every conv in ``features`` for ``[batch, in_channels,
    height, width]`` input.

    Runs a copy of the trunk on the meta device (shapes only, no arithmetic).
    """
    meta = copy.deepcopy(features).to("meta")
    total = 0

    def count(module: nn.Conv2d, _inputs, output: Tensor) -> None:
        nonlocal total
        kernel_h, kernel_w = module.kernel_size
        total += 2 * output.numel() * (module.in_channels // module.groups) * kernel_h * kernel_w

    for module in meta:
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(count)
    meta(torch.empty(batch, in_channels, height, width, device="meta"))
    return total / 1e9


def fc_gflop(windows: int, in_dim: int, hidden: int = FC_HIDDEN) -> float:
    """GFLOPs of fc6 (in_dim -> hidden) + fc7 (hidden -> hidden) on ``windows`` rows."""
    return 2.0 * windows * (in_dim * hidden + hidden * hidden) / 1e9


# ------------------------------------------------------------------------------------ timing
def layer_kind(module: nn.Module) -> str:
    if isinstance(module, (CrossChannelLRN, nn.LocalResponseNorm)):
        return "lrn"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    return "conv"  # Conv2d and its ReLU


def timed_trunk(features: nn.Sequential, images: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Run the trunk's modules in order (what ``backbone(images)`` does), timing each kind.

    Returns:
        the trunk's output and seconds spent in ``{"conv", "lrn", "pool"}`` layers.
    """
    seconds = {"conv": 0.0, "lrn": 0.0, "pool": 0.0}
    x = images
    for module in features:
        start = time.perf_counter()
        x = module(x)
        seconds[layer_kind(module)] += time.perf_counter() - start
    return x, seconds


class Setup:
    """Everything a round needs: the trunk, heads, image, windows and fixed options."""

    def __init__(self, args: argparse.Namespace, image: np.ndarray, boxes: np.ndarray) -> None:
        self.backbone = build_backbone(args.backbone, pretrained=False, seed=args.seed)
        if not isinstance(self.backbone, SequentialBackbone):
            raise SystemExit(f"--backbone {args.backbone}: only sequential trunks are supported")
        self.memory_format = (torch.channels_last if args.memory_format == "channels_last"
                              else torch.contiguous_format)
        self.backbone = self.backbone.to(memory_format=self.memory_format)
        self.image, self.boxes = image, boxes
        self.image_size = (image.shape[0], image.shape[1])
        self.scales = tuple(sorted(set(SINGLE_SCALE + PAPER_SCALES)))
        channels = self.backbone.out_channels
        self.spp_dim = spp_output_dim(channels, DEFAULT_LEVELS)
        self.rcnn_dim = rcnn_feature_dim(channels)
        self.spp_head = FcHead(self.spp_dim, NUM_CLASSES, seed=args.seed).eval()
        # --spp-fc int8: SPP-net scores with detect's fast fc layers (detect --fc int8) while
        # R-CNN keeps the plain float ones; float: the same plain fc for both, the paper's
        # comparison. (SVD needs trained weights to compress: random ones keep full rank.)
        self.distinct = not args.no_distinct
        self.spp_fc_label = "float32"
        if args.spp_fc != "float":
            self.spp_head, self.spp_fc_label = fast_fc_head(self.spp_head, args.spp_fc)
        self.rcnn_head = FcHead(self.rcnn_dim, NUM_CLASSES, seed=args.seed + 1).eval()
        timed = len(boxes) if args.rcnn_timed_windows <= 0 else min(args.rcnn_timed_windows,
                                                                    len(boxes))
        self.rcnn_timed = timed
        self.batch_size = args.batch_size
        self.last: dict[str, Tensor] = {}


def measure_round(setup: Setup) -> dict[str, float]:
    """One round: every step of both methods once; returns seconds per step."""
    backbone, features, mf = setup.backbone, setup.backbone.features, setup.memory_format
    t: dict[str, float] = {}
    maps: dict[int, Tensor] = {}
    # SPP-net: resize + preprocess, then conv, per scale.
    for scale in setup.scales:
        start = time.perf_counter()
        x = backbone.preprocess(resize_image(setup.image, scale))[None].contiguous(
            memory_format=mf)
        t[f"prep{scale}"] = time.perf_counter() - start
        maps[scale], seconds = timed_trunk(features, x)
        for kind, value in seconds.items():
            t[f"{kind}{scale}"] = value
    # SPP pooling and fc: 1 scale, and 5 scales with a scale chosen per window. As detect does,
    # windows on the same cells are pooled and scored once (--no-distinct: every window).
    for label, scales in (("1", SINGLE_SCALE), ("5", PAPER_SCALES)):
        chosen = {s: maps[s] for s in scales}
        start = time.perf_counter()
        if setup.distinct:
            pooled, inverse = pool_distinct_windows(
                chosen, setup.image_size, setup.boxes, None, stride=backbone.stride,
                cell_centers_fn=backbone.cell_centers)
        else:
            pooled = pool_windows(chosen, setup.image_size, setup.boxes, None,
                                  stride=backbone.stride, cell_centers_fn=backbone.cell_centers)
            inverse = None
        t[f"spp_pool{label}"] = time.perf_counter() - start
        start = time.perf_counter()
        fc7 = setup.spp_head.features(pooled, "fc7")
        if inverse is not None:  # one row per window again, as detect's scores
            fc7 = fc7[torch.from_numpy(inverse)]
        t[f"spp_fc{label}"] = time.perf_counter() - start
        setup.last[f"spp_pooled{label}"] = (pooled if inverse is None
                                            else pooled[torch.from_numpy(inverse)])
        setup.last[f"spp_distinct{label}"] = int(pooled.shape[0])
        setup.last["spp_fc7"] = fc7
        if setup.distinct:  # every window as well, in the same round: the effect side by side
            start = time.perf_counter()
            every = pool_windows(chosen, setup.image_size, setup.boxes, None,
                                 stride=backbone.stride, cell_centers_fn=backbone.cell_centers)
            t[f"spp_pool_every{label}"] = time.perf_counter() - start
            start = time.perf_counter()
            setup.spp_head.features(every, "fc7")
            t[f"spp_fc_every{label}"] = time.perf_counter() - start

    # R-CNN: preprocess the image once, then warp + trunk + pool5 per batch of windows.
    scale_up = len(setup.boxes) / setup.rcnn_timed
    start = time.perf_counter()
    image = backbone.preprocess(setup.image)
    prep = time.perf_counter() - start
    totals = {"warp": 0.0, "conv": 0.0, "lrn": 0.0, "pool": 0.0, "pool5": 0.0}
    rows = []
    for first in range(0, setup.rcnn_timed, setup.batch_size):
        batch = setup.boxes[first:min(first + setup.batch_size, setup.rcnn_timed)]
        start = time.perf_counter()
        warped = warp_windows(image, batch, size=DEFAULT_WARP_SIZE,
                              context_pad=DEFAULT_CONTEXT_PAD, fill=0.0).contiguous(
                                  memory_format=mf)
        totals["warp"] += time.perf_counter() - start
        conv5, seconds = timed_trunk(features, warped)
        for kind, value in seconds.items():
            totals[kind] += value
        start = time.perf_counter()
        rows.append(rcnn_pool5(conv5))
        totals["pool5"] += time.perf_counter() - start
    t["rcnn_warp"] = prep + totals["warp"] * scale_up
    for kind in ("conv", "lrn", "pool", "pool5"):
        t[f"rcnn_{kind}"] = totals[kind] * scale_up
    pool5 = torch.cat(rows)
    setup.last["rcnn_pool5"] = pool5
    repeats = -(-len(setup.boxes) // len(pool5))
    pool5_all = pool5.repeat(repeats, 1)[:len(setup.boxes)].contiguous()  # [N, 9216]
    start = time.perf_counter()
    setup.last["rcnn_fc7"] = setup.rcnn_head.features(pool5_all, "fc7")
    t["rcnn_fc"] = time.perf_counter() - start
    return t


def summarise(t: dict[str, float]) -> dict[str, float]:
    """Per-method totals of one round (or of the medians)."""
    s: dict[str, float] = {}
    for label, scales in (("spp1", SINGLE_SCALE), ("spp5", PAPER_SCALES)):
        s[f"{label}_prep"] = sum(t[f"prep{x}"] for x in scales)
        for kind in ("conv", "lrn", "pool"):
            s[f"{label}_{kind}"] = sum(t[f"{kind}{x}"] for x in scales)
        s[f"{label}_trunk"] = s[f"{label}_conv"] + s[f"{label}_lrn"] + s[f"{label}_pool"]
        s[f"{label}_spp"] = t[f"spp_pool{label[-1]}"]
        s[f"{label}_fc"] = t[f"spp_fc{label[-1]}"]
    s["rcnn_prep"] = t["rcnn_warp"]
    for kind in ("conv", "lrn", "pool"):
        s[f"rcnn_{kind}"] = t[f"rcnn_{kind}"]
    s["rcnn_trunk"] = s["rcnn_conv"] + s["rcnn_lrn"] + s["rcnn_pool"]
    s["rcnn_spp"] = t["rcnn_pool5"]
    s["rcnn_fc"] = t["rcnn_fc"]
    for method in ("spp1", "spp5", "rcnn"):
        s[f"{method}_whole"] = sum(s[f"{method}_{part}"] for part in ("prep", "trunk", "spp",
                                                                        "fc"))
    return s


def every_window_line(medians: dict[str, float], m: dict[str, float], label: str) -> str:
    """SPP-net's whole feature step when every window is pooled and scored, from the same
    rounds' medians, and its speed-up against R-CNN beside the distinct-footprint one."""
    method = f"spp{label}"
    every = (m[f"{method}_prep"] + m[f"{method}_trunk"] + medians[f"spp_pool_every{label}"]
             + medians[f"spp_fc_every{label}"])
    return (f"{label} scale{'s' if label != '1' else ''}: {every:.3f} s, "
            f"{_ratio(m['rcnn_whole'], every):.1f}x (distinct footprints: "
            f"{m[f'{method}_whole']:.3f} s, {_ratio(m['rcnn_whole'], m[f'{method}_whole']):.1f}x)")


def check_features(setup: Setup) -> str:
    """Both methods' vectors are finite and of the expected sizes; the benchmark's R-CNN path
    equals ``rcnn_pool5_features`` on a few windows. Raises RuntimeError otherwise."""
    n = len(setup.boxes)
    expected = {
        "spp_pooled1": (n, setup.spp_dim), "spp_pooled5": (n, setup.spp_dim),
        "spp_fc7": (n, FC_HIDDEN), "rcnn_pool5": (setup.rcnn_timed, setup.rcnn_dim),
        "rcnn_fc7": (n, FC_HIDDEN),
    }
    for name, shape in expected.items():
        value = setup.last[name]
        if tuple(value.shape) != shape or not bool(torch.isfinite(value).all()):
            raise RuntimeError(f"check failed: {name} has shape {tuple(value.shape)} (expected "
                               f"{shape}) or non-finite values")
    count = min(3, setup.rcnn_timed)
    library = rcnn_pool5_features(setup.backbone, setup.image, setup.boxes[:count],
                                  memory_format=setup.memory_format)
    difference = float((library - setup.last["rcnn_pool5"][:count]).abs().max())
    scale = float(library.abs().max()) or 1.0
    if difference > 1e-4 * scale:
        raise RuntimeError(f"check failed: rcnn_pool5_features differs from the benchmark's "
                           f"R-CNN path by {difference:.3g}")
    sizes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in expected.items())
    return (f"check: ok (finite: {sizes}; rcnn_pool5_features agrees on {count} windows, "
            f"max abs diff {difference:.2g})")


# ----------------------------------------------------------------------------------- report
def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def build_table(m: dict[str, float], rounds: list[dict[str, float]],
                flops: dict[str, float]) -> list[str]:
    """Markdown table rows, one per :data:`ROW_LABELS` entry, for the medians ``m``."""

    def seconds(key: str) -> list[str]:
        return [f"{m[f'{method}_{key}']:.3f}" for method in ("spp1", "spp5", "rcnn")]

    def speedups(fn) -> list[str]:
        return [f"{fn('spp1'):.1f}x", f"{fn('spp5'):.1f}x", "1"]

    def speed(method: str, key: str, values: dict[str, float]) -> float:
        return _ratio(values[f"rcnn_{key}"], values[f"{method}_{key}"])

    def range_of(key: str) -> list[str]:
        cells = []
        for method in ("spp1", "spp5"):
            ratios = [speed(method, key, r) for r in rounds]
            cells.append(f"{min(ratios):.1f}-{max(ratios):.1f}x")
        return cells + ["-"]

    conv_flop = [flops["spp1"], flops["spp5"], flops["rcnn_conv"]]
    fc_flop = [flops["spp_fc1"], flops["spp_fc5"], flops["rcnn_fc"]]
    trunks = [m["spp1_trunk"], m["spp5_trunk"], m["rcnn_trunk"]]
    without_fc = {method: sum(m[f"{method}_{p}"] for p in ("prep", "trunk", "spp"))
                  for method in ("spp1", "spp5", "rcnn")}
    without_lrn = {method: m[f"{method}_conv"] + m[f"{method}_pool"]
                   for method in ("spp1", "spp5", "rcnn")}
    whole_flop = [conv_flop[i] + fc_flop[i] for i in range(3)]
    cells = {
        ROW_LABELS[0]: seconds("prep"),
        ROW_LABELS[1]: seconds("trunk"),
        ROW_LABELS[2]: seconds("lrn"),
        ROW_LABELS[3]: seconds("pool"),
        ROW_LABELS[4]: [f"{value:.1f}" for value in conv_flop],
        ROW_LABELS[5]: [f"{conv_flop[i] / trunks[i]:.1f}" for i in range(3)],
        ROW_LABELS[6]: seconds("spp"),
        ROW_LABELS[7]: seconds("fc"),
        ROW_LABELS[8]: [f"{value:.1f}" for value in fc_flop],
        ROW_LABELS[9]: seconds("whole"),
        ROW_LABELS[10]: speedups(lambda method: speed(method, "trunk", m)),
        ROW_LABELS[11]: speedups(lambda method: _ratio(conv_flop[2], flops[method])),
        ROW_LABELS[12]: [f"{PAPER_GPU_CONV_ONLY['1-scale']:.0f}x",
                         f"{PAPER_GPU_CONV_ONLY['5-scale']:.0f}x", "1"],
        ROW_LABELS[13]: speedups(lambda method: speed(method, "whole", m)),
        ROW_LABELS[14]: [f"{whole_flop[2] / whole_flop[0]:.1f}x",
                         f"{whole_flop[2] / whole_flop[1]:.1f}x", "1"],
        ROW_LABELS[15]: [f"{PAPER_GPU_WHOLE['1-scale']:.0f}x",
                         f"{PAPER_GPU_WHOLE['5-scale']:.0f}x", "1"],
        ROW_LABELS[16]: speedups(lambda method: _ratio(without_fc["rcnn"], without_fc[method])),
        ROW_LABELS[17]: speedups(lambda method: _ratio(without_lrn["rcnn"],
                                                       without_lrn[method])),
        ROW_LABELS[18]: range_of("trunk"),
        ROW_LABELS[19]: range_of("whole"),
    }
    width = max(len(label) for label in ROW_LABELS)
    lines = [f"| {'step'.ljust(width)} | " + " | ".join(f"{c:>11}" for c in COLUMNS) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("-" * 12 + ":" for _ in COLUMNS) + "|"]
    for label in ROW_LABELS:
        lines.append(f"| {label.ljust(width)} | "
                     + " | ".join(f"{c:>11}" for c in cells[label]) + " |")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help="image file (default: VOC2007 000003.jpg, 500x375, from "
                             "../shared/data; a synthetic image when absent)")
    parser.add_argument("--windows", type=int, default=2000, help="windows (default 2000)")
    parser.add_argument("--proposals", choices=("ss-fast", "random"), default="ss-fast",
                        help="where windows come from (default ss-fast: selective search)")
    parser.add_argument("--backbone", default="zf5", help="sequential trunk (default zf5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds dropped (default 1)")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="R-CNN windows per trunk pass (default 50)")
    parser.add_argument("--rcnn-timed-windows", type=int, default=200,
                        help="R-CNN windows whose warp and trunk are timed, scaled up to all "
                             "windows; 0 = all (default 200)")
    parser.add_argument("--memory-format", choices=("channels_last", "contiguous"),
                        default="channels_last",
                        help="trunk input layout, both methods (default channels_last)")
    parser.add_argument("--allocator", choices=("keep", "default"), default="keep",
                        help="keep: sppdet.backbones.cpu_tuning.keep_freed_memory() "
                             "(process-wide; default keep)")
    parser.add_argument("--seed", type=int, default=0, help="weights and random windows")
    parser.add_argument("--spp-fc", choices=("float", "int8"), default="float",
                        help="SPP-net's fc6/fc7: float32 as R-CNN's (the paper's comparison) "
                             "or int8 dynamic quantization (detect --fc int8; default float)")
    parser.add_argument("--no-distinct", action="store_true",
                        help="SPP-net pools and scores every window, also those on the same "
                             "cells as another (default: each footprint once, as detect does)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 24 random windows, R-CNN on 8 in batches of 4, "
                             "1 round, no warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.proposals, args.rcnn_timed_windows = 24, "random", 8
        args.batch_size, args.repeats, args.warmup = 4, 1, 0
    for name in ("windows", "threads", "repeats", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the report; returns the median per-method seconds and the
    four speed-ups of the last line."""
    args = parse_args(argv)
    allocator_applied = False
    if args.allocator == "keep":
        from sppdet.backbones.cpu_tuning import keep_freed_memory

        allocator_applied = keep_freed_memory()
    torch.set_num_threads(args.threads)
    image, image_label = load_image(args.image)
    boxes, windows_label = make_windows(image, args.windows, args.proposals, args.seed)
    setup = Setup(args, image, boxes)
    load_before = load_average()

    backbone = setup.backbone
    flops = {
        "spp1": sum(conv_gflop(backbone.features, 1, *resized_size(*setup.image_size, s))
                    for s in SINGLE_SCALE),
        "spp5": sum(conv_gflop(backbone.features, 1, *resized_size(*setup.image_size, s))
                    for s in PAPER_SCALES),
        "rcnn_conv": len(boxes) * conv_gflop(backbone.features, 1, DEFAULT_WARP_SIZE,
                                             DEFAULT_WARP_SIZE),
        # SPP-net's fc FLOPs follow the rows it scores (set after the first round)
        "spp_fc1": fc_gflop(len(boxes), setup.spp_dim),
        "spp_fc5": fc_gflop(len(boxes), setup.spp_dim),
        "rcnn_fc": fc_gflop(len(boxes), setup.rcnn_dim),
    }

    rounds: list[dict[str, float]] = []
    with torch.inference_mode():
        for index in range(args.warmup + args.repeats):
            times = measure_round(setup)
            for label in ("1", "5"):
                flops[f"spp_fc{label}"] = fc_gflop(setup.last[f"spp_distinct{label}"],
                                                   setup.spp_dim)
            if index >= args.warmup:
                rounds.append(times)
        check_line = check_features(setup)
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    m = summarise(medians)
    per_round = [summarise(r) for r in rounds]

    scaled = (f"timed on {setup.rcnn_timed} of {len(boxes)} windows "
              f"({-(-setup.rcnn_timed // args.batch_size)} batches of up to {args.batch_size}), "
              f"scaled x{len(boxes) / setup.rcnn_timed:.4g}"
              if setup.rcnn_timed < len(boxes) else
              f"timed on all {len(boxes)} windows in batches of {args.batch_size}")
    command = "python3 benchmarks/spp_vs_rcnn.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(f"SPP-net vs R-CNN feature extraction, {backbone.name}, {len(boxes)} windows")
    print(f"command: {command.strip()}")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine_name()}, {os.cpu_count()} CPUs; torch {torch.__version__}, "
          f"threads={args.threads}, memory format {args.memory_format}, allocator "
          f"{args.allocator} (applied: {allocator_applied}); device cpu")
    print(f"image: {image_label} ({setup.image_size[1]}x{setup.image_size[0]})")
    print(f"windows: {windows_label}; SPP-net pools and scores "
          + (f"each distinct footprint once: {setup.last['spp_distinct1']} at 1 scale, "
             f"{setup.last['spp_distinct5']} at 5 scales" if setup.distinct
             else "every window (--no-distinct)"))
    print(f"R-CNN: warp {DEFAULT_WARP_SIZE}x{DEFAULT_WARP_SIZE} with {DEFAULT_CONTEXT_PAD} px "
          f"context, trunk and pool5 {scaled}; fc on all {len(boxes)} windows")
    print(f"SPP: scales {SINGLE_SCALE} and {PAPER_SCALES}, levels {DEFAULT_LEVELS} "
          f"({setup.spp_dim}-d); R-CNN pool5 {setup.rcnn_dim}-d; fc6+fc7 {FC_HIDDEN} each; "
          f"SPP fc: {setup.spp_fc_label}, R-CNN fc: float32")
    print(f"rounds: {args.repeats} timed (median) after {args.warmup} warm-up; load average "
          f"before {load_before}, after {load_average()}")
    print(f"FLOPs (multiply-adds x 2) as in REFERENCE 12: SPP conv {REFERENCE_GFLOP['spp1']} G "
          f"(1 scale), {REFERENCE_GFLOP['spp5']} G (5 scales); R-CNN conv "
          f"{REFERENCE_GFLOP['rcnn_conv']:.0f} G; fc6+fc7 {REFERENCE_GFLOP['fc']} G; this "
          f"trunk's own counts are in the table")
    print(check_line)
    print()
    for line in build_table(m, per_round, flops):
        print(line)
    print()
    if setup.distinct:
        print("the same rounds with every window pooled and scored (as --no-distinct): " +
              ", ".join(every_window_line(medians, m, label) for label in ("1", "5")))
        print()
    result = {
        "speedup_1scale": _ratio(m["rcnn_whole"], m["spp1_whole"]),
        "speedup_5scale": _ratio(m["rcnn_whole"], m["spp5_whole"]),
        "conv_only_1scale": _ratio(m["rcnn_trunk"], m["spp1_trunk"]),
        "conv_only_5scale": _ratio(m["rcnn_trunk"], m["spp5_trunk"]),
    }
    print(" ".join(f"{key}={value:.1f}" for key, value in result.items()))
    return {**m, **result}


if __name__ == "__main__":
    main()
