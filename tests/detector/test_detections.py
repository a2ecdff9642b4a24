"""The ImageDetections record: dtypes, shapes, validation, empties."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.detector.detections import ImageDetections
from sppdet.errors import DataError


def test_coerces_dtypes_and_shapes():
    d = ImageDetections("000001", [[0, 0, 1, 1]], [0.5], [2])
    assert d.boxes.dtype == np.float32 and d.boxes.shape == (1, 4)
    assert d.scores.dtype == np.float32 and d.labels.dtype == np.int64
    assert len(d) == 1
    e = ImageDetections("x", [], [], [])
    assert e.boxes.shape == (0, 4) and len(e) == 0


def test_empty_select_concatenate():
    e = ImageDetections.empty("x")
    assert e.boxes.shape == (0, 4) and e.scores.shape == (0,) and e.labels.dtype == np.int64
    d = ImageDetections("x", [[0, 0, 1, 1], [1, 1, 2, 2]], [0.1, 0.2], [0, 1])
    np.testing.assert_array_equal(d.select(np.array([1])).labels, [1])
    assert len(d.select(np.zeros(2, bool))) == 0
    both = ImageDetections.concatenate("x", [d, e, d])
    np.testing.assert_array_equal(both.labels, [0, 1, 0, 1])
    assert len(ImageDetections.concatenate("x", [])) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a b", [[0, 0, 1, 1]], [1], [0]), "without whitespace"),
        (("", [[0, 0, 1, 1]], [1], [0]), "non-empty"),
        (("a", [[0, 0, 1]], [1], [0]), r"shape \[N, 4\]"),
        (("a", [[0, 0, 1, 1]], [1, 2], [0]), "same length"),
        (("a", [[0, 0, 1, 1]], [1], [0.5]), "integers"),
        (("a", [[0, 0, 1, 1]], [1], [-1]), ">= 0"),
        (("a", [[0, 0, np.inf, 1]], [1], [0]), "finite"),
    ],
)
def test_validation(args, message):
    with pytest.raises(DataError, match=message):
        ImageDetections(*args)
