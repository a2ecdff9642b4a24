"""Tests of the synthetic demo dataset (sppdet.data.synthetic) and the VOC XML writer."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from sppdet.ops.boxes import is_degenerate, voc_to_xyxy
from sppdet.data import synthetic
from sppdet.data.synthetic import (
    MARKER_FILENAME,
    SHAPE_CLASSES,
    DemoDataConfig,
    is_demo_dataset,
    make_demo_data,
    read_demo_config,
    render_demo_image,
    split_image_ids,
)
from sppdet.data.voc_xml import VocXmlObject, voc_xml_string, write_voc_xml
from sppdet.errors import ConfigError, DataError

SMALL = DemoDataConfig(seed=3, n_trainval=6, n_test=4)
SPLITS = ("train", "val", "trainval", "test")


def parse_annotation(path: Path) -> dict:
    """Read one VOC XML file with ElementTree (independent of the writer)."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        objects.append(
            {
                "name": obj.findtext("name"),
                "pose": obj.findtext("pose"),
                "truncated": int(obj.findtext("truncated")),
                "difficult": int(obj.findtext("difficult")),
                "bbox": tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
            }
        )
    return {
        "folder": root.findtext("folder"),
        "filename": root.findtext("filename"),
        "width": int(size.findtext("width")),
        "height": int(size.findtext("height")),
        "depth": int(size.findtext("depth")),
        "segmented": int(root.findtext("segmented")),
        "objects": objects,
    }


def read_ids(path: Path) -> list[str]:
    return path.read_text().split()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "data"
    summary = make_demo_data(out, SMALL)
    return out, summary


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------------------
# Layout


def test_layout_files_and_splits(small_dataset):
    out, summary = small_dataset
    main = out / "ImageSets" / "Main"
    ids = {split: read_ids(main / f"{split}.txt") for split in SPLITS}
    assert len(ids["trainval"]) == SMALL.n_trainval
    assert len(ids["test"]) == SMALL.n_test
    # train/val partition trainval; trainval/test partition all images.
    assert set(ids["train"]).isdisjoint(ids["val"])
    assert sorted(ids["train"] + ids["val"]) == ids["trainval"]
    assert set(ids["trainval"]).isdisjoint(ids["test"])
    expected_ids = [f"{i:06d}" for i in range(1, SMALL.n_images + 1)]
    assert sorted(ids["trainval"] + ids["test"]) == expected_ids
    assert len(ids["val"]) == round(SMALL.val_fraction * SMALL.n_trainval)
    for image in expected_ids:
        assert (out / "Annotations" / f"{image}.xml").is_file()
        assert (out / "JPEGImages" / f"{image}.jpg").is_file()
    assert sorted(p.stem for p in (out / "Annotations").iterdir()) == expected_ids
    assert sorted(p.stem for p in (out / "JPEGImages").iterdir()) == expected_ids
    assert (out / "classes.txt").read_text().split() == list(SHAPE_CLASSES[: SMALL.n_classes])
    assert (out / "README.txt").is_file()
    assert is_demo_dataset(out)
    assert read_demo_config(out) == SMALL
    assert summary.out_dir == out.absolute()
    assert summary.images == {split: len(ids[split]) for split in SPLITS}


def test_at_least_five_classes_by_default():
    config = DemoDataConfig()
    assert len(config.classes) >= 5
    assert len(set(config.classes)) == len(config.classes)


def test_annotations_are_valid_voc(small_dataset):
    out, _ = small_dataset
    classes = set(SMALL.classes)
    n_objects = 0
    for xml_path in sorted((out / "Annotations").iterdir()):
        ann = parse_annotation(xml_path)
        assert ann["filename"] == f"{xml_path.stem}.jpg"
        assert ann["depth"] == 3 and ann["segmented"] == 0
        image = cv2.imread(str(out / "JPEGImages" / ann["filename"]), cv2.IMREAD_COLOR)
        assert image.shape == (ann["height"], ann["width"], 3)
        assert 1 <= len(ann["objects"]) <= SMALL.max_objects
        for obj in ann["objects"]:
            n_objects += 1
            assert obj["name"] in classes
            assert obj["pose"] == "Unspecified"
            assert obj["truncated"] in (0, 1) and obj["difficult"] in (0, 1)
            xmin, ymin, xmax, ymax = obj["bbox"]
            # 1-based inclusive pixels inside the image.
            assert 1 <= xmin <= xmax <= ann["width"]
            assert 1 <= ymin <= ymax <= ann["height"]
            assert not is_degenerate(voc_to_xyxy(np.array([obj["bbox"]])))[0]
    assert n_objects > 0


def test_per_class_files_match_annotations(small_dataset):
    out, _ = small_dataset
    main = out / "ImageSets" / "Main"
    annotations = {p.stem: parse_annotation(p) for p in (out / "Annotations").iterdir()}
    for split in SPLITS:
        ids = read_ids(main / f"{split}.txt")
        for name in SMALL.classes:
            lines = (main / f"{name}_{split}.txt").read_text().splitlines()
            assert [line.split()[0] for line in lines] == ids
            for line in lines:
                image, label = line.split()
                flags = [o["difficult"] for o in annotations[image]["objects"] if o["name"] == name]
                expected = -1 if not flags else (0 if all(flags) else 1)
                assert int(label) == expected
                # VOC devkit layout: id, then the label right-aligned in two characters.
                assert line == f"{image} {expected:2d}"


def test_summary_counts_match_annotations(small_dataset):
    out, summary = small_dataset
    main = out / "ImageSets" / "Main"
    for split in SPLITS:
        objects = [
            obj
            for image in read_ids(main / f"{split}.txt")
            for obj in parse_annotation(out / "Annotations" / f"{image}.xml")["objects"]
        ]
        for name in SMALL.classes:
            assert summary.objects[split][name] == sum(o["name"] == name for o in objects)
        assert summary.difficult[split] == sum(o["difficult"] for o in objects)
        assert summary.truncated[split] == sum(o["truncated"] for o in objects)
    assert "trainval" in summary.format_table()


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_files_whatever_the_jobs(small_dataset, tmp_path):
    out, _ = small_dataset
    again = tmp_path / "again"
    make_demo_data(again, SMALL, jobs=2)
    first, second = all_files(out), all_files(again)
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_different_seed_gives_different_data(small_dataset, tmp_path):
    out, _ = small_dataset
    other = tmp_path / "other"
    make_demo_data(other, DemoDataConfig(seed=4, n_trainval=6, n_test=4))
    xml_a = {p.name: p.read_bytes() for p in (out / "Annotations").iterdir()}
    xml_b = {p.name: p.read_bytes() for p in (other / "Annotations").iterdir()}
    assert sorted(xml_a) == sorted(xml_b)
    assert sum(xml_a[name] != xml_b[name] for name in xml_a) >= len(xml_a) - 1


def test_an_image_does_not_depend_on_the_dataset_size():
    # One generator per image (seed + index): image 2 is the same in a larger dataset.
    small = render_demo_image(2, SMALL)
    large = render_demo_image(2, DemoDataConfig(seed=3, n_trainval=50, n_test=20))
    assert np.array_equal(small.image_bgr, large.image_bgr)
    assert small.objects == large.objects


# ---------------------------------------------------------------------------------------------
# Boxes, masks and flags


@pytest.fixture(scope="module")
def rendered():
    config = DemoDataConfig(seed=11, n_trainval=30, n_test=10)
    return config, [render_demo_image(i, config, with_masks=True) for i in range(30)]


def test_boxes_are_the_extent_of_the_visible_masks(rendered):
    config, images = rendered
    for demo in images:
        masks = demo.visible_masks
        assert masks.shape == (len(demo.objects), demo.height, demo.width)
        # Occlusion: every pixel belongs to at most one object.
        assert masks.sum(axis=0).max() <= 1
        for obj, mask in zip(demo.objects, masks):
            ys, xs = np.nonzero(mask)
            assert obj.bbox == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
            assert config.min_visible - 1e-9 <= obj.visible_fraction <= 1.0


def test_difficult_and_truncated_flags_occur(rendered):
    _, images = rendered
    objects = [obj for demo in images for obj in demo.objects]
    assert any(obj.difficult for obj in objects)
    assert any(obj.truncated for obj in objects)
    assert any(not obj.difficult for obj in objects)
    assert any(not obj.truncated for obj in objects)
    # Some objects are partly hidden by others.
    occluded = [
        obj for demo in images for obj, out in zip(demo.objects, demo.outside_pixels)
        if out == 0 and obj.visible_fraction < 0.9
    ]  # fmt: skip
    assert occluded


def test_difficult_follows_its_rule(rendered):
    config, images = rendered
    for demo in images:
        for obj in demo.objects:
            width, height = obj.bbox[2] - obj.bbox[0] + 1, obj.bbox[3] - obj.bbox[1] + 1
            expected = (
                math.sqrt(width * height) < config.difficult_min_size
                or obj.visible_fraction < config.difficult_min_visible
            )
            assert obj.difficult == expected


def test_truncated_objects_touch_the_border_and_others_fit():
    # One object per image, so nothing occludes: a truncated object's box reaches the border.
    always = DemoDataConfig(seed=5, n_trainval=12, n_test=0, max_objects=1, truncation_fraction=1.0)
    for index in range(always.n_images):
        demo = render_demo_image(index, always)
        (obj,) = demo.objects
        assert obj.truncated
        xmin, ymin, xmax, ymax = obj.bbox
        assert xmin == 1 or ymin == 1 or xmax == demo.width or ymax == demo.height
        assert obj.visible_fraction < 1.0
    never = DemoDataConfig(seed=5, n_trainval=12, n_test=0, max_objects=1, truncation_fraction=0.0)
    for index in range(never.n_images):
        demo = render_demo_image(index, never)
        (obj,) = demo.objects
        assert not obj.truncated
        assert obj.visible_fraction == 1.0


# ---------------------------------------------------------------------------------------------
# Parameters


def test_parameters_are_respected():
    config = DemoDataConfig(
        seed=1,
        n_trainval=8,
        n_test=2,
        n_classes=5,
        image_width=320,
        image_height=240,
        size_jitter=0.0,
        portrait_fraction=0.0,
        min_objects=2,
        max_objects=2,
        difficult_min_size=0.0,
        difficult_min_visible=0.0,
    )
    names = set()
    for index in range(config.n_images):
        demo = render_demo_image(index, config)
        assert (demo.width, demo.height) == (320, 240)
        assert 1 <= len(demo.objects) <= 2
        assert not any(obj.difficult for obj in demo.objects)
        names.update(obj.name for obj in demo.objects)
    assert names <= set(SHAPE_CLASSES[:5])
    # min_objects is a target that placement can miss, but not often.
    counts = [len(render_demo_image(i, config).objects) for i in range(config.n_images)]
    assert counts.count(2) >= config.n_images // 2


def test_size_jitter_and_portrait():
    config = DemoDataConfig(seed=2, n_trainval=20, n_test=0, size_jitter=0.1, portrait_fraction=0.5)
    sizes = [render_demo_image(i, config).image_bgr.shape[:2] for i in range(config.n_images)]
    for height, width in sizes:
        long_side, short_side = max(height, width), min(height, width)
        assert 450 <= long_side <= 550 and 337 <= short_side <= 413
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)


def test_tiny_threshold_marks_everything_difficult():
    config = DemoDataConfig(seed=1, n_trainval=4, n_test=0, difficult_min_size=4096.0)
    for index in range(config.n_images):
        assert all(obj.difficult for obj in render_demo_image(index, config).objects)


def test_split_edge_cases(tmp_path):
    splits = split_image_ids(DemoDataConfig(n_trainval=1, n_test=0))
    assert splits == {"train": ["000001"], "val": [], "trainval": ["000001"], "test": []}
    splits = split_image_ids(DemoDataConfig(n_trainval=2, n_test=1, val_fraction=0.1))
    assert len(splits["train"]) == 1 and len(splits["val"]) == 1
    summary = make_demo_data(tmp_path / "no-test", DemoDataConfig(n_trainval=2, n_test=0))
    assert summary.images["test"] == 0
    assert (tmp_path / "no-test" / "ImageSets" / "Main" / "test.txt").read_bytes() == b""
    assert (tmp_path / "no-test" / "ImageSets" / "Main" / "disc_test.txt").read_bytes() == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_classes": 0},
        {"n_classes": len(SHAPE_CLASSES) + 1},
        {"n_trainval": 0},
        {"n_test": -1},
        {"min_objects": 3, "max_objects": 2},
        {"min_object_size": 50, "max_object_size": 40},
        {"val_fraction": 1.0},
        {"jpeg_quality": 101},
        {"seed": -1},
        {"image_width": 10},
        {"n_trainval": 2.5},
    ],
)
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        DemoDataConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = DemoDataConfig(seed=9, n_classes=7)
    assert DemoDataConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown"):
        DemoDataConfig.from_dict({"seed": 1, "colour": "red"})


# ---------------------------------------------------------------------------------------------
# Output folder handling


TINY = DemoDataConfig(seed=0, n_trainval=2, n_test=1)


def test_refuses_a_foreign_folder_unless_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an sppdet demo dataset"):
        make_demo_data(out, TINY)
    assert (out / "notes.txt").read_text() == "keep me"
    make_demo_data(out, TINY, overwrite=True)
    assert not (out / "notes.txt").exists()
    assert is_demo_dataset(out)


def test_refuses_a_file(tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(DataError, match="a file"):
        make_demo_data(out, TINY)


def test_replaces_a_previous_demo_dataset_and_accepts_an_empty_folder(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    make_demo_data(out, TINY)
    make_demo_data(out, DemoDataConfig(seed=1, n_trainval=3, n_test=1))
    assert read_demo_config(out).seed == 1
    assert len(list((out / "Annotations").iterdir())) == 4
    # Nothing but the dataset is left in the parent folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_crash_leaves_no_dataset(tmp_path, monkeypatch):
    original = synthetic.render_demo_image

    def failing(index, config, **kwargs):
        if index == 2:
            raise RuntimeError("simulated crash")
        return original(index, config, **kwargs)

    monkeypatch.setattr(synthetic, "render_demo_image", failing)
    out = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_demo_data(out, TINY)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_marker_is_not_a_demo_dataset(small_dataset, tmp_path):
    out, _ = small_dataset
    assert is_demo_dataset(out)
    half = tmp_path / "half"
    half.mkdir()
    (half / "Annotations").mkdir()
    assert not is_demo_dataset(half)
    (half / MARKER_FILENAME).write_text("{not json")
    assert not is_demo_dataset(half)
    with pytest.raises(DataError, match="not a finished"):
        read_demo_config(half)
    with pytest.raises(DataError):
        make_demo_data(half, TINY)


def test_bad_jobs_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="jobs"):
        make_demo_data(tmp_path / "x", TINY, jobs=0)


# ---------------------------------------------------------------------------------------------
# VOC XML writer


def test_write_voc_xml_round_trip(tmp_path):
    objects = [
        VocXmlObject("dog", (48, 240, 195, 371), truncated=True),
        VocXmlObject("person & co", (8.5, 12, 352, 498.25), difficult=True, pose="Left"),
        VocXmlObject("cat", (1, 2, 3, 4), truncated=None, difficult=None, pose=None),
    ]
    path = write_voc_xml(tmp_path / "a.xml", "000001.jpg", 353, 500, objects, folder="VOC2007")
    root = ET.parse(path).getroot()
    assert root.findtext("folder") == "VOC2007"
    assert root.findtext("filename") == "000001.jpg"
    assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["353", "500", "3"]
    assert root.findtext("segmented") == "0"
    first, second, third = root.findall("object")
    assert first.findtext("name") == "dog" and first.findtext("pose") == "Unspecified"
    assert first.findtext("truncated") == "1" and first.findtext("difficult") == "0"
    assert [first.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")] == [
        "48", "240", "195", "371",
    ]  # fmt: skip
    assert second.findtext("name") == "person & co" and second.findtext("pose") == "Left"
    assert second.findtext("difficult") == "1"
    assert float(second.findtext("bndbox/xmin")) == 8.5
    assert float(second.findtext("bndbox/ymax")) == 498.25
    assert third.find("truncated") is None and third.find("difficult") is None
    assert third.find("pose") is None
    # Same inputs, same bytes.
    again = write_voc_xml(tmp_path / "b.xml", "000001.jpg", 353, 500, objects, folder="VOC2007")
    assert path.read_bytes() == again.read_bytes()


def test_voc_xml_without_objects_and_bad_input():
    text = voc_xml_string("x.jpg", 10, 20, [])
    root = ET.fromstring(text)
    assert root.findall("object") == []
    with pytest.raises(DataError, match="xmin"):
        voc_xml_string("x.jpg", 10, 20, [VocXmlObject("a", ("1", 2, 3, 4))])
    with pytest.raises(DataError, match="finite"):
        voc_xml_string("x.jpg", 10, 20, [VocXmlObject("a", (1.0, float("nan"), 3, 4))])
    with pytest.raises(DataError, match="4 coordinates"):
        voc_xml_string("x.jpg", 10, 20, [VocXmlObject("a", (1, 2, 3))])
    with pytest.raises(DataError, match="width"):
        voc_xml_string("x.jpg", 10.5, 20, [])
