"""comp4 result files: format, exact round trip, validation of files from other tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError, DataError
from sppdet.evaluation.comp4 import (
    comp4_filename,
    read_comp4_dir,
    read_comp4_file,
    write_comp4_file,
    write_comp4_files,
)
from sppdet.evaluation.voc_ap import ClassDetections

CLASSES = ["cat", "dog", "person"]


def test_line_format_is_one_based(tmp_path: Path):
    images = [ImageDetections("000005", [[0.0, 9.0, 100.0, 50.5]], [0.25], [1])]
    write_comp4_files(tmp_path, "test", CLASSES, images)
    assert (tmp_path / "comp4_det_test_dog.txt").read_text() == "000005 0.25 1 10 100 50.5\n"
    assert (tmp_path / "comp4_det_test_cat.txt").read_text() == ""
    assert comp4_filename("val", "cat") == "comp4_det_val_cat.txt"


def test_round_trip_is_exact(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = []
    for i in range(20):
        n = int(rng.integers(0, 15))
        x1y1 = rng.uniform(0, 500, (n, 2))
        boxes = np.concatenate([x1y1, x1y1 + rng.uniform(0.01, 300, (n, 2))], axis=1)
        scores = np.concatenate([rng.normal(0, 3, n - n // 3), np.full(n // 3, 1e-7)])
        images.append(ImageDetections(f"img_{i:03d}", boxes, scores, rng.integers(0, 3, n)))
    write_comp4_files(tmp_path, "test", CLASSES, images)
    read = read_comp4_dir(tmp_path, "test", CLASSES)
    for c, name in enumerate(CLASSES):
        expected_ids = [d.image_id for d in images for lab in d.labels if lab == c]
        got = read.detections[name]
        assert list(got.image_ids) == expected_ids
        expected_scores = np.concatenate([d.scores[d.labels == c] for d in images])
        expected_boxes = np.concatenate([d.boxes[d.labels == c] for d in images])
        # float32 in, float32 back, bit for bit.
        np.testing.assert_array_equal(got.scores.astype(np.float32), expected_scores)
        np.testing.assert_array_equal(got.boxes.astype(np.float32), expected_boxes)
        # Scores read as float64 keep the float32 order and ties.
        np.testing.assert_array_equal(
            np.argsort(-got.scores, kind="stable"), np.argsort(-expected_scores, kind="stable")
        )
    text = (tmp_path / "comp4_det_test_cat.txt").read_text()
    assert "e" not in text  # positional notation, as textscan '%f' expects in every tool


def test_class_detections_round_trip_float64(tmp_path: Path):
    d = ClassDetections(
        np.array(["a", "b", "c"], dtype=object),
        np.array([0.1, -2.000000000000001, 1e-20]),
        # -1 + 2**-30 becomes 2**-30 after the +1: repr would write it in exponent notation.
        np.array([[0.1, 0.2, 10.3, 20.7], [5.0, 6.0, 7.0, 8.0], [-1 + 2.0**-30, 0, 3e16, 1]]),
    )
    path = write_comp4_file(tmp_path / "x.txt", d)
    text = path.read_text()
    assert "e" not in text.replace("\n", "")
    assert text.splitlines()[2] == (
        "c 0.00000000000000000001 0.0000000009313225746154785 1 30000000000000000 1"
    )
    back = read_comp4_file(path)
    np.testing.assert_array_equal(back.scores, d.scores)
    # The devkit's coordinates (x1 + 1 in float64) come back bit for bit; the overlaps are
    # computed on them, so the file and the detections in memory evaluate the same.
    np.testing.assert_array_equal(back.boxes_voc, d.boxes_voc)
    np.testing.assert_array_equal(back.boxes_voc, d.boxes + [1, 1, 0, 0])
    np.testing.assert_array_equal(back.boxes, back.boxes_voc - [1, 1, 0, 0])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("000001 0.5 1 2 3", "expected 6 fields"),
        ("000001 0.5 1 2 3 4 5", "expected 6 fields"),
        ("000001 high 1 2 3 4", "must be numbers"),
        ("000001 0.5 1 2 nan 4", "finite"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / comp4_filename("test", "cat")
    path.write_text("000001 0.9 1 1 10 10\n\n" + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        read_comp4_file(path)
    assert f"{path}:3:" in str(info.value)


def test_other_tools_files_blank_lines_and_tabs(tmp_path: Path):
    path = tmp_path / comp4_filename("test", "cat")
    path.write_text("000001\t0.900000 1.000 1.000 10.000 10.000\r\n\n  000002 -1.5 3 4 5 6  \n")
    d = read_comp4_file(path)
    assert list(d.image_ids) == ["000001", "000002"]
    np.testing.assert_array_equal(d.scores, [0.9, -1.5])
    np.testing.assert_array_equal(d.boxes, [[0, 0, 10, 10], [2, 3, 5, 6]])


def test_unknown_image_ids_are_reported(tmp_path: Path):
    for name in CLASSES:
        (tmp_path / comp4_filename("test", name)).write_text("")
    (tmp_path / comp4_filename("test", "dog")).write_text(
        "000001 0.9 1 1 10 10\n000777 0.8 1 1 10 10\n000778 0.7 1 1 10 10\n"
    )
    with pytest.raises(DataError, match=r"comp4_det_test_dog.txt:2: 2 detection\(s\) on 2 image"):
        read_comp4_dir(tmp_path, "test", CLASSES, known_image_ids=["000001"])
    read = read_comp4_dir(
        tmp_path, "test", CLASSES, known_image_ids=["000001"], unknown_images="drop"
    )
    assert read.unknown_image_ids == {"dog": ["000777", "000778"]}
    assert read.n_dropped == {"dog": 2}
    assert list(read.detections["dog"].image_ids) == ["000001"]
    assert len(read.detections["cat"]) == 0


def test_missing_files(tmp_path: Path):
    (tmp_path / comp4_filename("test", "cat")).write_text("000001 0.9 1 1 10 10\n")
    with pytest.raises(DataError, match="comp4_det_test_dog.txt, comp4_det_test_person.txt"):
        read_comp4_dir(tmp_path, "test", CLASSES)
    read = read_comp4_dir(tmp_path, "test", CLASSES, missing_files="empty")
    assert read.missing_classes == ["dog", "person"]
    assert set(read.detections) == {"cat"}
    with pytest.raises(DataError, match="does not exist"):
        read_comp4_dir(tmp_path / "nope", "test", CLASSES)
    # no file of the split at all: an error in both modes, naming what is there
    with pytest.raises(DataError, match=r"no comp4 file for split 'val'.*comp4_det_test_cat"):
        read_comp4_dir(tmp_path, "val", CLASSES, missing_files="empty")
    with pytest.raises(ConfigError):
        read_comp4_dir(tmp_path, "test", CLASSES, unknown_images="ignore")


def test_write_rejects_bad_labels_and_no_images(tmp_path: Path):
    with pytest.raises(DataError, match="out of range"):
        write_comp4_files(
            tmp_path, "test", CLASSES, [ImageDetections("a", [[0, 0, 1, 1]], [1], [3])]
        )
    paths = write_comp4_files(tmp_path / "empty", "test", CLASSES, [])
    assert [p.read_text() for p in paths] == ["", "", ""]
    assert not list(tmp_path.glob("**/*.tmp"))
