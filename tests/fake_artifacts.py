"""Fabricated pipeline inputs for tests: a tiny VOC dataset, proposals and feature artifacts.

:func:`make_fake_pipeline_inputs` writes, under one folder,

- a VOC-layout dataset (small random JPEGs, XML annotations, split files);
- per split a proposals artifact in the layout of the ``propose`` stage (per image ``boxes``
  float32 ``[N, 4]`` and attributes ``width``/``height``; record stage ``"propose"``);
- per split a features artifact in the layout documented in :mod:`sppdet.features.cache`
  (per image ``s<scale>`` float16 ``[C, h, w]``, optionally ``flip/s<scale>``; attributes
  ``width``, ``height``, ``cell_centers``; record stage ``"cache-features"``).

The maps are informative, so a tiny training run can learn something measurable: channel
``c < K`` is high on the cells whose centre falls inside an object of class ``c``, channel
``K`` inside any object, channel ``K + 1`` along object borders, the rest is noise
(:func:`fake_maps`). Proposals are jittered copies of the ground truth
(positives and partial overlaps) plus random boxes, so every band of IoU is populated.
Everything is deterministic by ``seed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record
from sppdet.ops.boxes import xyxy_to_voc
from sppdet.data.voc import VOCDataset
from sppdet.data.voc_xml import VocXmlObject, write_voc_xml
from sppdet.features.cache import FEATURES_STAGE, flip_boxes, map_name
from sppdet.ops.scales import resized_size
from sppdet.stages.common import dataset_params

DEFAULT_SPLITS: dict[str, int] = {"train": 16, "val": 8, "test": 4}


@dataclass
class FakeInputs:
    """Paths of the fabricated inputs.

    Attributes:
        root: the folder everything was written to.
        dataset: the VOC-layout dataset folder.
        classes: class names in label order.
        proposals: split -> proposals artifact.
        features: split -> features artifact.
        backbone: the backbone name written in the features records.
        channels, stride, scales: the maps' geometry.
        image_ids: split -> image ids.
    """

    root: Path
    dataset: Path
    classes: tuple[str, ...]
    proposals: dict[str, Path] = field(default_factory=dict)
    features: dict[str, Path] = field(default_factory=dict)
    backbone: str = "fake"
    channels: int = 8
    stride: int = 8
    scales: tuple[int, ...] = (64, 96)
    image_ids: dict[str, list[str]] = field(default_factory=dict)


def _random_objects(rng: np.random.Generator, width: int, height: int, n_classes: int,
                    max_objects: int) -> list[tuple[np.ndarray, int]]:
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        w = float(rng.integers(width // 4, width // 2 + 1))
        h = float(rng.integers(height // 4, height // 2 + 1))
        x1 = float(rng.integers(0, width - int(w) + 1))
        y1 = float(rng.integers(0, height - int(h) + 1))
        objects.append((np.array([x1, y1, x1 + w, y1 + h], np.float32),
                        int(rng.integers(0, n_classes))))
    return objects


def _proposals(rng: np.random.Generator, gt: np.ndarray, width: int, height: int,
               n_random: int, n_jitter: int) -> np.ndarray:
    """Jittered ground truth and uniform random boxes.

    Half the jittered copies move each side by up to 8 % of the object's size (IoU well above
    0.5), half by 25-60 % (mostly partial overlaps, the negative band), so the two classes of
    windows are separable by the maps' border channel.
    """
    boxes = []
    for box in gt:
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        for k in range(n_jitter):
            if k % 2 == 0:
                shift = rng.uniform(-0.08, 0.08, 4)
            else:
                shift = rng.uniform(0.25, 0.6, 4) * rng.choice([-1.0, 1.0], 4)
            boxes.append(box + shift * size)
    for _ in range(n_random):
        x = np.sort(rng.uniform(0, width, 2))
        y = np.sort(rng.uniform(0, height, 2))
        boxes.append(np.array([x[0], y[0], x[1], y[1]]))
    out = np.asarray(boxes, np.float32).reshape(-1, 4)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    wide = (out[:, 2] - out[:, 0] >= 2) & (out[:, 3] - out[:, 1] >= 2)
    return out[wide]


def cell_center(stride: int) -> float:
    """The fake backbone centres cell 0 on the middle of the first ``stride`` pixels."""
    return stride / 2.0


def fake_maps(gt: np.ndarray, labels: np.ndarray, width: int, height: int, scale: int, *,
              channels: int, stride: int, n_classes: int,
              rng: np.random.Generator) -> np.ndarray:
    """float16 ``[C, h, w]``: class, objectness and boundary channels, plus noise.

    Cell ``(j, i)`` is centred at resized pixel ``(c0 + stride j, c0 + stride i)``; mapped back
    to original pixels, it lights channel ``label`` (< ``n_classes``) when it lies inside an
    object of that class, channel ``n_classes`` inside any object, and channel
    ``n_classes + 1`` within 0.75 cells of an object's border (what tells a well-placed window
    from one inside or around the object). Channels that do not exist are left out.
    """
    in_h, in_w = resized_size(height, width, scale)
    map_h, map_w = -(-in_h // stride), -(-in_w // stride)
    c0 = cell_center(stride)
    ys = (c0 + stride * np.arange(map_h)) * height / in_h  # [h] original pixels
    xs = (c0 + stride * np.arange(map_w)) * width / in_w  # [w]
    margin_y, margin_x = 0.75 * stride * height / in_h, 0.75 * stride * width / in_w
    out = rng.normal(0.0, 0.2, (channels, map_h, map_w)).astype(np.float32)

    def inside(box: np.ndarray, dx: float, dy: float) -> np.ndarray:  # [h, w]
        return (((ys >= box[1] - dy) & (ys < box[3] + dy))[:, None]
                & ((xs >= box[0] - dx) & (xs < box[2] + dx))[None, :])

    for box, label in zip(gt, labels):
        within = inside(box, 0.0, 0.0)
        if label < channels:
            out[label][within] += 2.0
        if n_classes < channels:
            out[n_classes][within] += 1.0
        if n_classes + 1 < channels:
            border = inside(box, margin_x, margin_y) & ~inside(box, -margin_x, -margin_y)
            out[n_classes + 1][border] += 2.0
    return out.astype(np.float16)


def make_fake_pipeline_inputs(
    root: Path, *,
    splits: Mapping[str, int] = DEFAULT_SPLITS,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    image_size: tuple[int, int] = (96, 72),
    channels: int = 8,
    stride: int = 8,
    scales: Sequence[int] = (64, 96),
    flip: bool = True,
    backbone: str = "fake",
    backbone_by_split: Mapping[str, str] | None = None,
    backbone_record: Mapping[str, object] | None = None,
    max_objects: int = 2,
    n_random_proposals: int = 30,
    n_jitter_proposals: int = 12,
    trainval: bool = True,
    empty_proposals: Sequence[str] = (),
    nan_features: Sequence[str] = (),
    absent_classes: Sequence[str] = (),
    seed: int = 0,
) -> FakeInputs:
    """Write a dataset plus proposals and features artifacts for every split under ``root``.

    Args:
        root: folder to write into (e.g. pytest's ``tmp_path``).
        splits: split name -> number of images (ids are unique across splits).
        classes: class names; objects get uniformly random classes.
        image_size: ``(width, height)`` of every image.
        channels: channels ``C`` of the fake maps (at least ``len(classes) + 2`` for the
            class, objectness and border channels to exist).
        stride: total stride of the fake maps.
        scales: cached scales (shorter side in pixels).
        flip: also write mirrored maps.
        backbone: backbone name recorded in every features artifact.
        backbone_by_split: per-split override of ``backbone`` (to test refusals).
        backbone_record: more keys of the ``backbone`` entry of every features record (e.g.
            ``weights``, ``weights_path``, ``weights_sha256`` of a real weights file).
        max_objects: objects per image are drawn from 1..max_objects.
        n_random_proposals, n_jitter_proposals: random boxes per image, jittered copies per
            ground-truth box.
        trainval: also write a ``trainval`` split (train + val ids) with its artifacts, when
            both ``train`` and ``val`` are in ``splits``.
        empty_proposals: image ids given zero proposals.
        nan_features: image ids whose first map holds a NaN.
        absent_classes: classes that no object gets (for "class with no positives" cases).
        seed: makes everything deterministic.

    Returns:
        The paths (:class:`FakeInputs`). Image ids are ``<split>_<k>``.
    """
    root = Path(root)
    dataset = root / "dataset"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dataset / sub).mkdir(parents=True, exist_ok=True)
    classes = tuple(classes)
    present = [i for i, name in enumerate(classes) if name not in set(absent_classes)]
    width, height = image_size
    rng = np.random.default_rng(seed)
    ids: dict[str, list[str]] = {}
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, count in splits.items():
        ids[split] = [f"{split}_{k:03d}" for k in range(count)]
        for image_id in ids[split]:
            objects = _random_objects(rng, width, height, len(present), max_objects)
            boxes = np.stack([b for b, _ in objects])
            labels = np.array([present[c] for _, c in objects], np.int64)
            truth[image_id] = (boxes, labels)
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(dataset / "JPEGImages" / f"{image_id}.jpg")
            write_voc_xml(dataset / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg",
                          width, height, [VocXmlObject(classes[label], tuple(
                              int(round(v)) for v in xyxy_to_voc(box[None])[0]))
                              for box, label in zip(boxes, labels)])
        (dataset / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids[split]) + "\n")
    if trainval and "train" in ids and "val" in ids and "trainval" not in ids:
        ids["trainval"] = ids["train"] + ids["val"]
        (dataset / "ImageSets" / "Main" / "trainval.txt").write_text(
            "\n".join(ids["trainval"]) + "\n")
    (dataset / "classes.txt").write_text("\n".join(classes) + "\n")

    inputs = FakeInputs(root=root, dataset=dataset, classes=classes, backbone=backbone,
                        channels=channels, stride=stride, scales=tuple(int(s) for s in scales),
                        image_ids=ids)
    for split, split_ids in ids.items():
        data = VOCDataset(dataset, split, classes)
        identity = dataset_params(data)
        # the XML round trip rounds boxes to whole pixels: build maps from what readers see
        read_truth = {a.image_id: (a.boxes, a.labels) for a in data}
        proposals_path = root / "proposals" / f"{split}.fake.h5"
        record = Record("propose", {"method": "fake", "method_params": {"seed": seed},
                                     "data": identity})
        with ItemStore(proposals_path, record) as store:
            for image_id in split_ids:
                prng = np.random.default_rng([seed, 1, _stable(image_id)])
                boxes = np.zeros((0, 4), np.float32) if image_id in empty_proposals else \
                    _proposals(prng, read_truth[image_id][0], width, height,
                               n_random_proposals, n_jitter_proposals)
                store.write(image_id, {"boxes": boxes}, {"width": width, "height": height})
            store.finalize(split_ids)
        inputs.proposals[split] = proposals_path

        name = (backbone_by_split or {}).get(split, backbone)
        features_path = root / "features" / name / f"{split}.h5"
        record = Record(FEATURES_STAGE, {
            "backbone": {"name": name, "stride": stride, "out_channels": channels,
                         "weights": "fake", **(backbone_record or {})},
            "stride": stride, "channels": channels, "scales": list(inputs.scales),
            "flip": flip, "dtype": "float16", "data": identity})
        with ItemStore(features_path, record) as store:
            for image_id in split_ids:
                frng = np.random.default_rng([seed, 2, _stable(image_id)])
                gt, labels = read_truth[image_id]
                arrays: dict[str, np.ndarray] = {}
                for flipped in ((False, True) if flip else (False,)):
                    boxes = flip_boxes(gt, width) if flipped else gt
                    for scale in inputs.scales:
                        arrays[map_name(scale, flipped)] = fake_maps(
                            boxes, labels, width, height, scale, channels=channels,
                            stride=stride, n_classes=len(classes), rng=frng)
                if image_id in nan_features:
                    arrays[map_name(inputs.scales[0])][0, 0, 0] = np.nan
                centers = {str(s): [cell_center(stride), cell_center(stride)]
                           for s in inputs.scales}
                store.write(image_id, arrays, {"width": width, "height": height,
                                               "cell_centers": json.dumps(centers)})
            store.finalize(split_ids)
        inputs.features[split] = features_path
    return inputs


def _stable(image_id: str) -> int:
    """A seed from an id that does not change between runs (``hash`` is salted)."""
    return int(hashlib.sha1(image_id.encode()).hexdigest()[:15], 16)
