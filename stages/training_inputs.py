"""Inputs that ``train-svm`` and ``train-bbox-reg`` share: where they are, and whether they fit.

Both stages read the split's proposals (``propose``) and its conv5 feature cache
(``cache-features``); ``train-svm`` also reads the fine-tuned fc layers (``finetune``) for fc6
and fc7 features. Defaults follow the work-dir layout (``stages/layout.py``); the backbone,
when not given, is the one the fc checkpoint was fine-tuned on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sppdet.io.item_store import ItemReader
from sppdet.io.records import InputRef, Record, input_ref, read_record
from sppdet.data.voc import VOCDataset
from sppdet.errors import (ArtifactError, ArtifactMissingError, ConfigError, DataError,
                           StaleArtifactError)
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.training.finetune.compatibility import check_features_match
from sppdet.training.svm.scale import feature_scale_from_norms, sample_for_scale
from sppdet.training.windows import PROPOSALS_STAGE, ImageTruth
from sppdet.features.window_features import WindowFeaturizer

from .common import dataset_params
from .layout import find_features, model_dir, proposals_path

FINETUNE_STAGE = "finetune"
DEFAULT_METHOD = "ss-fast"

#: R-CNN ``rcnn_feature_stats.m``: the feature scale is measured on 200 random images x up to
#: 200 random boxes each, for a mean L2 norm of 20.
SCALE_SAMPLE_IMAGES = 200
SCALE_SAMPLE_BOXES = 200
TARGET_NORM = 20.0


@dataclass
class InputPaths:
    """The input artifacts of a training stage."""

    proposals: Path
    features: Path
    fc: Path | None


def backbone_name(backbone: Any) -> str | None:
    """The name in a record's ``backbone`` parameter (a name, or a dict with ``name``)."""
    if isinstance(backbone, Mapping):
        name = backbone.get("name")
        return None if name is None else str(name)
    return None if backbone is None else str(backbone)


def fc_backbone(fc: Path) -> Any:
    """The ``backbone`` parameter of an fc checkpoint's record (or its saved meta)."""
    record = read_record(fc, made_by=FINETUNE_STAGE)
    backbone = record.params.get("backbone")
    if backbone is None:
        _, meta = FcHead.load(fc)
        backbone = meta.get("backbone")
    return backbone


def resolve_paths(work_dir: Path, dataset: str | Path, split: str, name: str, *,
                  method: str | None = None, proposals: Path | None = None,
                  features: Path | None = None, backbone: str | None = None,
                  variant: str | None = None, fc: Path | None = None,
                  needs_fc: bool = True) -> InputPaths:
    """Default input paths from the work-dir layout.

    Args:
        method: proposal method (default ``ss-fast``); only with ``proposals`` unset.
        proposals: the proposals artifact, instead of the default for ``method``.
        features: the features artifact, instead of the default for ``backbone``.
        backbone: backbone of the default features; default: the fc checkpoint's.
        variant: variant folder of the default features (:func:`layout.find_features`);
            default: the only one holding the split's cache.
        fc: the fc checkpoint; default ``<work>/models/<name>/fc.pt``.
        needs_fc: whether the fc checkpoint is an input (fc6/fc7 SVMs).

    Raises:
        ConfigError: both ``proposals`` and ``method``, both ``features`` and ``backbone``
            or ``variant``, no way to tell the backbone, or several variants to choose from.
        ArtifactMissingError: no cache of the split for the backbone (and variant).
    """
    if proposals is not None and method is not None:
        raise ConfigError("give either --proposals or --method, not both")
    if features is not None and backbone is not None:
        raise ConfigError("give either --features or --backbone, not both")
    if features is not None and variant is not None:
        raise ConfigError("give either --features or --feature-variant, not both")
    fc_path = Path(fc) if fc is not None else model_dir(work_dir, name) / "fc.pt"
    if proposals is None:
        proposals = proposals_path(work_dir, dataset, split, method or DEFAULT_METHOD)
    if features is None:
        if backbone is None:
            if not fc_path.exists():
                needed = "the fc checkpoint" if needs_fc else "an fc checkpoint to take it from"
                raise ConfigError(
                    f"which backbone's features? Give --backbone or --features (no {needed} "
                    f"at {fc_path}; run `sppdet finetune` first, or pass --fc)"
                )
            backbone = backbone_name(fc_backbone(fc_path))
            if backbone is None:
                raise ConfigError(f"{fc_path}: its record names no backbone; give --backbone "
                                  "or --features")
        features = find_features(work_dir, dataset, split, backbone, variant)
    return InputPaths(proposals=Path(proposals), features=Path(features),
                      fc=fc_path if needs_fc else None)


def check_made_on(record: Record, path: Path, data: VOCDataset, made_by: str) -> None:
    """Refuse an input made by another stage, on another split, or before the data changed.

    Records without a ``data`` parameter (made by other tools) are only checked by stage.
    """
    if record.stage != made_by:
        raise ConfigError(f"{path} was made by `sppdet {record.stage}`, not by `sppdet "
                          f"{made_by}`")
    made_on = record.params.get("data")
    if not isinstance(made_on, Mapping):
        return
    here = dataset_params(data)
    if made_on.get("split") != data.split or made_on.get("dataset") != here["dataset"]:
        raise DataError(f"{path} was made on split '{made_on.get('split')}' of "
                        f"{made_on.get('dataset')}, not on split '{data.split}' of "
                        f"{here['dataset']}; rerun `sppdet {made_by} {data.root} --split "
                        f"{data.split}`, or give the file made for it")
    if made_on.get("fingerprint") not in (None, here["fingerprint"]):
        raise StaleArtifactError(f"{path} was made before the annotations or images of split "
                                 f"'{data.split}' changed; rerun `sppdet {made_by}` for it "
                                 "(with --force)")


def open_inputs(data: VOCDataset, paths: InputPaths, *, device: Any = "cpu"
                ) -> tuple[FeatureCache, ItemReader, dict[str, InputRef]]:
    """Open the feature cache and the proposals and check they fit the split.

    Checks: made by ``propose`` / ``cache-features`` on this split (when their records say),
    every image of the split present in both, with the dataset's image size.

    Returns:
        ``(cache, proposals_reader, input_refs)``; the caller closes both readers.

    Raises:
        ArtifactMissingError: an input is missing or unfinished (names the command).
        DataError: images of the split missing from an input, or of another size (names the
            command to rerun).
    """
    refs = {"proposals": input_ref(paths.proposals, made_by=PROPOSALS_STAGE)}
    refs["features"] = input_ref(paths.features, made_by="cache-features")
    cache = FeatureCache(paths.features, device=device)
    try:
        reader = ItemReader(paths.proposals, made_by=PROPOSALS_STAGE)
    except BaseException:
        cache.close()
        raise
    try:
        check_made_on(reader.record, paths.proposals, data, PROPOSALS_STAGE)
        check_made_on(cache.record, paths.features, data, "cache-features")
        for what, path, contains, command in (
                ("proposals", paths.proposals, reader.__contains__, PROPOSALS_STAGE),
                ("conv5 features", paths.features, cache.__contains__, "cache-features")):
            missing = [i for i in data.image_ids if not contains(i)]
            if missing:
                raise DataError(
                    f"{path} has no {what} for {len(missing)} image(s) of split "
                    f"'{data.split}' (e.g. {', '.join(missing[:5])}); rerun `sppdet {command} "
                    f"{data.root} --split {data.split}` (with --force if it was made for other "
                    "images)")
        for ann in data:
            attrs = reader.group(ann.image_id).attrs
            sizes = {"proposals": (int(attrs["width"]), int(attrs["height"])),
                     "cache-features": tuple(reversed(cache.image_size(ann.image_id)))}
            for command, size in sizes.items():
                if size != (ann.width, ann.height):
                    raise DataError(
                        f"image {ann.image_id} is {size[0]}x{size[1]} in the "
                        f"{'proposals' if command == PROPOSALS_STAGE else 'features'} but "
                        f"{ann.width}x{ann.height} in the dataset; rerun `sppdet {command}` "
                        "(with --force)")
    except BaseException:
        cache.close()
        reader.close()
        raise
    return cache, reader, refs


def load_fc(fc: Path, data: VOCDataset, cache: FeatureCache) -> tuple[FcHead, InputRef]:
    """Load the fine-tuned fc layers and check they fit the features and the classes.

    Raises:
        ArtifactMissingError: no fc checkpoint (or no record: it never finished).
        ConfigError: the checkpoint was fine-tuned on another backbone's features (or other
            weights, stride or channels; :func:`sppdet.training.finetune.check_features_match` says
            what to rerun).
        DataError: it was fine-tuned for another class list.
    """
    if not Path(fc).exists():
        raise ArtifactMissingError(f"{fc} does not exist; fc6/fc7 SVMs need the fine-tuned fc "
                                   "layers: run `sppdet finetune` first (or train on --layer "
                                   "pool5)")
    record = read_record(fc, made_by=FINETUNE_STAGE)
    head, _ = FcHead.load(fc)
    meta = record.params
    if record.stage != FINETUNE_STAGE or not isinstance(meta.get("backbone"), Mapping):
        raise ArtifactError(f"{fc} was not made by `sppdet finetune` (its record has no "
                            "backbone); rerun `sppdet finetune`")
    check_features_match(meta, cache, model_path=fc)
    fc_classes = meta.get("classes")
    if fc_classes is not None and list(fc_classes) != list(data.classes):
        raise DataError(
            f"the fc checkpoint {fc} was fine-tuned for classes {list(fc_classes)}, but "
            f"{data.root} split '{data.split}' has {list(data.classes)}; rerun `sppdet "
            "finetune` on this dataset")
    if head.num_classes != len(data.classes):
        raise DataError(f"the fc checkpoint {fc} has {head.num_classes} object classes, the "
                        f"dataset {len(data.classes)}; rerun `sppdet finetune` on this dataset")
    return head, input_ref(fc, made_by=FINETUNE_STAGE)


def image_truth(data: VOCDataset) -> dict[str, ImageTruth]:
    """image id -> :class:`ImageTruth`, in split order."""
    return {a.image_id: ImageTruth(a.boxes.reshape(-1, 4), a.labels, a.difficult)
            for a in data}


def scale_sample(reader: ItemReader, image_ids: list[str], seed: int) -> dict[str, np.ndarray]:
    """The proposals on which the feature scale is measured (fixed by ``seed``).

    Returns:
        image id -> ``[m, 4]`` boxes, for up to 200 random images x 200 random proposals.
    """
    counts = [int(reader.group(i)["boxes"].shape[0]) for i in image_ids]
    sample = sample_for_scale(counts, np.random.default_rng(seed),
                              num_images=SCALE_SAMPLE_IMAGES,
                              rows_per_image_sample=SCALE_SAMPLE_BOXES)
    out = {}
    for position, rows in sample:
        image_id = image_ids[position]
        out[image_id] = np.asarray(reader.group(image_id)["boxes"][()],
                                   dtype=np.float32).reshape(-1, 4)[rows]
    return out


def scale_from_norms(norms_by_image: Mapping[str, np.ndarray], what: str) -> float:
    """The mean-norm-20 factor from the sampled windows' feature norms (all images')."""
    norms = np.concatenate(list(norms_by_image.values())) if norms_by_image else np.zeros(0)
    if norms.size == 0:
        raise DataError(f"no proposal to measure the {what} feature scale on: every image of "
                        "the split has 0 proposals; rerun `sppdet propose`")
    return feature_scale_from_norms(norms, target_norm=TARGET_NORM)


def sample_norms(featurizer: WindowFeaturizer,
                 windows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """L2 norms of the features of each image's sampled windows."""
    return {image_id: np.linalg.norm(featurizer(image_id, boxes).astype(np.float64), axis=1)
            for image_id, boxes in windows.items()}


def scale_params() -> dict[str, Any]:
    """How the feature scale is measured (recorded with the model)."""
    return {"images": SCALE_SAMPLE_IMAGES, "boxes_per_image": SCALE_SAMPLE_BOXES,
            "target_norm": TARGET_NORM, "window_scale": "best"}
