"""Fabricated inputs of the train-svm / train-bbox-reg stages: proposals, conv5 features, fc.

The conv5 maps are informative, so that what the stages learn is measurable:

- channel ``k < K``: 3 on cells whose centre lies inside a ground-truth box of class ``k``
  (what the SVMs can separate);
- channels ``K .. K+3``: bumps on the left, top, right and bottom edges of every box (where
  a box's edges are, which the box regressors can learn);
- every channel: uniform noise in [0, 0.3).

Layouts: the proposals artifact as ``stages/propose.py`` writes it, the features artifact as
documented in ``sppdet/feature_cache.py``, the fc checkpoint as ``FcHead.save`` writes it with a
``finetune`` record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record, write_artifact
from sppdet.ops.boxes import box_iou
from sppdet.data.voc import VOCDataset
from sppdet.features.fc_head import FcHead
from sppdet.ops.scales import resized_size

from tests.conftest import make_voc_dataset

STRIDE = 16
CELL_CENTER = 7.5
SCALES = (240, 480)
IMAGE_SIZE = (160, 120)  # width, height
EDGE_SIGMA = 6.0  # pixels of the original image


@dataclass
class FakeInputs:
    dataset: Path
    proposals: Path
    features: Path
    classes: tuple[str, ...]
    channels: int


def _objects(rng: np.random.Generator, names: list[str]) -> list[dict]:
    """One or two non-overlapping objects (VOC 1-based boxes) in a 160 x 120 image."""
    width, height = IMAGE_SIZE
    objects = []
    halves = [(2, width // 2 - 2), (width // 2 + 2, width - 2)]  # boxes never overlap
    for (left, right), name in zip(halves, names):
        w = int(rng.integers(36, 56))
        h = int(rng.integers(36, 70))
        x = int(rng.integers(left, right - w))
        y = int(rng.integers(2, height - h - 2))
        objects.append({"name": name, "box": (x + 1, y + 1, x + w, y + h)})
    return objects


def make_dataset(root: Path, n_images: int = 12, *, classes=("circle", "square", "star"),
                 present=("circle", "square"), seed: int = 0, difficult_every: int = 5) -> Path:
    """A VOC-layout dataset whose classes.txt lists ``classes``; objects only of ``present``."""
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n_images):
        count = 1 + (i % 2)
        names = [present[(i + j) % len(present)] for j in range(count)]
        objects = _objects(rng, names)
        if difficult_every and i % difficult_every == difficult_every - 1:
            objects[0]["difficult"] = 1
        images[f"img{i:03d}"] = objects
    path = make_voc_dataset(root, images, split="trainval", size=IMAGE_SIZE)
    (path / "classes.txt").write_text("\n".join(classes) + "\n")
    return path


def _proposals_for(rng: np.random.Generator, gt: np.ndarray, n_random: int,
                   n_jitter: int) -> np.ndarray:
    """Random boxes plus jittered copies of the ground truth (0-based xyxy, in the image)."""
    width, height = IMAGE_SIZE
    xy = rng.uniform(0, [width - 12, height - 12], size=(n_random, 2))
    wh = rng.uniform(10, 70, size=(n_random, 2))
    boxes = [np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1)]
    for box in gt:
        w, h = box[2] - box[0], box[3] - box[1]
        shift = rng.uniform(-0.25, 0.25, size=(n_jitter, 2)) * [w, h]
        scale = np.exp(rng.uniform(-0.2, 0.2, size=(n_jitter, 2)))
        cx, cy = (box[0] + box[2]) / 2 + shift[:, 0], (box[1] + box[3]) / 2 + shift[:, 1]
        nw, nh = w * scale[:, 0], h * scale[:, 1]
        jittered = np.stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2], axis=1)
        boxes.append(jittered)
    out = np.concatenate(boxes)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    keep = (out[:, 2] - out[:, 0] > 2) & (out[:, 3] - out[:, 1] > 2)
    return out[keep].astype(np.float32)


def write_proposals(path: Path, data: VOCDataset, *, seed: int = 1, n_random: int = 40,
                    n_jitter: int = 12, empty: tuple[str, ...] = ()) -> Path:
    """A proposals artifact (stage ``propose``); images in ``empty`` get no proposals."""
    rng = np.random.default_rng(seed)
    record = Record("propose", {"method": "fake", "seed": seed, "split": data.split})
    with ItemStore(path, record) as store:
        for ann in data:
            boxes = np.zeros((0, 4), np.float32) if ann.image_id in empty else \
                _proposals_for(rng, ann.boxes, n_random, n_jitter)
            store.write(ann.image_id, {"boxes": boxes},
                        {"width": ann.width, "height": ann.height})
        store.finalize(data.image_ids)
    return path


def conv_maps(ann, num_classes: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Informative maps ``scale -> [C, h, w]`` float32 of one image (module docstring)."""
    channels = num_classes + 4
    maps = {}
    for scale in SCALES:
        h_in, w_in = resized_size(ann.height, ann.width, scale)
        fy, fx = h_in / ann.height, w_in / ann.width
        hm, wm = -(-h_in // STRIDE), -(-w_in // STRIDE)
        # centre of cell (j, i) in original-image pixels
        cy = (STRIDE * np.arange(hm) + CELL_CENTER) / fy  # [hm]
        cx = (STRIDE * np.arange(wm) + CELL_CENTER) / fx  # [wm]
        fmap = rng.uniform(0, 0.3, size=(channels, hm, wm))
        for box, label in zip(ann.boxes, ann.labels):
            x1, y1, x2, y2 = box
            inside_y = (cy >= y1) & (cy < y2)
            inside_x = (cx >= x1) & (cx < x2)
            fmap[label] += 3.0 * (inside_y[:, None] & inside_x[None, :])
            bump = lambda c, e: np.exp(-0.5 * ((c - e) / EDGE_SIGMA) ** 2)  # noqa: E731
            fmap[num_classes + 0] += 2.0 * bump(cx, x1)[None, :] * inside_y[:, None]
            fmap[num_classes + 1] += 2.0 * bump(cy, y1)[:, None] * inside_x[None, :]
            fmap[num_classes + 2] += 2.0 * bump(cx, x2)[None, :] * inside_y[:, None]
            fmap[num_classes + 3] += 2.0 * bump(cy, y2)[:, None] * inside_x[None, :]
        maps[scale] = fmap.astype(np.float32)
    return maps


def write_features(path: Path, data: VOCDataset, *, backbone: str = "fakenet", seed: int = 2,
                   nan_image: str | None = None) -> Path:
    """A features artifact (stage ``cache-features``) with :func:`conv_maps`; ``nan_image``
    gets a NaN in its first map."""
    rng = np.random.default_rng(seed)
    channels = len(data.classes) + 4
    record = Record("cache-features", {
        "backbone": {"name": backbone, "weights": "fake"}, "stride": STRIDE,
        "channels": channels, "scales": list(SCALES), "flip": False, "dtype": "float16"})
    with ItemStore(path, record) as store:
        for ann in data:
            maps = conv_maps(ann, len(data.classes), rng)
            if ann.image_id == nan_image:
                maps[SCALES[0]][0, 0, 0] = np.nan
            store.write(ann.image_id, {f"s{s}": m.astype(np.float16) for s, m in maps.items()},
                        {"width": ann.width, "height": ann.height,
                         "cell_centers": {str(s): [CELL_CENTER, CELL_CENTER] for s in SCALES}})
        store.finalize(data.image_ids)
    return path


def write_fc(path: Path, classes, channels: int, *, backbone: str = "fakenet",
             hidden: int = 64, seed: int = 0, nan: bool = False,
             record_classes=None) -> Path:
    """An fc checkpoint with a ``finetune`` record (random fc layers, as FcHead initialises)."""
    head = FcHead(channels * 50, len(classes), hidden=hidden, seed=seed)
    if nan:
        with __import__("torch").no_grad():
            head.fc6.weight[0, 0] = float("nan")
    # the meta the finetune stage records (sppdet.training.finetune.compatibility.model_meta)
    params = {"backbone": {"name": backbone, "weights": "fake"}, "stride": STRIDE,
              "channels": channels, "scales": list(SCALES), "levels": [6, 3, 2, 1],
              "classes": list(record_classes if record_classes is not None else classes),
              "in_dim": channels * 50, "config": {"hidden": hidden, "seed": seed}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with write_artifact(path, Record("finetune", params)) as tmp:
        head.save(tmp, **params)
    return path


def make_inputs(root: Path, *, n_images: int = 12, empty: tuple[str, ...] = (),
                nan_image: str | None = None) -> FakeInputs:
    dataset = make_dataset(root / "data", n_images)
    data = VOCDataset(dataset, "trainval")
    proposals = write_proposals(root / "in" / "trainval.proposals.h5", data, empty=empty)
    features = write_features(root / "in" / "trainval.features.h5", data, nan_image=nan_image)
    return FakeInputs(dataset, proposals, features, data.classes, len(data.classes) + 4)


def negatives_of(boxes: np.ndarray, gt: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``boxes`` with IoU < 0.3 with every ground-truth box of class ``k``."""
    mine = gt[labels == k]
    if mine.shape[0] == 0 or boxes.shape[0] == 0:
        return np.ones(boxes.shape[0], dtype=bool)
    return box_iou(boxes, mine).max(axis=1) < 0.3
