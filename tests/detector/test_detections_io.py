"""The detections artifact: write, read back, refuse what is not one, compare data identities."""

from __future__ import annotations

import numpy as np
import pytest

from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record
from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import (
    DetectionsItem,
    DetectionsReader,
    NMSSettings,
    data_mismatch,
    detections_params,
    read_detections_artifact,
    write_detections_artifact,
)
from sppdet.errors import ArtifactError, ArtifactMissingError, ConfigError

DATA = {"dataset": "/data/voc", "split": "test", "classes": ["a", "b"], "n_images": 2,
        "fingerprint": "0123456789abcdef"}


def record(**extra) -> Record:
    return Record("detect", detections_params(model="m", data=DATA, classes=["a", "b"],
                                              nms=NMSSettings(), **extra))


def items() -> list[DetectionsItem]:
    final = ImageDetections("x1", [[0, 0, 10, 10]], [2.5], [1])
    candidates = ImageDetections("x1", [[0, 0, 10, 10], [1, 1, 10, 10]], [2.5, -1.0], [1, 1])
    return [DetectionsItem(final, candidates, 640, 480),
            DetectionsItem(ImageDetections.empty("x2"), ImageDetections.empty("x2"), 5, 7)]


def test_round_trip(tmp_path):
    path = write_detections_artifact(tmp_path / "d.h5", record(), items())
    loaded = read_detections_artifact(path)
    assert (loaded.model, loaded.classes, loaded.data) == ("m", ("a", "b"), DATA)
    assert loaded.nms == NMSSettings(0.3, -1.5, 100)
    assert loaded.sizes == {"x1": (640, 480), "x2": (5, 7)}
    assert [d.image_id for d in loaded.detections] == ["x1", "x2"]
    np.testing.assert_array_equal(loaded.detections[0].scores, np.array([2.5], np.float32))
    assert loaded.detections[1].boxes.shape == (0, 4)
    with DetectionsReader(path) as reader:
        candidates = reader.candidates("x1")
        assert candidates.boxes.dtype == np.float32 and candidates.labels.dtype == np.int64
        np.testing.assert_array_equal(candidates.scores, np.array([2.5, -1.0], np.float32))
        assert reader.count("x1") == 1 and reader.count("x1", candidates=True) == 2
        assert len(reader.candidates("x2")) == 0


def test_nms_settings_at_top_level_are_read_too(tmp_path):
    params = {"model": "m", "data": DATA, "classes": ["a", "b"], "iou_threshold": 0.5,
              "score_threshold": None, "max_per_image": None}
    path = write_detections_artifact(tmp_path / "d.h5", Record("detect", params), items())
    assert read_detections_artifact(path).nms == NMSSettings(0.5, None, None)


def test_refuses_what_is_not_detections(tmp_path):
    with pytest.raises(ArtifactMissingError, match="sppdet detect"):
        DetectionsReader(tmp_path / "missing.h5")
    with ItemStore(tmp_path / "p.h5", Record("propose", {"method": "x"})) as store:
        store.write("x1", {"boxes": np.zeros((0, 4), np.float32)})
        store.finalize(["x1"])
    with pytest.raises(ArtifactError, match="made by `sppdet propose`"):
        DetectionsReader(tmp_path / "p.h5")
    with pytest.raises(ConfigError, match="not 'propose'"):
        write_detections_artifact(tmp_path / "q.h5", Record("propose", {}), items())
    no_model = Record("detect", {"data": DATA, "classes": ["a"]})
    path = write_detections_artifact(tmp_path / "n.h5", no_model, items())
    with pytest.raises(ArtifactError, match="lacks 'model'"):
        DetectionsReader(path)


def test_label_beyond_the_class_list_is_an_error(tmp_path):
    bad = ImageDetections("x1", [[0, 0, 1, 1]], [1.0], [2])
    path = write_detections_artifact(tmp_path / "d.h5", record(), [DetectionsItem(bad, bad, 4, 4)])
    with DetectionsReader(path) as reader, pytest.raises(ArtifactError, match="label 2.*2 classes"):
        reader.detections("x1")


def test_data_mismatch():
    assert data_mismatch(DATA, dict(DATA)) is None
    assert data_mismatch(DATA, {**DATA, "dataset": "/copy/of/voc"}) is None  # same content
    assert data_mismatch(DATA, {**DATA, "split": "val"}) == "split 'val' instead of 'test'"
    assert data_mismatch(DATA, {**DATA, "classes": ["b", "a"]}) == \
        "classes ['b', 'a'] instead of ['a', 'b']"
    assert "dataset /other" in data_mismatch(DATA, {**DATA, "dataset": "/other",
                                                    "fingerprint": "f"})
    assert "annotations, image list or image files changed" in data_mismatch(
        DATA, {**DATA, "fingerprint": "f"})


def test_soft_nms_settings_round_trip_and_hard_records_stay_as_they_were(tmp_path):
    # Hard NMS writes the three keys it always wrote, so older records stay up to date.
    assert set(NMSSettings().to_params()) == {"iou_threshold", "score_threshold",
                                              "max_per_image"}
    soft = NMSSettings(0.3, -1.5, 100, method="gaussian", sigma=0.3)
    assert soft.to_params()["method"] == "gaussian" and soft.to_params()["sigma"] == 0.3
    rec = Record("detect", detections_params(model="m", data=DATA, classes=["a", "b"],
                                             nms=soft))
    path = write_detections_artifact(tmp_path / "d.h5", rec, items())
    assert read_detections_artifact(path).nms == soft
