"""The pipeline's plan: each stage with its settings and why, its expected time and the disk
its output needs, printed before any stage runs (and alone with ``pipeline --plan-only``).

Times come from per-unit costs measured on this project's 2-core CPU (BENCHMARKS.md; each
number below names its source) scaled by the run's image counts, scale areas, flips, jobs,
proposals per image, fc widths and iterations. No GPU was measured: the cuda costs are
projected from the paper's GPU figures (REFERENCE.md section 2: conv 0.053 s per image at one
scale, fc 0.089 s per image, fine-tuning about 2 hours for 90,000 iterations, the SVMs under an
hour for VOC 2007). Expect the real times within a factor of about two: a shared machine is
slower, a faster one quicker.

Whether a stage is up to date is *forecast* from the records of the artifacts already in the
work dir (finished, same data fingerprint, the same key parameters, inputs with the digests
they were made from); the stage itself still decides when it runs. A ``pretrain`` section is
planned as "not estimated" and its later stages as to be run.

Free of torch (numpy and h5py only, through the dataset reader and the records).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppdet.errors import StorageError

from .params import DEFAULT_BACKBONE

#: Shorter side of the measured costs and sizes (one scale of the paper).
REFERENCE_SCALE = 688

# --- costs -------------------------------------------------------------------------------------

#: Proposals, CPU seconds per image per worker (BENCHMARKS.md "Proposals", quiet machine:
#: ss-fast 1.19 s per BCCD image and 1.45 s per VOC image; EdgeBoxes 0.15 / 0.18 s;
#: ss-quality 4.72 s per VOC image). They run on the CPU whatever the device.
PROPOSE_SECONDS = {"ss-fast": 1.3, "edgeboxes": 0.17, "ss-quality": 4.7}

#: Each backbone: (conv5 channels, stride, conv cost relative to zf5, maps compress like a
#: ReLU trunk's). Channels and strides are the trunks' own (a test checks them); the relative
#: cost of zf5 and efficientnet_lite0 is measured (BENCHMARKS.md "Conv trunks on the CPU":
#: 0.200 and 0.091 s at 688); the others are projected from their conv FLOPs.
BACKBONES: dict[str, tuple[int, int, float, bool]] = {
    "efficientnet_lite0": (112, 16, 0.455, False),
    "zf5": (256, 16, 1.0, True),
    "convnet5": (256, 16, 1.0, True),
    "alexnet": (256, 16, 0.7, True),
    "overfeat5": (512, 12, 3.0, True),
    "overfeat7": (512, 12, 5.0, True),
    "resnet50": (1024, 16, 3.0, True),
    "vgg16": (512, 16, 10.0, True),
}
#: SPP bins per channel of the default pyramid {6, 3, 2, 1}.
SPP_BINS = 36 + 9 + 4 + 1


@dataclass(frozen=True)
class DeviceCosts:
    """Per-unit costs of one device kind (seconds, unless the name says ms).

    Attributes:
        conv_zf5: conv5 of one image pass (one scale, one mirror) at 688 x 917, zf5.
        finetune_pool_ms: pooling of one mini-batch's windows.
        finetune_fc_ms: fc step of one mini-batch at ``fc_reference``.
        svm_per_1k: train-svm per image and 1,000 proposals at ``fc_reference``.
        bbox_reg: train-bbox-reg per image.
        detect_pool_per_1k, detect_fc_per_1k: detect per image and 1,000 proposals.
        eval: eval per image.
        fc_reference: (input width, hidden width) the fc costs were measured at.
        source: where the numbers come from (shown under the plan).
    """

    conv_zf5: float
    finetune_pool_ms: float
    finetune_fc_ms: float
    svm_per_1k: float
    bbox_reg: float
    detect_pool_per_1k: float
    detect_fc_per_1k: float
    eval: float
    fc_reference: tuple[int, int]
    source: str


COSTS = {
    # BENCHMARKS.md, 2-core CPU: conv 0.200 s (zf5, "Conv trunks"); fine-tuning 52 ms per
    # iteration at hidden 1,024 (pooling 11, fc 39; BCCD and the idle demo: 50 ms); train-svm
    # 0.145 s per image at 1,000 boxes (idle demo) and 0.39 s per 1,000 on BCCD (shared
    # machine): 0.25; train-bbox-reg 0.055 s (demo) to 0.22 s (BCCD): 0.1; detect pooling
    # 0.15 s and fc + SVM 0.21 s per BCCD image at 2,000 boxes with float32 fc layers, 0.57x
    # that with the int8 ones detect uses on the CPU (0.12 s); eval 0.3 s for 72 images.
    "cpu": DeviceCosts(conv_zf5=0.200, finetune_pool_ms=11.0, finetune_fc_ms=39.0,
                       svm_per_1k=0.25, bbox_reg=0.1, detect_pool_per_1k=0.075,
                       detect_fc_per_1k=0.06, eval=0.005, fc_reference=(5600, 1024),
                       source="measured on an idle 2-core CPU (BENCHMARKS.md)"),
    # Projected from the paper's GPU (ZF-5, fc 4,096 wide): conv 0.053 s per image at one
    # scale; fine-tuning 2 h / 90,000 iterations = 80 ms; SVMs under 1 h for 5,011 images at
    # 2,000 boxes; fc 0.089 s per image at 2,000 windows. Box regression and eval run on the
    # CPU.
    "cuda": DeviceCosts(conv_zf5=0.053, finetune_pool_ms=0.0, finetune_fc_ms=80.0,
                        svm_per_1k=0.36, bbox_reg=0.1, detect_pool_per_1k=0.005,
                        detect_fc_per_1k=0.045, eval=0.005, fc_reference=(256 * SPP_BINS, 4096),
                        source="projected from the paper's GPU figures (not measured here)"),
}

# --- sizes -------------------------------------------------------------------------------------

#: Proposals: 4 float32 coordinates per box plus HDF5 overhead (BENCHMARKS.md: 32 kB per
#: image at 2,000 boxes).
PROPOSAL_BYTES_PER_BOX = 16
#: lzf/zstd/gzip size over the raw float16 maps (BENCHMARKS.md "Feature cache": EfficientNet's
#: conv5 has no ReLU, lzf saves nothing, zstd 7 %; ZF-5's: lzf 0.60, zstd 0.50 of raw).
COMPRESSED = {False: {"none": 1.0, "lzf": 1.0, "gzip": 0.87, "zstd": 0.93},
              True: {"none": 1.0, "lzf": 0.60, "gzip": 0.50, "zstd": 0.50}}
#: Detections: about 50 kB per image (BENCHMARKS.md capacity plan).
DETECTION_BYTES_PER_IMAGE = 50_000
#: Used when an annotation gives no image size (VOC's typical 500 x 375).
DEFAULT_IMAGE_SIZE = (375, 500)


def fc_flops(in_dim: int, hidden: int) -> int:
    """Multiply-adds of fc6 + fc7 per window (the fc cost scales with it)."""
    return in_dim * hidden + hidden * hidden


def area_factor(scales: tuple[int, ...]) -> float:
    """Pixels of the scales' images over those of one image at :data:`REFERENCE_SCALE`."""
    return sum((s / REFERENCE_SCALE) ** 2 for s in set(scales))


def backbone_info(name: str) -> tuple[int, int, float, bool]:
    return BACKBONES.get(name, BACKBONES["zf5"])


def cache_bytes(sizes: list[tuple[int, int]], scales: tuple[int, ...], *, backbone: str,
                flip: bool, dtype: str, compression: str) -> int:
    """Bytes of a feature cache for images of ``(height, width)`` pixels.

    Cells per map are ``ceil(h / stride) * ceil(w / stride)`` of the resized image, times the
    channels and the bytes per value, times the codec's measured ratio (:data:`COMPRESSED`).
    BCCD (640 x 480) at 688 with EfficientNet-Lite0: 43 x 58 cells x 112 x 2 B = 0.56 MB per
    pass, as measured (BENCHMARKS.md, 0.56 MB test, 1.13 MB with flips).
    """
    channels, stride, _cost, relu = backbone_info(backbone)
    per_value = 2 if dtype == "float16" else 4
    cells = 0
    for height, width in sizes:
        short = min(height, width)
        for scale in set(scales):
            h = math.floor(height * scale / short + 0.5)
            w = math.floor(width * scale / short + 0.5)
            cells += math.ceil(h / stride) * math.ceil(w / stride)
    ratio = COMPRESSED[relu].get(compression, 1.0)
    return int(cells * channels * per_value * ratio * (2 if flip else 1))


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class PlannedStage:
    """One stage of the plan.

    Attributes:
        stage: its name as the pipeline prints it (``propose trainval``).
        settings: what it will run with, one line.
        keys: the config keys behind ``settings`` (their sources make the "why").
        seconds: expected wall time (``None``: not estimated).
        bytes: disk its output needs.
        up_to_date: forecast to be skipped (costs nothing).
        note: an extra reason shown after the settings (the fine-tuning length).
    """

    stage: str
    settings: str
    keys: tuple[str, ...] = ()
    seconds: float | None = 0.0
    bytes: int = 0
    up_to_date: bool = False
    note: str = ""


@dataclass
class Plan:
    """The stages of a run with their expected time and disk."""

    recipe: str
    recipe_reason: str
    device_type: str
    stages: list[PlannedStage] = field(default_factory=list)
    sources: Mapping[str, str] = field(default_factory=dict)
    free_bytes: int | None = None
    work_dir: Path | None = None

    @property
    def seconds(self) -> float:
        return sum(s.seconds or 0.0 for s in self.stages if not s.up_to_date)

    @property
    def new_bytes(self) -> int:
        return sum(s.bytes for s in self.stages if not s.up_to_date)

    @property
    def needed_bytes(self) -> int:
        """New artifacts plus the largest one again: a per-image stage holds its parts and the
        merged file at once while it merges."""
        new = [s.bytes for s in self.stages if not s.up_to_date]
        return sum(new) + max(new, default=0)

    def why(self, stage: PlannedStage) -> str:
        """``hidden, lr: recipe cpu; iterations: bccd.yaml`` (defaults left out)."""
        groups: dict[str, list[str]] = {}
        for key in stage.keys:
            source = self.sources.get(key)
            if source is not None:
                groups.setdefault(source, []).append(key.rsplit(".", 1)[-1])
        return "; ".join(f"{', '.join(keys)}: {source}" for source, keys in groups.items())

    def to_text(self) -> str:
        lines = [f"Plan (recipe {self.recipe}: {self.recipe_reason}; times "
                 f"{COSTS[self.device_type].source}; a loaded machine takes longer):"]
        for s in self.stages:
            if s.up_to_date:
                state, size = "up to date", ""
            else:
                state = "not estimated" if s.seconds is None else format_duration(s.seconds)
                size = format_bytes(s.bytes)
            lines.append(f"  {s.stage:<26} {state:>13} {size:>9}  {s.settings}")
            why = self.why(s)
            for extra in (s.note, f"why: {why}" if why else ""):
                if extra:
                    lines.append(f"  {'':<26} {'':>13} {'':>9}    {extra}")
        total = f"  {'total':<26} {format_duration(self.seconds):>13} " \
                f"{format_bytes(self.new_bytes):>9}"
        if self.free_bytes is not None:
            total += (f"  (disk: {format_bytes(self.needed_bytes)} needed while writing, "
                      f"{format_bytes(self.free_bytes)} free)")
        lines.append(total)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "recipe_reason": self.recipe_reason,
                "device": self.device_type, "seconds": self.seconds,
                "needed_bytes": self.needed_bytes, "free_bytes": self.free_bytes,
                "stages": [{"stage": s.stage, "settings": s.settings, "why": self.why(s),
                            "note": s.note, "seconds": s.seconds, "bytes": s.bytes,
                            "up_to_date": s.up_to_date} for s in self.stages]}


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"~{seconds:.0f} s"
    if seconds < 3600:
        return f"~{seconds / 60:.1f} min"
    return f"~{seconds / 3600:.1f} h"


def format_bytes(count: int) -> str:
    if count == 0:
        return "-"
    if count < 1e6:
        return f"{count / 1e3:.0f} kB"
    if count < 1e9:
        return f"{count / 1e6:.0f} MB"
    return f"{count / 1e9:.1f} GB"


def existing_folder(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the plan creates nothing)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(work_dir: Path) -> int:
    """Free bytes of the file system that holds (or will hold) ``work_dir``."""
    return int(shutil.disk_usage(existing_folder(work_dir)).free)


def check_disk(plan: Plan) -> None:
    """Refuse a plan whose new artifacts do not fit the work dir's free disk.

    Raises:
        StorageError: naming the GB needed and free, and what to change.
    """
    if plan.free_bytes is None or plan.needed_bytes <= plan.free_bytes:
        return
    biggest = max((s for s in plan.stages if not s.up_to_date), key=lambda s: s.bytes)
    raise StorageError(
        f"the plan needs about {plan.needed_bytes / 1e9:.1f} GB in {plan.work_dir} but only "
        f"{plan.free_bytes / 1e9:.1f} GB are free (largest: {biggest.stage}, "
        f"{format_bytes(biggest.bytes)}); nothing was run. Free space, use another work "
        "dir, or fewer scales / no flips / a zstd feature cache")


# --- estimating each stage ---------------------------------------------------------------------


@dataclass(frozen=True)
class SplitFacts:
    """What the plan needs of a split: image count, image sizes and objects."""

    images: int
    sizes: list[tuple[int, int]]
    objects: int


def split_facts(dataset: str | Path, split: str) -> SplitFacts:
    from sppdet.data.voc import VOCDataset

    data = VOCDataset(dataset, split)
    sizes = [(a.height, a.width) if a.height and a.width else DEFAULT_IMAGE_SIZE for a in data]
    objects = sum(len(a.boxes) for a in data)
    return SplitFacts(images=len(data), sizes=sizes, objects=objects)


def propose_stage(split: str, facts: SplitFacts, *, method: str, max_boxes: int,
                  jobs: int) -> PlannedStage:
    seconds = facts.images * PROPOSE_SECONDS.get(method, PROPOSE_SECONDS["ss-fast"]) / jobs
    size = facts.images * (max_boxes * PROPOSAL_BYTES_PER_BOX + 512)
    return PlannedStage(f"propose {split}", f"{method}, {max_boxes:,} boxes per image, "
                        f"{jobs} job{'s' if jobs > 1 else ''}",
                        ("propose.method", "propose.max_boxes", "jobs"), seconds, size)


def cache_stage(split: str, facts: SplitFacts, costs: DeviceCosts, *, backbone: str,
                scales: tuple[int, ...], flip: bool, dtype: str,
                compression: str) -> PlannedStage:
    relative = backbone_info(backbone)[2]
    passes = 2 if flip else 1
    seconds = facts.images * passes * area_factor(scales) * costs.conv_zf5 * relative
    size = cache_bytes(facts.sizes, scales, backbone=backbone, flip=flip, dtype=dtype,
                       compression=compression)
    shown = ", ".join(map(str, scales))
    return PlannedStage(f"cache-features {split}",
                        f"{backbone}, scale{'s' if len(scales) > 1 else ''} {shown}"
                        f"{', with flips' if flip else ''}, {dtype} {compression}",
                        ("cache_features.backbone", "cache_features.scales",
                         "cache_features.flip"), seconds, size)


def fc_ratio(costs: DeviceCosts, backbone: str, hidden: int) -> float:
    in_dim = backbone_info(backbone)[0] * SPP_BINS
    return fc_flops(in_dim, hidden) / fc_flops(*costs.fc_reference)


def finetune_stage(costs: DeviceCosts, *, backbone: str, iterations: int, hidden: int,
                   lr: float, batch_size: int, in_classes: int, note: str) -> PlannedStage:
    batch = batch_size / 128
    ms = (costs.finetune_pool_ms + costs.finetune_fc_ms * fc_ratio(costs, backbone, hidden))
    in_dim = backbone_info(backbone)[0] * SPP_BINS
    # weights, the momentum buffers of a checkpoint and the best model: 3 copies, float32
    size = 3 * 4 * (fc_flops(in_dim, hidden) + hidden * (in_classes + 1))
    return PlannedStage("finetune", f"{iterations:,} iterations, fc6/fc7 {hidden:,} wide, "
                        f"lr {lr:g}", ("finetune.iterations", "finetune_epochs",
                                       "finetune.hidden", "finetune.lr"),
                        iterations * ms * batch / 1000, size, note=note)


def describe_nms(detect: Any, *, tuned: bool) -> str:
    """The detect stage's NMS in words: as given, the tune step's, or the default."""
    if any(v is not None for v in (detect.iou_threshold, detect.nms_method, detect.nms_sigma)):
        iou = 0.3 if detect.iou_threshold is None else detect.iou_threshold
        return f"NMS {detect.nms_method or 'hard'} at IoU {iou:g} for every class"
    return "NMS per class from the tune step" if tuned else "hard NMS at IoU 0.3"


def per_image_stage(name: str, settings: str, keys: tuple[str, ...], images: int,
                    seconds_per_image: float, bytes_per_image: int) -> PlannedStage:
    return PlannedStage(name, settings, keys, images * seconds_per_image,
                        images * bytes_per_image)


def build_plan(dataset: str | Path, work_dir: Path, config: Any, *, device_type: str,
               recipe: str, recipe_reason: str, sources: Mapping[str, str],
               finetune_note: str, finetune_iterations: int, classes: int,
               tune_images: tuple[int, int] | None = None,
               is_current: Callable[[str], bool] | None = None,
               facts: Callable[[str], SplitFacts] | None = None) -> Plan:
    """The plan of ``config`` (a :class:`~stages.pipeline_config.PipelineConfig`).

    Args:
        dataset, work_dir: as the pipeline's.
        device_type: ``cpu`` or ``cuda`` (selects :data:`COSTS`).
        recipe, recipe_reason: the recipe used and why.
        sources: dotted config key -> what set it.
        finetune_note, finetune_iterations: the resolved fine-tuning length and its reason.
        classes: object classes of the dataset (fc8's width).
        tune_images: images of the fine-tuning and validation splits when the ``tune`` step
            runs (its selection SVMs and box regressors train on the first, it detects the
            second), else None.
        is_current: stage name -> forecast "up to date" (default: nothing is).
        facts: split -> its :class:`SplitFacts` (default: read from the dataset).
    """
    facts = facts or (lambda split: split_facts(dataset, split))
    is_current = is_current or (lambda stage: False)
    costs = COSTS["cuda" if device_type == "cuda" else "cpu"]
    plan = Plan(recipe=recipe, recipe_reason=recipe_reason,
                device_type="cuda" if device_type == "cuda" else "cpu",
                sources=sources, work_dir=Path(work_dir))
    splits = list(dict.fromkeys([config.train_split, config.test_split]))
    known = {split: facts(split) for split in splits}
    train, test = known[config.train_split], known[config.test_split]
    c, p = config.cache_features, config.propose
    backbone = (config.pretrain.backbone if config.pretrain is not None
                else c.backbone or DEFAULT_BACKBONE)
    if config.pretrain is not None:
        plan.stages.append(PlannedStage("pretrain", f"{backbone} SPP classifier",
                                        ("pretrain",), None, 0))
    for split in splits:
        plan.stages.append(propose_stage(split, known[split], method=p.method,
                                         max_boxes=p.max_boxes, jobs=config.jobs))
    for split in splits:
        plan.stages.append(cache_stage(split, known[split], costs, backbone=backbone,
                                       scales=tuple(c.scales),
                                       flip=c.flip and split == config.train_split,
                                       dtype=c.dtype, compression=c.compression))
    f = config.finetune
    plan.stages.append(finetune_stage(costs, backbone=backbone, iterations=finetune_iterations,
                                      hidden=f.hidden, lr=f.lr, batch_size=f.batch_size,
                                      in_classes=classes, note=finetune_note))
    boxes_k = p.max_boxes / 1000
    ratio = fc_ratio(costs, backbone, f.hidden)
    s = config.train_svm
    plan.stages.append(per_image_stage(
        "train-svm", f"{s.layer} SVMs, C {s.C:g}", ("train_svm.layer", "train_svm.C"),
        train.images, costs.svm_per_1k * boxes_k * ratio, 0))
    if config.train_bbox_reg.enabled:
        plan.stages.append(per_image_stage(
            "train-bbox-reg", f"pool5 ridge, lambda {config.train_bbox_reg.lambda_:g}",
            ("train_bbox_reg.lambda_",), train.images, costs.bbox_reg, 0))
    d = config.detect
    detect_per_image = boxes_k * (costs.detect_pool_per_1k + costs.detect_fc_per_1k * ratio)
    if tune_images is not None:
        trained, validated = tune_images
        svm_and_reg = costs.svm_per_1k * boxes_k * ratio + (
            costs.bbox_reg if config.train_bbox_reg.enabled else 0.0)
        # choosing the scorer keeps softmax candidates from the same pass: the same time
        what = "scorer, NMS" if config.tune.choose_scorer and d.scorer == "svm" else "NMS"
        plan.stages.append(PlannedStage(
            "tune", f"{what} and operating point per class on {validated} validation images",
            ("tune.enabled", "tune.choose_scorer"),
            trained * svm_and_reg + validated * detect_per_image,
            validated * DETECTION_BYTES_PER_IMAGE))
    plan.stages.append(per_image_stage(
        "detect", f"{d.scorer} scores, {describe_nms(d, tuned=tune_images is not None)}",
        ("detect.scorer", "detect.iou_threshold", "detect.nms_method"), test.images,
        detect_per_image, DETECTION_BYTES_PER_IMAGE))
    plan.stages.append(per_image_stage("eval", f"{config.metric} AP", ("metric",),
                                       test.images, costs.eval, 0))
    train_inputs = [f"propose {config.train_split}", f"cache-features {config.train_split}"]
    test_inputs = [f"propose {config.test_split}", f"cache-features {config.test_split}"]
    needs = {"finetune": train_inputs, "train-svm": ["finetune", *train_inputs],
             "train-bbox-reg": train_inputs,
             "tune": ["finetune", "train-svm", "train-bbox-reg", *train_inputs],
             "detect": ["finetune", "train-svm", "train-bbox-reg", "tune", *test_inputs],
             "eval": ["detect"]}
    current: dict[str, bool] = {}
    for stage in plan.stages:
        # a stage whose inputs are remade is remade too, as in the pipeline; with a pretrain
        # section the features' weights are not known before it runs
        inputs_current = all(current.get(name, True) for name in needs.get(stage.stage, ()))
        stage.up_to_date = (config.pretrain is None and inputs_current
                            and is_current(stage.stage))
        current[stage.stage] = stage.up_to_date
    plan.free_bytes = free_bytes(work_dir)
    return plan


__all__ = ["BACKBONES", "COSTS", "DeviceCosts", "Plan", "PlannedStage", "SplitFacts",
           "area_factor", "build_plan", "cache_bytes", "check_disk", "fc_flops", "free_bytes"]
