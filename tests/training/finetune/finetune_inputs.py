"""Inputs of the fine-tuning tests: hand-made windows, and windows + cache of a fake split."""

import numpy as np

from sppdet.data.voc import ImageAnnotation, VOCDataset
from sppdet.features.cache import FeatureCache
from sppdet.io.item_store import ItemReader
from sppdet.training.finetune_windows import build_split_windows

SCALES = (480, 688, 1200)


def hand_windows(n_images=10, fg_per_image=6, bg_per_image=20):
    """Images with one 100x100 object each, proposals at known IoUs."""
    anns, proposals = [], {}
    rng = np.random.default_rng(0)
    for k in range(n_images):
        gt = np.array([[100, 100, 200, 200]], np.float32)
        anns.append(ImageAnnotation(f"im{k}", None, 500, 400, gt, np.array([k % 3]),
                                    np.zeros(1, bool), np.zeros(1, bool)))
        # heights 55..100 of a 100-wide box at the object's top: IoU 0.55..1 (positives);
        # heights 12..45: IoU 0.12..0.45 (negatives); far boxes: unused
        fg_h = rng.uniform(55, 100, fg_per_image - 1)  # the ground truth is the last positive
        bg_h = rng.uniform(12, 45, bg_per_image)
        boxes = [[100, 100, 200, 100 + h] for h in np.concatenate([fg_h, bg_h])]
        boxes += [[300, 300, 350, 350]] * 5
        proposals[f"im{k}"] = np.asarray(boxes, np.float32)
    return anns, build_split_windows(anns, proposals.get, 3)


def split_inputs(fake, split):
    data = VOCDataset(fake.dataset, split)
    cache = FeatureCache(fake.features[split])
    with ItemReader(fake.proposals[split]) as reader:
        proposals = {i: reader.group(i)["boxes"][()] for i in reader.ids()}
    windows = build_split_windows(data, proposals.get, len(data.classes))
    return windows, cache


SMALL = dict(hidden=64, lr=1e-2, images_per_chunk=8, iterations_per_chunk=4, log_every=5,
             val_every=10, val_windows=256)
