"""Importing proposals: R-CNN .mat files, sppdet .npz files, validation against a dataset."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from sppdet.errors import DataError
from sppdet.proposals import ProposalResult, load_npz, load_rcnn_mat, save_npz, validate_proposals


def _cell(items: list) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for index, item in enumerate(items):
        cell[index, 0] = item
    return cell


def _write_rcnn_mat(path, image_ids, box_arrays) -> None:
    # R-CNN's layout: 'images' and 'boxes' cell arrays; boxes y1 x1 y2 x2, 1-based inclusive.
    scipy.io.savemat(str(path), {"images": _cell(image_ids), "boxes": _cell(box_arrays)})


def test_rcnn_mat_boxes_become_zero_based_xyxy(tmp_path):
    path = tmp_path / "voc_2007_test.mat"
    _write_rcnn_mat(
        path,
        ["000001", "000002", "000003"],
        [
            np.array([[11.0, 21.0, 50.0, 80.0], [1.0, 1.0, 375.0, 500.0]]),
            np.array([[5.0, 6.0, 7.0, 8.0]]),
            np.zeros((0, 4)),
        ],
    )
    proposals = load_rcnn_mat(path)
    assert list(proposals) == ["000001", "000002", "000003"]
    # y1=11, x1=21, y2=50, x2=80 (1-based) -> x1=20, y1=10, x2=80, y2=50 (0-based continuous);
    # the full 500x375 image 1..500 x 1..375 -> [0, 0, 500, 375].
    np.testing.assert_array_equal(
        proposals["000001"].boxes, np.array([[20, 10, 80, 50], [0, 0, 500, 375]], np.float32)
    )
    np.testing.assert_array_equal(proposals["000002"].boxes, np.array([[5, 4, 8, 7]], np.float32))
    assert proposals["000003"].boxes.shape == (0, 4)
    assert all(p.scores is None and p.boxes.dtype == np.float32 for p in proposals.values())


def test_rcnn_mat_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_rcnn_mat(tmp_path / "absent.mat")
    no_boxes = tmp_path / "no_boxes.mat"
    scipy.io.savemat(str(no_boxes), {"images": _cell(["a"])})
    with pytest.raises(DataError, match="no variable 'boxes'"):
        load_rcnn_mat(no_boxes)
    uneven = tmp_path / "uneven.mat"
    _write_rcnn_mat(uneven, ["a", "b"], [np.ones((1, 4))])
    with pytest.raises(DataError, match="2 image ids but 1 box arrays"):
        load_rcnn_mat(uneven)
    wrong = tmp_path / "wrong.mat"
    _write_rcnn_mat(wrong, ["a"], [np.ones((2, 3))])
    with pytest.raises(DataError, match=r"shape \(2, 3\)"):
        load_rcnn_mat(wrong)
    twice = tmp_path / "twice.mat"
    _write_rcnn_mat(twice, ["a", "a"], [np.ones((1, 4)), np.ones((1, 4))])
    with pytest.raises(DataError, match="listed twice"):
        load_rcnn_mat(twice)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="cannot read"):
        load_rcnn_mat(garbage)


def test_npz_round_trip_with_and_without_scores(tmp_path):
    path = tmp_path / "proposals.npz"
    original = {
        "img_a": ProposalResult(
            np.array([[0.5, 1.0, 10.0, 20.0], [3, 3, 9, 9]], np.float32),
            np.array([0.9, 0.1], np.float32),
        ),
        "img_b": ProposalResult(np.array([[0, 0, 4, 4]], np.float32), None),
        "img_c": ProposalResult(np.zeros((0, 4), np.float32), None),
    }
    save_npz(path, original)
    loaded = load_npz(path)
    assert set(loaded) == set(original)
    for image_id, result in original.items():
        np.testing.assert_array_equal(loaded[image_id].boxes, result.boxes)
        if result.scores is None:
            assert loaded[image_id].scores is None
        else:
            np.testing.assert_array_equal(loaded[image_id].scores, result.scores)


def test_npz_written_by_hand(tmp_path):
    path = tmp_path / "hand.npz"
    np.savez(
        path,
        **{
            "2008_000001": np.array([[1, 2, 3, 4]], np.float64),
            "2008_000001__scores": np.array([2.0]),
        },
    )
    loaded = load_npz(path)
    assert list(loaded) == ["2008_000001"]
    assert loaded["2008_000001"].boxes.dtype == np.float32
    np.testing.assert_array_equal(loaded["2008_000001"].scores, [2.0])


def test_npz_errors(tmp_path):
    orphan = tmp_path / "orphan.npz"
    np.savez(orphan, **{"x__scores": np.ones(2)})
    with pytest.raises(DataError, match="no box array 'x'"):
        load_npz(orphan)
    single = tmp_path / "single.npy"
    np.save(single, np.ones((2, 4)))
    with pytest.raises(DataError, match="single numpy array"):
        load_npz(single)
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "absent.npz")
    with pytest.raises(DataError, match="reserved"):
        save_npz(tmp_path / "bad.npz", {"a__scores": ProposalResult(np.zeros((0, 4), np.float32))})


SIZES = {"a": (100, 200), "b": (50, 60), "c": (10, 10)}  # id -> (height, width)


def test_validation_of_clean_proposals_reports_nothing():
    proposals = {
        "a": ProposalResult(
            np.array([[0, 0, 200, 100], [5, 5, 6, 6]], np.float32), np.ones(2, np.float32)
        ),
        "b": np.array([[1, 1, 59, 49]], np.float32),
        "c": ProposalResult(np.array([[0, 0, 10, 10]], np.float32)),
    }
    cleaned, problems = validate_proposals(proposals, SIZES, strict=True)
    assert problems == []
    np.testing.assert_array_equal(cleaned["a"].boxes, proposals["a"].boxes)
    np.testing.assert_array_equal(cleaned["b"].boxes, proposals["b"])
    assert list(cleaned) == ["a", "b", "c"]


def test_validation_repairs_and_reports_each_problem():
    proposals = {
        # One box outside (clipped), one degenerate (dropped), one NaN (dropped), one fine.
        "a": ProposalResult(
            np.array(
                [[-5, -2, 250, 120], [10, 10, 10, 30], [np.nan, 0, 5, 5], [1, 2, 3, 4]], np.float32
            ),
            np.array([4, 3, 2, 1], np.float32),
        ),
        # Scores of the wrong length (dropped); a box wholly outside (degenerate after clipping).
        "b": ProposalResult(
            np.array([[1, 1, 5, 5], [70, 0, 90, 10]], np.float32), np.ones(3, np.float32)
        ),
        # 'c' is missing; 'zzz' is not in the dataset.
        "zzz": np.array([[0, 0, 1, 1]], np.float32),
    }
    cleaned, problems = validate_proposals(proposals, SIZES, source="props.npz")
    text = "\n".join(problems)
    assert "not in the dataset" in text and "'zzz'" in text
    assert "no proposals" in text and "'c'" in text
    assert "1 box(es) reach outside the 200x100 image; clipped" in text
    assert "1 degenerate box(es)" in text and "image 'a'" in text
    assert "1 box(es) with NaN/inf" in text
    assert "3 scores for 2 boxes; scores dropped" in text
    assert all(problem.startswith("props.npz") for problem in problems)
    np.testing.assert_array_equal(
        cleaned["a"].boxes, np.array([[0, 0, 200, 100], [1, 2, 3, 4]], np.float32)
    )
    np.testing.assert_array_equal(cleaned["a"].scores, np.array([4, 1], np.float32))
    np.testing.assert_array_equal(cleaned["b"].boxes, np.array([[1, 1, 5, 5]], np.float32))
    assert cleaned["b"].scores is None
    assert cleaned["c"].boxes.shape == (0, 4)
    assert "zzz" not in cleaned


def test_validation_malformed_array_and_empty_sets():
    proposals = {"a": np.ones((3, 5)), "b": np.zeros((0, 4)), "c": np.array([[0, 0, 5, 5]])}
    cleaned, problems = validate_proposals(proposals, SIZES)
    assert any("numeric [N, 4] array" in p and "'a'" in p for p in problems)
    assert any("2 image(s) have an empty proposal set" in p for p in problems)
    assert cleaned["a"].boxes.shape == (0, 4) and cleaned["b"].boxes.shape == (0, 4)


def test_strict_validation_raises_with_the_list():
    with pytest.raises(DataError) as info:
        validate_proposals(
            {"a": np.array([[-1, 0, 5, 5]], np.float32)}, SIZES, strict=True, source="x.mat"
        )
    message = str(info.value)
    assert "x.mat" in message and "reach outside" in message and "no proposals" in message
