"""VOC reading: the 1-based -> 0-based edge, real fixtures, and every bad-input case."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from sppdet.data.voc import VOC_CLASSES, VOCDataset, discover_classes
from sppdet.errors import DataError
from tests.conftest import SHARED_DATA, make_voc_dataset, write_voc_xml

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                  reason=f"real data folder {SHARED_DATA} is not beside the checkout")


def kinds(dataset):
    return sorted(p.kind for p in dataset.problems)


def test_box_conversion_at_xml_edge(tiny_voc):
    data = VOCDataset(tiny_voc, "trainval")
    assert data.classes == ("circle", "square")
    img1 = data["img1"]
    # <xmin>1</xmin>..<xmax>10</xmax> -> [0, 10): 10 pixels wide
    np.testing.assert_array_equal(img1.boxes, [[0, 0, 10, 20]])
    img2 = data["img2"]
    np.testing.assert_array_equal(img2.boxes, [[4, 5, 64, 48], [19, 19, 30, 30]])
    np.testing.assert_array_equal(img2.labels, [1, 0])
    np.testing.assert_array_equal(img2.difficult, [False, True])
    np.testing.assert_array_equal(img2.truncated, [True, False])
    assert len(data["img3"]) == 0 and data["img3"].boxes.shape == (0, 4)
    assert data.problems == []


def test_float_coordinate_is_kept_and_reported(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (10, 20.7, 20, 30.5)}]})
    data = VOCDataset(root, "trainval")
    np.testing.assert_allclose(data["a"].boxes, [[9, 19.7, 20, 30.5]], rtol=1e-6)
    assert data["a"].boxes.dtype == np.float32
    assert kinds(data) == ["float-coordinate"]
    assert "a.xml" in str(data.problems[0])


def test_inverted_box_dropped_single_pixel_box_kept(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (20, 5, 20, 5)},
                                                   {"name": "cat", "box": (30, 5, 25, 9)},
                                                   {"name": "cat", "box": (1, 1, 5, 5)},
                                                   {"name": "cat", "box": (7, 9, 12, 9)}]})
    data = VOCDataset(root, "trainval")
    # xmin == xmax, ymin == ymax: one pixel under the devkit's +1 rule, valid ground truth
    np.testing.assert_array_equal(data["a"].boxes_voc, [[20, 5, 20, 5], [1, 1, 5, 5],
                                                       [7, 9, 12, 9]])
    np.testing.assert_array_equal(data["a"].boxes, [[19, 4, 20, 5], [0, 0, 5, 5],
                                                    [6, 8, 12, 9]])
    assert kinds(data) == ["box-degenerate", "box-one-pixel", "box-one-pixel"]
    inverted = next(p for p in data.problems if p.kind == "box-degenerate")
    assert "a.xml" in inverted.path and "(30.0, 5.0, 25.0, 9.0)" in inverted.message
    assert "inverted" in inverted.message
    # the notice is informational: strict mode fails on the inverted box only
    with pytest.raises(DataError, match="1 problem.*inverted"):
        VOCDataset(root, "trainval", strict=True)


def test_single_pixel_box_pools_one_feature_cell():
    # Training keeps the box too: its window maps to exactly one conv5 cell (never to none),
    # so its features are those of the cell under that pixel.
    from sppdet.ops.window_mapping import map_windows_to_cells

    cells = map_windows_to_cells(np.array([[503.0, 336.0, 504.0, 337.0]]), 16, (7.5, 7.5),
                                 (30, 40))
    x0, y0, x1, y1 = cells[0]
    assert (x0, y0) == (x1, y1) and 0 <= x0 < 40 and 0 <= y0 < 30


def test_box_outside_image_is_clipped(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (-4, 1, 80, 48)}]},
                            size=(64, 48))
    data = VOCDataset(root, "trainval")
    np.testing.assert_array_equal(data["a"].boxes, [[0, 0, 64, 48]])
    np.testing.assert_array_equal(data["a"].boxes_voc, [[-4, 1, 80, 48]])  # as written
    assert kinds(data) == ["box-clipped"]
    # clipping is not severe: strict mode accepts it
    VOCDataset(root, "trainval", strict=True)
    # as the devkit reads it: kept as written
    unclipped = VOCDataset(root, "trainval", clip_boxes=False)
    np.testing.assert_array_equal(unclipped["a"].boxes, [[-5, 0, 80, 48]])
    assert kinds(unclipped) == ["box-outside"]


def test_images_optional_for_evaluation(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (1, 1, 5, 5)}],
                                             "b": []}, size=(40, 30))
    shutil.rmtree(root / "JPEGImages")
    with pytest.raises(DataError, match="no usable image"):
        VOCDataset(root, "trainval")  # the other stages need the pixels
    data = VOCDataset(root, "trainval", require_images=False)
    assert data.image_ids == ["a", "b"] and data.problems == []
    assert data["a"].image_path is None and not data.images_present
    assert (data["a"].width, data["a"].height) == (40, 30)  # from the XML
    np.testing.assert_array_equal(data["a"].boxes_voc, [[1, 1, 5, 5]])
    with pytest.raises(DataError, match="no image file"):
        data.load_image("a")
    # no <size> and no image: kept, size unknown, boxes not clipped
    write_voc_xml(root / "Annotations" / "b.xml", "b.jpg", None, None,
                  [{"name": "cat", "box": (1, 1, 500, 5)}])
    data = VOCDataset(root, "trainval", require_images=False)
    assert data["b"].width is None and kinds(data) == ["size-unknown"]
    np.testing.assert_array_equal(data["b"].boxes, [[0, 0, 500, 5]])


def test_box_entirely_outside_is_dropped(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (100, 1, 120, 10)}]},
                            size=(64, 48))
    data = VOCDataset(root, "trainval")
    assert len(data["a"]) == 0 and kinds(data) == ["box-degenerate"]


def test_unknown_class(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (1, 1, 5, 5)},
                                                   {"name": "zebra", "box": (1, 1, 5, 5)}]})
    data = VOCDataset(root, "trainval", classes=["cat"])
    assert len(data["a"]) == 1
    assert kinds(data) == ["class-unknown"]
    assert "zebra" in str(data.problems[0])


@pytest.mark.parametrize("text", ["<annotation><object><name>cat</name>",  # truncated
                                  "not xml at all", ""])
def test_malformed_xml_leaves_image_out(tmp_path, text):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (1, 1, 5, 5)}],
                                             "b": [{"name": "cat", "box": (1, 1, 5, 5)}]})
    (root / "Annotations" / "b.xml").write_text(text)
    data = VOCDataset(root, "trainval")
    assert data.image_ids == ["a"]
    assert kinds(data) == ["xml-malformed"]
    assert "b.xml" in str(data.problems[0])
    with pytest.raises(DataError, match="b.xml"):
        VOCDataset(root, "trainval", strict=True)


def test_missing_image_and_missing_xml(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [], "b": [], "c": []})
    (root / "JPEGImages" / "b.jpg").unlink()
    (root / "Annotations" / "c.xml").unlink()
    data = VOCDataset(root, "trainval", classes=["cat"])
    assert data.image_ids == ["a"]
    assert kinds(data) == ["image-missing", "xml-missing"]


def test_missing_bndbox_and_non_numeric(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "cat", "box": (1, 1, 5, 5)},
                                                   {"name": "cat", "box": ("x", 1, 5, 5)}]})
    data = VOCDataset(root, "trainval")
    assert len(data["a"]) == 1 and kinds(data) == ["box-missing"]


def test_size_missing_is_read_from_image(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": []}, size=(40, 30))
    write_voc_xml(root / "Annotations" / "a.xml", "a.jpg", None, None,
                  [{"name": "cat", "box": (1, 1, 5, 5)}])
    data = VOCDataset(root, "trainval")
    assert (data["a"].width, data["a"].height) == (40, 30)
    assert kinds(data) == ["size-from-image"]


def test_empty_split_and_missing_split(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": []})
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n\n")
    with pytest.raises(DataError, match="lists no image"):
        VOCDataset(root, "test", classes=["cat"])
    with pytest.raises(DataError, match="split file not found.*trainval"):
        VOCDataset(root, "val", classes=["cat"])


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        VOCDataset(tmp_path / "nope", "trainval")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="Annotations"):
        VOCDataset(tmp_path / "empty", "trainval")


def test_duplicate_id_in_split(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": []})
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\na\n")
    data = VOCDataset(root, "trainval", classes=["cat"])
    assert data.image_ids == ["a"] and kinds(data) == ["duplicate-id"]


def test_class_discovery_rules(tmp_path):
    root = make_voc_dataset(tmp_path / "d", {"a": [{"name": "dog", "box": (1, 1, 5, 5)},
                                                   {"name": "cat", "box": (1, 1, 5, 5)}]})
    assert discover_classes(root) == VOC_CLASSES  # all names are VOC classes
    root2 = make_voc_dataset(tmp_path / "e", {"a": [{"name": "RBC", "box": (1, 1, 5, 5)},
                                                    {"name": "Platelets", "box": (1, 1, 5, 5)}]})
    assert discover_classes(root2) == ("Platelets", "RBC")
    (root2 / "classes.txt").write_text("RBC\nPlatelets\nWBC\n")
    assert discover_classes(root2) == ("RBC", "Platelets", "WBC")


@needs_shared
def test_real_bccd_trainval():
    data = VOCDataset(SHARED_DATA / "bccd", "trainval")
    assert len(data) == 292
    assert data.classes == ("Platelets", "RBC", "WBC")
    # two single-pixel RBC boxes: reported, and kept as ground truth (area 1 for the devkit)
    one_pixel = [p for p in data.problems if p.kind == "box-one-pixel"]
    assert sorted(Path(p.path).name for p in one_pixel) == ["BloodImage_00338.xml",
                                                            "BloodImage_00343.xml"]
    assert not data.severe_problems()
    kept = data["BloodImage_00338"].boxes_voc
    assert [504, 337, 504, 337] in kept.tolist()


@needs_shared
def test_real_voc2007_fixtures():
    data = VOCDataset(SHARED_DATA / "voc-fixtures" / "VOC2007", "test")
    assert len(data) == 11 and data.classes == VOC_CLASSES
    assert sum(int(a.difficult.sum()) for a in data) == 5
    first = data["000001"]
    # 000001.xml: dog 48,240,195,371 and person 8,12,352,498 (1-based)
    np.testing.assert_array_equal(first.boxes, [[47, 239, 195, 371], [7, 11, 352, 498]])
    assert [data.classes[i] for i in first.labels] == ["dog", "person"]
    assert data.problems == []
    image = data.load_image("000001")
    assert image.shape == (first.height, first.width, 3) and image.dtype == np.uint8


@needs_shared
def test_real_voc2012_fixtures():
    data = VOCDataset(SHARED_DATA / "voc-fixtures" / "VOC2012", "test")
    assert len(data) == 7
    assert [p.kind for p in data.problems] == ["float-coordinate"]
    assert "2011_003353.xml" in data.problems[0].path


def test_split_file_that_is_not_utf8_names_the_file_and_line(tiny_voc):
    """Case 7 (split file): a Latin-1 id was an internal UnicodeDecodeError."""
    split = tiny_voc / "ImageSets" / "Main" / "trainval.txt"
    split.write_bytes(b"img1\nimg2\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"trainval\.txt: line 3 is not UTF-8 text \(bytes "
                                        r"b'\\xe9"):
        VOCDataset(tiny_voc, "trainval")


def test_split_file_that_is_not_utf8_is_a_clear_cli_error(tiny_voc, tmp_path):
    from click.testing import CliRunner

    from sppdet.cli import cli

    (tiny_voc / "ImageSets" / "Main" / "trainval.txt").write_bytes(b"img1\ncaf\xe9\n")
    for command in (["propose"], ["cache-features", "--backbone", "zf5"], ["inspect-data"]):
        result = CliRunner().invoke(cli, ["-w", str(tmp_path / "w"), *command, str(tiny_voc)])
        assert result.exit_code == 1, result.output
        assert "trainval.txt: line 2 is not UTF-8" in result.output
        assert "internal error" not in result.output


def test_dataset_folder_whose_name_is_not_utf8_is_supported(tiny_voc, tmp_path):
    """Case 7 (dataset folder): its name is kept as bytes, the work dir tag shows U+FFFD."""
    import os
    import shutil

    from click.testing import CliRunner

    from sppdet.cli import cli

    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    shutil.copytree(tiny_voc, odd)
    work = tmp_path / "work"
    result = CliRunner().invoke(cli, ["-w", str(work), "propose", odd, "--max-boxes", "20",
                                      "--max-size", "64"])
    assert result.exit_code == 0, result.output
    made = list((work / "proposals").iterdir())
    assert len(made) == 1 and made[0].name.startswith("caf\ufffd-")
    assert (made[0] / "trainval.ss-fast.h5").is_file()
