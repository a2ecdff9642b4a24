"""Stage ``classify``: test a pretrained SPP classifier three ways, and write full-image features.

Input: ``classifier.pt`` from ``sppdet pretrain`` (or its folder) and a dataset split of the
same kind it was trained on (a VOC dataset is cut into crops with the training crop settings).
Output, in ``<work>/classify/<model>/<dataset-tag>/<split>/``:

* ``report.json`` (with the record) and ``report.md``: top-1/top-5 error of the centre crop,
  the full image and multi-view testing side by side (paper table 3), per class;
* with ``features``: ``features.<layer>.h5`` holding ``features [N, D]`` float32,
  ``image_ids [N]``, ``labels`` (``[N]`` class indices, or ``[N, K]`` 0/1 for whole VOC images)
  and the class names -- the full-image representation of paper 3.2 for linear SVMs.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from sppdet.io.atomic import atomic_path, write_text_atomic
from sppdet.io.records import Record
from sppdet.io.hashing import file_sha256
from sppdet.classification.evaluate import (
    MODES,
    ModeResult,
    evaluate_modes,
    image_representations,
    results_markdown,
)
from sppdet.classification.examples import (
    BACKGROUND,
    Example,
    ExampleSet,
    is_voc_layout,
    load_example_images,
    load_example_set,
    voc_crop_examples,
)
from sppdet.classification.model import ViewSettings, load_classifier
from sppdet.data.voc import VOCDataset
from sppdet.devices import resolve_device
from sppdet.errors import ConfigError, DataError
from sppdet.progress import get_logger

from .common import format_seconds
from .layout import dataset_tag
from .pretrain import CLASSIFIER_FILE, examples_fingerprint
from .runner import StageOutput

log = get_logger("classify")
STAGE = "classify"
STAGE_VERSION = 1
REPORT_FILE = "report.json"


def classify_dir(work_dir: Path, model: str, dataset: str | Path, split: str) -> Path:
    return Path(work_dir) / "classify" / model / dataset_tag(dataset) / split


def resolve_classifier(path: str | Path) -> Path:
    """``classifier.pt`` itself, or the ``backbones/<name>/`` folder that holds it."""
    path = Path(path)
    return path / CLASSIFIER_FILE if path.is_dir() else path


@dataclass
class ClassifySummary:
    """What a classify run did."""

    out_dir: Path
    model: str
    n_examples: int
    results: list[ModeResult] = field(default_factory=list)
    features_path: Path | None = None
    seconds: float = 0.0
    up_to_date: bool = False

    def to_text(self) -> str:
        if self.up_to_date:
            return f"classify: {self.out_dir / REPORT_FILE} is up to date"
        lines = [f"classify: {self.model} on {self.n_examples} examples", "",
                 results_markdown(self.results).rstrip(), ""]
        if self.features_path is not None:
            lines.append(f"  features: {self.features_path}")
        lines += [f"  report: {self.out_dir / 'report.md'}",
                  f"  time: {format_seconds(self.seconds)}"]
        return "\n".join(lines)


def evaluation_examples(dataset: Path, split: str, classes: Sequence[str],
                        meta: dict) -> ExampleSet:
    """The split's examples, cut as the model's training examples were (VOC crops)."""
    source = dict(meta.get("examples", {}))
    if is_voc_layout(dataset):
        object_classes = [name for name in classes if name != BACKGROUND]
        accepted = inspect.signature(voc_crop_examples).parameters
        options = {key: value for key, value in source.items()
                   if key in accepted and key not in ("root", "split", "classes")}
        examples = voc_crop_examples(dataset, split, classes=object_classes, **options)
    else:
        examples = load_example_set(dataset, split, classes=classes)
    if tuple(examples.classes) != tuple(classes):
        raise DataError(f"{dataset} ({split}) gives the classes {list(examples.classes)} but the "
                        f"model was trained on {list(classes)}")
    return examples


def whole_image_examples(dataset: Path, split: str,
                         classes: Sequence[str]) -> tuple[ExampleSet, np.ndarray]:
    """Every image of a VOC split whole, with its 0/1 label matrix ``[N, K]`` (K object classes)."""
    object_classes = tuple(name for name in classes if name != BACKGROUND)
    data = VOCDataset(dataset, split, classes=object_classes)
    items, matrix = [], np.zeros((len(data), len(object_classes)), dtype=np.int8)
    for row, ann in enumerate(data):
        items.append(Example(image_id=ann.image_id, image_path=ann.image_path, label=0, box=None))
        matrix[row, np.unique(ann.labels)] = 1
    source = {"kind": "voc-whole-images", "root": str(Path(dataset).resolve()), "split": split}
    return ExampleSet(classes=object_classes, examples=tuple(items), source=source), matrix


def write_features(path: Path, features: np.ndarray, examples: ExampleSet,
                   labels: np.ndarray, *, layer: str, size: int) -> None:
    """HDF5 with ``features``, ``labels``, ``image_ids`` and attributes (written atomically)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("features", data=features, compression="lzf")
            handle.create_dataset("labels", data=labels)
            handle.create_dataset("image_ids", data=np.array(
                [example.image_id for example in examples.examples], dtype=object),
                dtype=h5py.string_dtype())
            handle.attrs["classes"] = json.dumps(list(examples.classes))
            handle.attrs["layer"] = layer
            handle.attrs["shorter_side"] = size


def run(model: str | Path, dataset: str | Path, work_dir: str | Path, *, split: str = "test",
        modes: Sequence[str] = MODES, views: str = "10",
        view_scales: tuple[int, ...] | None = None, view_mapping: str = "crop",
        features: str | None = None, whole_images: bool = False, feature_size: int | None = None,
        device: str = "auto", jobs: int = 1, force: bool = False) -> ClassifySummary:
    """Evaluate a classifier on ``dataset``/``split`` and optionally write features.

    Args:
        model: ``classifier.pt`` or its ``backbones/<name>/`` folder.
        dataset: VOC-layout dataset or classification folder.
        work_dir: the work dir.
        split: the split (VOC) or sub-folder (classification folder).
        modes: any of ``crop``, ``full``, ``multiview``.
        views: multi-view set ``"1"``, ``"10"`` or ``"18"`` (views of the training crop size).
        view_scales: shorter sides for multi-view testing (default: the training image size).
        view_mapping: ``"crop"`` or ``"paper"`` (:mod:`sppdet.classification.model`).
        features: ``spp``, ``fc6`` or ``fc7`` to write full-image features, or None.
        whole_images: features of whole VOC images with multi-label targets (paper 3.2's VOC
            2007 classification) instead of the evaluated examples.
        feature_size: shorter side of images for features (default: the training image size).
        device, jobs, force: as for the other stages.
    """
    started = time.perf_counter()
    dataset = Path(dataset)
    classifier_path = resolve_classifier(model)
    net, classes, meta = load_classifier(classifier_path)
    config = dict(meta.get("config", {}))
    crop_size = int(config.get("crop_size", 224))
    image_size = int(config.get("image_size", 256))
    view_settings = ViewSettings(size=crop_size, scales=tuple(view_scales or (image_size,)),
                                 views=views, mapping=view_mapping)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ConfigError(f"unknown test mode(s) {unknown}; choose from {MODES}")
    if whole_images and not is_voc_layout(dataset):
        raise ConfigError("whole-image features need a VOC-layout dataset (multi-label images)")
    model_name = classifier_path.parent.name
    out_dir = classify_dir(Path(work_dir), model_name, dataset, split)
    examples = evaluation_examples(dataset, split, classes, meta)
    record = Record(stage=STAGE, stage_version=STAGE_VERSION, params={
        "classifier": str(classifier_path.resolve()),
        "classifier_sha256": file_sha256(classifier_path),
        "examples": examples.source, "examples_fingerprint": examples_fingerprint(examples),
        "modes": list(modes), "views": view_settings.__dict__, "features": features,
        "whole_images": whole_images, "feature_size": feature_size,
    })
    output = StageOutput(out_dir / REPORT_FILE, record, force=force)
    summary = ClassifySummary(out_dir, model_name, len(examples))
    if output.is_current():
        summary.up_to_date = True
        return summary
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    with output.logging():
        log.info("%d examples of %d classes from %s (%s)", len(examples), len(classes),
                 dataset, split)
        images = load_example_images(examples, short_side=image_size, jobs=jobs)
        labels = examples.labels()
        results, _ = evaluate_modes(net, images, labels, classes, modes=modes,
                                    crop_size=crop_size, image_size=image_size,
                                    views=view_settings,
                                    device=torch_device)
        summary.results = results
        if features is not None:
            size = feature_size or image_size
            if whole_images:
                feature_set, feature_labels = whole_image_examples(dataset, split, classes)
            else:
                feature_set, feature_labels = examples, labels
            feature_images = (images if feature_set is examples and size == image_size
                              else load_example_images(feature_set, short_side=size, jobs=jobs))
            vectors = image_representations(net, feature_images, layer=features,
                                            device=torch_device)
            summary.features_path = out_dir / f"features.{features}.h5"
            write_features(summary.features_path, vectors, feature_set, feature_labels,
                           layer=features, size=size)
        report = {"model": str(classifier_path), "dataset": str(dataset), "split": split,
                  "classes": list(classes), "counts": examples.counts(),
                  "results": [result.to_dict() for result in results],
                  "features": str(summary.features_path) if summary.features_path else None}
        header = (f"# {model_name} on {dataset.name} ({split})\n\n"
                  f"{len(examples)} examples, {len(classes)} classes.\n\n")
        write_text_atomic(out_dir / "report.md", header + results_markdown(results))
        output.commit(lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"),
                      summary={result.mode: result.top1_error for result in results})
    summary.seconds = time.perf_counter() - started
    return summary
