"""Image-level examples: image folders, VOC crops, the held-out split and reading regions."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sppdet.ops.boxes import box_iou
from sppdet.classification.examples import (
    BACKGROUND,
    Example,
    ExampleSet,
    background_boxes,
    crop_pixels,
    holdout_split,
    is_voc_layout,
    load_example_images,
    load_example_set,
    read_image_folder,
    voc_crop_examples,
)
from sppdet.data.images import read_image
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError, DataError
from tests.conftest import make_voc_dataset


def _write_png(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """cats: 2 images (one in a nested folder, one with an upper-case extension), dogs: 1;
    plus a hidden file, a hidden folder, a text file and an image directly in the root."""
    root = tmp_path / "folder"
    _write_png(root / "dogs" / "d1.png", 20, 30, 0)
    _write_png(root / "cats" / "b.png", 24, 16, 1)
    (root / "cats" / "nested").mkdir(parents=True)
    _write_png(root / "cats" / "nested" / "a.PNG", 10, 10, 2)
    _write_png(root / "cats" / ".hidden.png", 10, 10, 3)
    _write_png(root / "cats" / ".cache" / "x.png", 10, 10, 4)
    (root / "cats" / "notes.txt").write_text("not an image")
    _write_png(root / "loose.png", 10, 10, 5)
    return root


@pytest.fixture(scope="module")
def demo_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic VOC dataset (12 trainval images with 1-6 objects each)."""
    root = tmp_path_factory.mktemp("demo") / "data"
    make_demo_data(root, DemoDataConfig(seed=1, n_trainval=12, n_test=0, image_width=120,
                                        image_height=90, min_object_size=10,
                                        max_object_size=60))
    return root


# --------------------------------------------------------------------------- image folders

def test_image_folder_classes_labels_and_files(image_folder):
    examples = read_image_folder(image_folder)
    assert examples.classes == ("cats", "dogs")
    assert [e.image_id for e in examples.examples] == ["cats/b.png", "cats/nested/a.PNG",
                                                       "dogs/d1.png"]
    assert examples.labels().tolist() == [0, 0, 1]
    assert examples.labels().dtype == np.int64
    assert all(e.box is None for e in examples.examples)
    assert examples.examples[1].image_path == image_folder / "cats" / "nested" / "a.PNG"
    assert examples.counts() == {"cats": 2, "dogs": 1}
    assert examples.source == {"kind": "image-folder", "root": str(image_folder),
                               "split": None, "n_examples": 3,
                               "counts": {"cats": 2, "dogs": 1}}
    assert len(examples) == 3


def test_image_folder_given_classes_fix_the_label_order(image_folder):
    examples = read_image_folder(image_folder, classes=["dogs", "birds", "cats"])
    assert examples.classes == ("dogs", "birds", "cats")
    assert [(e.image_id, e.label) for e in examples.examples] == [
        ("dogs/d1.png", 0), ("cats/b.png", 2), ("cats/nested/a.PNG", 2)]
    assert examples.counts() == {"dogs": 1, "birds": 0, "cats": 2}


def test_image_folder_unknown_class_folder(image_folder):
    with pytest.raises(DataError, match=r"dogs.*not among the known classes \(cats, birds\)"):
        read_image_folder(image_folder, classes=["cats", "birds"])


def test_image_folder_without_images(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no image found.*root/<class>/<image>"):
        read_image_folder(tmp_path / "empty")
    _write_png(tmp_path / "flat" / "a.png", 8, 8, 0)
    with pytest.raises(DataError, match="1 image\\(s\\) directly inside"):
        read_image_folder(tmp_path / "flat")
    with pytest.raises(DataError, match="folder not found"):
        read_image_folder(tmp_path / "missing")


def test_image_folder_rejects_bad_class_lists(image_folder):
    with pytest.raises(ConfigError, match="duplicates"):
        read_image_folder(image_folder, classes=["cats", "dogs", "cats"])
    with pytest.raises(ConfigError, match="empty"):
        read_image_folder(image_folder, classes=[])


# --------------------------------------------------------------------------- VOC crops

def test_voc_layout_detection(tiny_voc, image_folder):
    assert is_voc_layout(tiny_voc)
    assert not is_voc_layout(image_folder)


def test_context_enlargement_and_clipping(tmp_path):
    # 64 x 48 images; VOC (11, 11, 30, 40) is xyxy (10, 10, 30, 40): w = 20, h = 30.
    root = make_voc_dataset(tmp_path / "voc", {
        "a": [{"name": "circle", "box": (11, 11, 30, 40)}],
        # xyxy (0, 0, 10, 20) at the top-left corner and (4, 5, 64, 48) at the bottom-right
        "b": [{"name": "circle", "box": (1, 1, 10, 20)},
              {"name": "square", "box": (5, 6, 64, 48)}],
    })
    examples = voc_crop_examples(root, "trainval", context=0.1, background_per_image=0)
    assert examples.classes == ("circle", "square")
    boxes = [(e.image_id, e.label, e.box) for e in examples.examples]
    assert boxes[0][:2] == ("a", 0)
    np.testing.assert_allclose(boxes[0][2], (10 - 2, 10 - 3, 30 + 2, 40 + 3))
    np.testing.assert_allclose(boxes[1][2], (0, 0, 10 + 1, 20 + 2))  # clipped at 0
    # w = 60, h = 43: (4 - 6, 5 - 4.3, 64 + 6, 48 + 4.3) clipped to the 64 x 48 image
    np.testing.assert_allclose(boxes[2][2], (0, 0.7, 64, 48))
    assert boxes[2][:2] == ("b", 1)
    no_context = voc_crop_examples(root, "trainval", context=0.0, background_per_image=0)
    np.testing.assert_allclose(no_context.examples[0].box, (10, 10, 30, 40))


def test_difficult_and_tiny_boxes_are_skipped(tmp_path):
    root = make_voc_dataset(tmp_path / "voc", {
        "a": [{"name": "circle", "box": (11, 11, 30, 40)},
              {"name": "circle", "box": (1, 1, 7, 10), "difficult": 1},   # 7 x 10, difficult
              {"name": "square", "box": (41, 1, 47, 10)}],                # 7 x 10: sqrt 8.37
    })
    default = voc_crop_examples(root, "trainval", background_per_image=0, context=0)
    assert [e.box for e in default.examples] == [(10, 10, 30, 40), (40, 0, 47, 10)]
    strict_size = voc_crop_examples(root, "trainval", background_per_image=0, context=0,
                                    min_size=9.0)
    assert [e.box for e in strict_size.examples] == [(10, 10, 30, 40)]
    with_difficult = voc_crop_examples(root, "trainval", background_per_image=0, context=0,
                                       include_difficult=True)
    assert [e.box for e in with_difficult.examples] == [(10, 10, 30, 40), (0, 0, 7, 10),
                                                        (40, 0, 47, 10)]


def _backgrounds_by_image(examples: ExampleSet) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for e in examples.examples:
        if examples.classes[e.label] == BACKGROUND:
            found.setdefault(e.image_id, []).append(e.box)
    return found


def test_background_boxes_avoid_every_object_and_stay_inside(demo_voc):
    examples = voc_crop_examples(demo_voc, "trainval", background_per_image=5,
                                 background_max_iou=0.3)
    assert examples.classes[-1] == BACKGROUND
    dataset = VOCDataset(demo_voc, "trainval")
    backgrounds = _backgrounds_by_image(examples)
    assert sum(len(v) for v in backgrounds.values()) >= 30  # most images find their 5
    n_difficult = 0
    for annotation in dataset:
        boxes = np.array(backgrounds.get(annotation.image_id, []), dtype=np.float64)
        assert len(boxes) <= 5
        if len(boxes) == 0:
            continue
        n_difficult += int(annotation.difficult.sum())
        # every object, difficult ones included
        assert box_iou(boxes, annotation.boxes).max(initial=0) < 0.3
        assert (boxes[:, :2] >= 0).all()
        assert (boxes[:, 2] <= annotation.width).all() and (boxes[:, 3] <= annotation.height).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        np.testing.assert_array_equal(boxes, np.round(boxes))  # whole pixels
    assert n_difficult > 0  # the check above did cover difficult objects


def test_background_boxes_are_deterministic_per_image(demo_voc):
    ids = (demo_voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    (demo_voc / "ImageSets" / "Main" / "reversed.txt").write_text("\n".join(ids[::-1]) + "\n")
    forward = voc_crop_examples(demo_voc, "trainval", background_per_image=3, seed=7)
    again = voc_crop_examples(demo_voc, "trainval", background_per_image=3, seed=7)
    backward = voc_crop_examples(demo_voc, "reversed", background_per_image=3, seed=7)
    other = voc_crop_examples(demo_voc, "trainval", background_per_image=3, seed=8)
    assert forward == again
    assert _backgrounds_by_image(forward) == _backgrounds_by_image(backward)
    assert _backgrounds_by_image(forward) != _backgrounds_by_image(other)
    assert forward.source["seed"] == 7 and forward.source["split"] == "trainval"
    assert forward.source["background_per_image"] == 3


def test_background_boxes_sizes_and_giving_up():
    objects = np.array([[0, 0, 20, 10], [60, 40, 100, 80]], dtype=np.float64)
    boxes = background_boxes("x", 200, 150, objects, count=50, max_iou=0.3, min_size=8, seed=0)
    assert len(boxes) == 50
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    # sides of the objects range from 10 to 40; rounding to whole pixels moves a side by <= 0.5
    assert sizes.min() >= 10 - 1 and sizes.max() <= 40 + 1
    aspects = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    assert aspects.min() >= 1 - 0.1 and aspects.max() <= 2 + 0.2
    # an object covering the whole image: no box of 48 to 64 pixels can stay below IoU 0.3
    full = np.array([[0, 0, 64, 48]], dtype=np.float64)
    assert background_boxes("y", 64, 48, full, count=2, max_iou=0.3, min_size=8,
                            seed=0).shape == (0, 4)
    # no object: sizes between min_size and the shorter image side
    free = background_boxes("z", 64, 48, np.zeros((0, 4)), count=20, max_iou=0.3, min_size=8,
                            seed=0)
    free_sizes = np.sqrt((free[:, 2] - free[:, 0]) * (free[:, 3] - free[:, 1]))
    assert len(free) == 20 and free_sizes.min() >= 7 and free_sizes.max() <= 48


def test_no_background_class_without_background_boxes(tiny_voc):
    assert voc_crop_examples(tiny_voc, "trainval", background_per_image=0).classes == (
        "circle", "square")
    with_bg = voc_crop_examples(tiny_voc, "trainval", background_per_image=1)
    assert with_bg.classes == ("circle", "square", BACKGROUND)
    # img3 has no object: it still gets a background box
    assert "img3" in _backgrounds_by_image(with_bg)


def test_voc_crop_parameter_errors(tiny_voc):
    with pytest.raises(ConfigError, match="context"):
        voc_crop_examples(tiny_voc, "trainval", context=-0.1)
    with pytest.raises(ConfigError, match="background_max_iou"):
        voc_crop_examples(tiny_voc, "trainval", background_max_iou=0)
    with pytest.raises(ConfigError, match="background_per_image"):
        voc_crop_examples(tiny_voc, "trainval", background_per_image=-1)
    with pytest.raises(ConfigError, match="only be the last"):
        voc_crop_examples(tiny_voc, "trainval", classes=[BACKGROUND, "circle"])
    (tiny_voc / "classes.txt").write_text(f"circle\nsquare\n{BACKGROUND}\n")
    with pytest.raises(DataError, match="reserved"):
        voc_crop_examples(tiny_voc, "trainval")


def test_voc_crops_accept_a_model_class_list_ending_with_background(tiny_voc):
    model_classes = ["square", "circle", BACKGROUND]
    examples = voc_crop_examples(tiny_voc, "trainval", classes=model_classes,
                                 background_per_image=0)
    assert examples.classes == tuple(model_classes)
    assert examples.counts() == {"square": 1, "circle": 1, BACKGROUND: 0}
    assert [e.label for e in examples.examples] == [1, 0]  # img1's circle, img2's square


# --------------------------------------------------------------------------- load_example_set

def test_load_example_set_picks_the_layout(tiny_voc, image_folder, tmp_path):
    assert load_example_set(tiny_voc, "trainval", context=0.2).source["kind"] == "voc-crops"
    assert load_example_set(tiny_voc, "trainval", context=0.2).source["context"] == 0.2
    flat = load_example_set(image_folder, "train")
    assert flat.source["kind"] == "image-folder" and flat.source["split"] is None
    _write_png(tmp_path / "splits" / "train" / "cats" / "a.png", 8, 8, 0)
    _write_png(tmp_path / "splits" / "test" / "dogs" / "b.png", 8, 8, 1)
    train = load_example_set(tmp_path / "splits", "train")
    assert train.classes == ("cats",) and train.source["split"] == "train"
    assert train.source["root"] == str(tmp_path / "splits" / "train")


def test_load_example_set_voc_options_on_a_folder(image_folder):
    same = load_example_set(image_folder, "train", context=0.1, background_per_image=1)
    assert len(same) == 3
    with pytest.raises(ConfigError, match=r"context=0\.3 apply only to VOC"):
        load_example_set(image_folder, "train", context=0.3)
    with pytest.raises(ConfigError, match="unknown option"):
        load_example_set(image_folder, "train", colour=True)


# --------------------------------------------------------------------------- holdout_split

def _fake_set(counts: list[int]) -> ExampleSet:
    classes = tuple(f"c{i}" for i in range(len(counts)))
    examples = tuple(Example(f"{label}-{i}", Path(f"{label}-{i}.png"), label, None)
                     for label, n in enumerate(counts) for i in range(n))
    rng = np.random.default_rng(0)  # interleave the classes
    examples = tuple(examples[i] for i in rng.permutation(len(examples)))
    return ExampleSet(classes, examples, {"kind": "test"})


def test_holdout_split_stratified_counts():
    examples = _fake_set([10, 3, 1, 0, 2])
    train, heldout = holdout_split(examples, 0.2, seed=0)
    # round(2) = 2, round(0.6) = 1, a single example stays in train, round(0.4) = 0 -> 1
    assert heldout.counts() == {"c0": 2, "c1": 1, "c2": 0, "c3": 0, "c4": 1}
    assert train.counts() == {"c0": 8, "c1": 2, "c2": 1, "c3": 0, "c4": 1}
    assert sorted(train.examples + heldout.examples, key=lambda e: e.image_id) == sorted(
        examples.examples, key=lambda e: e.image_id)
    assert heldout.source["counts"] == heldout.counts() and heldout.source["n_examples"] == 4
    assert train.classes == examples.classes
    # both parts keep the original order
    position = {e: i for i, e in enumerate(examples.examples)}
    assert [position[e] for e in train.examples] == sorted(position[e] for e in train.examples)
    # a large fraction still leaves one per class in train
    _, most = holdout_split(examples, 0.95, seed=0)
    assert most.counts() == {"c0": 9, "c1": 2, "c2": 0, "c3": 0, "c4": 1}


def test_holdout_split_determinism_and_edges():
    examples = _fake_set([20, 20])
    assert holdout_split(examples, 0.3, seed=4) == holdout_split(examples, 0.3, seed=4)
    assert holdout_split(examples, 0.3, seed=4)[1] != holdout_split(examples, 0.3, seed=5)[1]
    train, heldout = holdout_split(examples, 0.0)
    assert len(heldout) == 0 and len(train) == 40
    assert heldout.counts() == {"c0": 0, "c1": 0}
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        holdout_split(examples, 1.0)


# --------------------------------------------------------------------------- pixels

def test_crop_pixels_rounds_outward_and_clips():
    assert crop_pixels((2.3, 0.5, 5.7, 3.0), 10, 8) == (2, 0, 6, 3)
    assert crop_pixels((3.0, 3.0, 3.0, 3.0), 10, 8) == (3, 3, 4, 4)  # at least one pixel
    assert crop_pixels((9.5, 7.2, 10.0, 8.0), 10, 8) == (9, 7, 10, 8)
    assert crop_pixels((-2.0, -1.0, 12.0, 9.0), 10, 8) == (0, 0, 10, 8)
    assert crop_pixels((10.0, 8.0, 11.0, 9.0), 10, 8) == (9, 7, 10, 8)  # outside: last pixel
    assert crop_pixels(None, 10, 8) == (0, 0, 10, 8)


def _reference_region(example: Example, short_side: int) -> np.ndarray:
    """Slow reference: read the file for this one example, cut, resize."""
    image = read_image(example.image_path)
    height, width = image.shape[:2]
    if example.box is None:
        region = image
    else:
        x1, y1, x2, y2 = example.box
        x0, y0 = max(0, math.floor(x1)), max(0, math.floor(y1))
        region = image[y0:max(y0 + 1, min(height, math.ceil(y2))),
                       x0:max(x0 + 1, min(width, math.ceil(x2)))]
    h, w = region.shape[:2]
    factor = short_side / min(h, w)
    size = (math.floor(w * factor + 0.5), math.floor(h * factor + 0.5))
    if size == (w, h):
        return region.copy()
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(region), size, interpolation=interpolation)


def test_load_example_images_matches_per_example_reading(demo_voc):
    examples = voc_crop_examples(demo_voc, "trainval", background_per_image=2)
    assert len({e.image_path for e in examples.examples}) < len(examples)  # shared files
    images = load_example_images(examples, short_side=24)
    assert len(images) == len(examples)
    for example, image in zip(examples.examples, images):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) == 24
        x0, y0, x1, y1 = crop_pixels(example.box, *Image.open(example.image_path).size)
        aspect = (x1 - x0) / (y1 - y0)
        assert image.shape[1] / image.shape[0] == pytest.approx(aspect, rel=0.05, abs=0.05)
        np.testing.assert_array_equal(image, _reference_region(example, 24))


def test_load_example_images_enlarges_and_parallel_equals_serial(image_folder):
    examples = read_image_folder(image_folder)
    serial = load_example_images(examples, short_side=40)
    # b.png is 16 x 24 (w x h) -> 40 x 60; a.PNG 10 x 10 -> 40 x 40; d1.png 30 x 20 -> 60 x 40
    assert [im.shape for im in serial] == [(60, 40, 3), (40, 40, 3), (40, 60, 3)]
    for example, image in zip(examples.examples, serial):
        np.testing.assert_array_equal(image, _reference_region(example, 40))
    parallel = load_example_images(examples, short_side=40, jobs=2)
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel))


def test_load_example_images_corrupt_file_is_named(image_folder):
    bad = image_folder / "dogs" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    examples = read_image_folder(image_folder)
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image"):
        load_example_images(examples, short_side=16)
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image"):
        load_example_images(examples, short_side=16, jobs=2)
    with pytest.raises(ConfigError, match="short_side"):
        load_example_images(examples, short_side=0)


def test_load_example_images_empty_set():
    assert load_example_images(ExampleSet(("a",), (), {}), short_side=8) == []
