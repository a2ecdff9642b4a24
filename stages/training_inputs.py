"""Where the inputs of ``finetune``, ``train-svm``, ``train-bbox-reg`` and ``detect`` are,
and whether they fit.

The training stages read the split's proposals (``propose``) and its conv5 feature cache
(``cache-features``); ``train-svm`` also reads the fine-tuned fc layers (``finetune``) for fc6
and fc7 features. Inputs not given are found by the work-dir layout (``stages/layout.py``);
the backbone, when not given, is the one the fc checkpoint was fine-tuned on. The command line
only parses its options and calls the ``*_inputs`` functions here.
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
from sppdet.errors import (YOUR_CHOICE, ArtifactError, ArtifactMissingError, ConfigError,
                           DataError, Remedy, StaleArtifactError)
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.training.finetune.compatibility import check_features_match
from sppdet.training.svm.scale import feature_scale_from_norms, sample_for_scale
from sppdet.training.windows import PROPOSALS_STAGE, ImageTruth
from sppdet.features.window_features import WindowFeaturizer

from .common import dataset_params
from .layout import features_dir, find_features, locate_features, model_dir, proposals_path
from .params import FINETUNE_SPLIT, TRAIN_SPLIT, VAL_SPLIT, ProposeOptions

FINETUNE_STAGE = "finetune"
DEFAULT_METHOD = ProposeOptions.method

#: R-CNN ``rcnn_feature_stats.m``: the feature scale is measured on 200 random images x up to
#: 200 random boxes each, for a mean L2 norm of 20.
SCALE_SAMPLE_IMAGES = 200
SCALE_SAMPLE_BOXES = 200
TARGET_NORM = 20.0

#: No backbone and no feature file: name one of them.
_GIVE_FEATURES = Remedy.rerun(verb="give the backbone", backbone=YOUR_CHOICE,
                              otherwise=Remedy.rerun(verb="give the file", features=YOUR_CHOICE))
#: ... or make (or give) the fc checkpoint whose record names the backbone.
_GIVE_FEATURES_OR_FC = Remedy.rerun(
    verb="give the backbone", backbone=YOUR_CHOICE, otherwise=Remedy.rerun(
        verb="give the file", features=YOUR_CHOICE, otherwise=Remedy.rerun(
            "finetune", verb="run", purpose=" first", otherwise=Remedy.rerun(
                verb="give its checkpoint", fc=YOUR_CHOICE))))


@dataclass
class InputPaths:
    """The input artifacts of a training stage."""

    proposals: Path
    features: Path
    fc: Path | None


@dataclass
class FinetuneInputs:
    """The splits and input artifacts of fine-tuning (``val_*`` are None without validation)."""

    train_split: str
    val_split: str | None
    train_proposals: Path
    train_features: Path
    val_proposals: Path | None
    val_features: Path | None


def has_split(dataset: str | Path, split: str | None) -> bool:
    """Whether ``dataset`` has ``ImageSets/Main/<split>.txt``."""
    return bool(split) and (Path(dataset) / "ImageSets" / "Main" / f"{split}.txt").is_file()


def finetune_splits(dataset: str | Path, finetune_split: str | None = FINETUNE_SPLIT,
                    val_split: str | None = VAL_SPLIT, *, fallback: str = TRAIN_SPLIT
                    ) -> tuple[str, str | None]:
    """The splits the fc layers are fine-tuned and validated on: each one when the dataset has
    it; without the fine-tuning split, ``fallback`` (the training split) and no validation.

    The one rule of ``sppdet finetune`` (when no split is given) and of the pipeline: ``train``
    with ``val`` held out for checkpoint selection, else the whole training split.
    """
    if not has_split(dataset, finetune_split):
        return fallback, None
    return str(finetune_split), val_split if has_split(dataset, val_split) else None


def recorded_name(path: Path, key: str, made_by: str) -> str:
    """The proposal method or backbone name recorded in an input artifact.

    Raises:
        ArtifactMissingError: ``path`` has no record.
        ConfigError: the record names no such thing.
    """
    value = read_record(path, made_by=made_by).params.get(key)
    if isinstance(value, Mapping):
        value = value.get("name")
    if not isinstance(value, str):
        raise ConfigError(f"{path} records no {key}; give the validation split's file too")
    return value


def finetune_inputs(work_dir: Path, dataset: str | Path, *, train_split: str | None = None,
                    val_split: str | None = None, validate: bool = True,
                    method: str | None = None, proposals: Path | None = None,
                    val_proposals: Path | None = None, backbone: str | None = None,
                    features: Path | None = None, variant: str | None = None,
                    val_features: Path | None = None,
                    default_backbone: str) -> FinetuneInputs:
    """The splits and input artifacts of fine-tuning, by the work-dir layout where not given.

    Args:
        train_split: default: :func:`finetune_splits`'s (``train``, else ``trainval``).
        val_split: default: ``val`` when the dataset has it and the training split was not
            the fallback; ignored when ``validate`` is False.
        validate: False for no validation (the last iteration is kept).
        method: proposal method of the default proposals (default ``ss-fast``); the
            validation proposals default to the training file's method.
        backbone: backbone of the default features (default ``default_backbone``).
        variant: variant folder of the default training features.
        val_features: default: the validation split's cache in the training file's variant
            folder, else the only one made with the training file's backbone.

    Raises:
        ConfigError: exclusive inputs given together, several caches to choose from, or an
            input whose record does not say what the default needs.
        ArtifactMissingError: a default input that was never made.
    """
    _exclusive(proposals=proposals, method=method)
    _exclusive(features=features, backbone=backbone)
    _exclusive(features=features, variant=variant)
    if train_split is None:
        train_split, default_val = finetune_splits(dataset)
    else:
        default_val = VAL_SPLIT if has_split(dataset, VAL_SPLIT) else None
    val = (val_split or default_val) if validate else None
    method = method or DEFAULT_METHOD
    train_proposals = proposals or proposals_path(work_dir, dataset, train_split, method)
    train_features = features or find_features(work_dir, dataset, train_split,
                                               backbone or default_backbone, variant)
    if val is not None:
        if val_proposals is None:
            val_method = recorded_name(train_proposals, "method", "propose") if proposals \
                else method
            val_proposals = proposals_path(work_dir, dataset, val, val_method)
        if val_features is None:
            # the same variant as the training file when it lies in the layout, else the
            # only cache of the validation split made with the training file's backbone
            located = locate_features(work_dir, dataset, train_features)
            if located is None:
                located = (recorded_name(train_features, "backbone", "cache-features"), None)
            val_features = find_features(work_dir, dataset, val, *located)
    else:
        val_proposals = val_features = None
    return FinetuneInputs(train_split=train_split, val_split=val,
                          train_proposals=Path(train_proposals),
                          train_features=Path(train_features),
                          val_proposals=None if val_proposals is None else Path(val_proposals),
                          val_features=None if val_features is None else Path(val_features))


def detect_inputs(work_dir: Path, dataset: str | Path, split: str, name: str, *,
                  method: str | None = None, proposals: Path | None = None,
                  features: Path | None = None, variant: str | None = None
                  ) -> tuple[Path, Path | None]:
    """``(proposals, features)`` of detecting ``split`` with model ``name``.

    The features default to the split's cache made with the fc checkpoint's backbone (in
    ``variant`` when given; where the split has several, the one the model was fine-tuned
    on); ``None`` when the split has no cache of that backbone at all,
    finished or not, which detection takes as "compute conv5 on the fly". An unfinished cache
    is an error (finish it), never silently replaced by conv5 on the fly.

    Raises:
        ConfigError: exclusive inputs given together, or several caches to choose from and
            none of them the model's.
        ArtifactMissingError: no fc checkpoint, or no cache in ``variant``.
    """
    _exclusive(proposals=proposals, method=method)
    _exclusive(features=features, variant=variant)
    if proposals is None:
        method = method or trained_method(model_dir(work_dir, name) / "fc.pt") or DEFAULT_METHOD
        proposals = proposals_path(work_dir, dataset, split, method)
    if features is None:
        fc = model_dir(work_dir, name) / "fc.pt"
        backbone = str(backbone_name(fc_backbone(fc)))
        folder = features_dir(work_dir, dataset, backbone)
        cached = [*folder.glob(f"*/{split}.h5"), *folder.glob(f"*/{split}.h5.parts")]
        if variant is not None or cached:
            features = find_features(work_dir, dataset, split, backbone, variant,
                                     preferred=trained_variants(fc))
    return Path(proposals), features


def trained_variants(fc: Path) -> tuple[str, ...]:
    """The feature-cache variants of the settings a model was fine-tuned on, from its record:
    the training cache's (``s480-flip``), then the same without the mirrored images
    (``s480``, how other splits are cached). Where a split has caches of several variants,
    the model's stages read these unless told otherwise. Empty when the record does not say."""
    try:
        ref = read_record(fc, made_by=FINETUNE_STAGE).inputs.get("features_train")
    except (ArtifactError, OSError):
        return ()
    if ref is None or not ref.path:
        return ()
    variant = Path(ref.path).parent.name  # <features>/<dataset>/<backbone>/<variant>/<split>.h5
    unflipped = "-".join(part for part in variant.split("-") if part != "flip")
    return tuple(dict.fromkeys((variant, unflipped)))


def trained_method(fc: Path) -> str | None:
    """The proposal method a model was fine-tuned on, from the records: detection reads the
    same method's proposals unless told otherwise. ``None`` when the records do not say (a
    missing checkpoint, or proposals that were moved and whose name does not tell)."""
    try:
        ref = read_record(fc, made_by=FINETUNE_STAGE).inputs.get("proposals_train")
    except (ArtifactError, OSError):
        return None
    if ref is None or not ref.path:
        return None
    path = Path(ref.path)
    try:
        method = read_record(path, made_by=PROPOSALS_STAGE).params.get("method")
    except (ArtifactError, OSError):
        method = None
    if method is None:  # proposals files are named <split>.<method>.h5 (stages.layout)
        parts = path.name.split(".")
        method = parts[-2] if len(parts) >= 3 and parts[-1] == "h5" else None
    return None if method is None else str(method)


def _exclusive(**given: object) -> None:
    """Refuse two inputs that each decide the same thing (a usage error the CLI checks first)."""
    (first, a), (second, b) = given.items()
    if a is not None and b is not None:
        raise ConfigError(f"{first} and {second} were both given; they are exclusive (the "
                          f"{first} file decides the {second})")


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
            default: the only one holding the split's cache, or where several do, the one
            the fc checkpoint was fine-tuned on.
        fc: the fc checkpoint; default ``<work>/models/<name>/fc.pt``.
        needs_fc: whether the fc checkpoint is an input (fc6/fc7 SVMs).

    Raises:
        ConfigError: both ``proposals`` and ``method``, both ``features`` and ``backbone``
            or ``variant``, no way to tell the backbone, or several variants to choose from.
        ArtifactMissingError: no cache of the split for the backbone (and variant).
    """
    _exclusive(proposals=proposals, method=method)
    _exclusive(features=features, backbone=backbone)
    _exclusive(features=features, variant=variant)
    fc_path = Path(fc) if fc is not None else model_dir(work_dir, name) / "fc.pt"
    if proposals is None:
        proposals = proposals_path(work_dir, dataset, split, method or DEFAULT_METHOD)
    if features is None:
        if backbone is None:
            if not fc_path.exists():
                needed = "the fc checkpoint" if needs_fc else "an fc checkpoint to take it from"
                raise ConfigError(f"which backbone's features? (no {needed} at {fc_path})",
                                  remedy=_GIVE_FEATURES_OR_FC)
            backbone = backbone_name(fc_backbone(fc_path))
            if backbone is None:
                raise ConfigError(f"{fc_path}: its record names no backbone",
                                  remedy=_GIVE_FEATURES)
        features = find_features(work_dir, dataset, split, backbone, variant,
                                 preferred=trained_variants(fc_path))
    return InputPaths(proposals=Path(proposals), features=Path(features),
                      fc=fc_path if needs_fc else None)


def check_made_on(record: Record, path: Path, data: VOCDataset, made_by: str) -> None:
    """Refuse an input made by another stage, on another split, or before the data changed.

    A split of the same dataset that holds every image of ``data``'s split serves (the
    ``trainval`` artifacts for ``train`` and ``val``). Records without a ``data`` parameter
    (made by other tools) are only checked by stage.
    """
    if record.stage != made_by:
        raise ConfigError(f"{path} was made by `sppdet {record.stage}`, not by `sppdet "
                          f"{made_by}`")
    made_on = record.params.get("data")
    if not isinstance(made_on, Mapping):
        return
    here = dataset_params(data)
    if made_on.get("dataset") == here["dataset"] and made_on.get("split") != data.split:
        # an artifact of a superset split (trainval for train and val) serves when it is
        # current for its own split and holds every image of this one
        superset = _superset_identity(data, str(made_on.get("split")))
        if superset is not None:
            here = superset
    if made_on.get("split") != here["split"] or made_on.get("dataset") != here["dataset"]:
        raise DataError(f"{path} was made on split '{made_on.get('split')}' of "
                        f"{made_on.get('dataset')}, not on split '{data.split}' of "
                        f"{here['dataset']}", remedy=Remedy.rerun(
                            made_by, str(data.root), split=data.split,
                            otherwise="give the file made for it"))
    if made_on.get("fingerprint") not in (None, here["fingerprint"]):
        raise StaleArtifactError(f"{path} was made before the annotations or images of split "
                                 f"'{data.split}' changed",
                                 remedy=Remedy.rerun(made_by, purpose=" for it", force=True))


def _superset_identity(data: VOCDataset, split: str) -> dict[str, Any] | None:
    """:func:`dataset_params` of ``split`` of ``data``'s dataset when that split holds every
    image of ``data``'s; else (or when it cannot be read) ``None``."""
    if not has_split(data.root, split):
        return None
    try:
        superset = VOCDataset(data.root, split, data.classes)
    except DataError:
        return None
    if not set(data.image_ids) <= set(superset.image_ids):
        return None
    return dataset_params(superset)


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
                    f"'{data.split}' (e.g. {', '.join(missing[:5])})",
                    remedy=Remedy.rerun(command, str(data.root), split=data.split, force=True))
        for ann in data:
            attrs = reader.group(ann.image_id).attrs
            sizes = {"proposals": (int(attrs["width"]), int(attrs["height"])),
                     "cache-features": tuple(reversed(cache.image_size(ann.image_id)))}
            for command, size in sizes.items():
                if size != (ann.width, ann.height):
                    raise DataError(
                        f"image {ann.image_id} is {size[0]}x{size[1]} in the "
                        f"{'proposals' if command == PROPOSALS_STAGE else 'features'} but "
                        f"{ann.width}x{ann.height} in the dataset",
                        remedy=Remedy.rerun(command, force=True))
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
                                   "layers", remedy=Remedy.rerun(
                                       alternative="run `sppdet finetune` first",
                                       purpose=" to train on pool5", layer="pool5"))
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
