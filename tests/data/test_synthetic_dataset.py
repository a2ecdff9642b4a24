"""Tests of writing the synthetic demo dataset (sppdet.data.synthetic.dataset): the VOC layout,
determinism of the files, and the handling of the output folder."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from sppdet.data.synthetic import dataset as synthetic_dataset
from sppdet.data.synthetic.config import SHAPE_CLASSES, DemoDataConfig
from sppdet.data.synthetic.dataset import (
    MARKER_FILENAME,
    is_demo_dataset,
    make_demo_data,
    read_demo_config,
)
from sppdet.errors import ConfigError, DataError
from sppdet.ops.boxes import is_degenerate, voc_to_xyxy

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
    original = synthetic_dataset.render_demo_image

    def failing(index, config, **kwargs):
        if index == 2:
            raise RuntimeError("simulated crash")
        return original(index, config, **kwargs)

    monkeypatch.setattr(synthetic_dataset, "render_demo_image", failing)
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
