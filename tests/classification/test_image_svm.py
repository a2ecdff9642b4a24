"""Linear SVMs on full-image features: AP by hand, separable data, file errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from sppdet.classification.image_svm import (
    average_precision,
    l2_normalize,
    read_feature_file,
    train_and_test,
)
from sppdet.cli import cli
from sppdet.errors import ArtifactError, DataError


def _write(path, features, labels, classes=("a", "b", "c")) -> None:
    with h5py.File(path, "w") as handle:
        handle["features"] = np.asarray(features, dtype=np.float32)
        handle["labels"] = labels
        handle.create_dataset("image_ids", data=np.array([f"i{k}" for k in range(len(labels))],
                                                         dtype=object),
                              dtype=h5py.string_dtype())
        handle.attrs["classes"] = json.dumps(list(classes))
        handle.attrs["layer"] = "fc7"


def test_average_precision_hand_computed() -> None:
    # ranking: pos, neg, pos -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # 11-point: t <= 0.5 -> 1 (6 points), t > 0.5 -> 2/3 (5 points)
    ap = average_precision(np.array([0.9, 0.5, 0.1]), np.array([1, 0, 1]))
    assert ap == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert average_precision(np.array([0.3, 0.2]), np.array([0, 0])) is None
    assert average_precision(np.array([0.3, 0.2]), np.array([0, 1])) == pytest.approx(
        (6 * 0.5 + 5 * 0.5) / 11)


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_separable_classes_are_learnt(tmp_path) -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 5

    def sample(n):
        labels = np.arange(n) % 3
        return centres[labels] + rng.normal(0, 0.3, (n, 3)), labels

    train_x, train_y = sample(60)
    test_x, test_y = sample(30)
    _write(tmp_path / "train.h5", train_x, train_y)
    _write(tmp_path / "test.h5", test_x, test_y)
    result = train_and_test(read_feature_file(tmp_path / "train.h5"),
                            read_feature_file(tmp_path / "test.h5"))
    assert result.top1_error == 0.0 and result.mean_ap == pytest.approx(1.0)
    output = CliRunner().invoke(cli, ["image-svm", str(tmp_path / "train.h5"),
                                      str(tmp_path / "test.h5")])
    assert output.exit_code == 0, output.output
    assert json.loads((tmp_path / "image-svm.json").read_text())["mean_ap"] == pytest.approx(1.0)


def test_multi_label_files_and_errors(tmp_path) -> None:
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.int8)
    _write(tmp_path / "multi.h5", np.eye(4), targets, classes=("x", "y"))
    loaded = read_feature_file(tmp_path / "multi.h5")
    assert not loaded.single_label and loaded.targets.tolist() == targets.tolist()
    result = train_and_test(loaded, loaded)
    assert result.top1_error is None and set(result.ap) == {"x", "y"}
    _write(tmp_path / "one_class.h5", np.eye(3), np.array([0, 0, 0]))
    with pytest.raises(DataError, match="positive"):
        train_and_test(read_feature_file(tmp_path / "one_class.h5"),
                       read_feature_file(tmp_path / "one_class.h5"))
    with pytest.raises(DataError, match="other classes"):
        train_and_test(loaded, read_feature_file(tmp_path / "one_class.h5"))
    with pytest.raises(ArtifactError, match="no such"):
        read_feature_file(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="not a features file"):
        read_feature_file(tmp_path / "junk.h5")
