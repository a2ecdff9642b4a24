"""``sppdet eval`` and ``sppdet combine`` through Click's CliRunner, on fabricated detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tests.conftest import make_voc_dataset

from sppdet.io.records import Record, read_record
from sppdet.cli import cli
from sppdet.data.voc import VOCDataset
from sppdet.detector.detections import ImageDetections
from sppdet.detector.detections_io import (
    DetectionsItem,
    DetectionsReader,
    NMSSettings,
    detections_params,
    write_detections_artifact,
)
from sppdet.stages.common import dataset_params
from sppdet.stages.layout import dataset_tag

# VOC boxes (1-based inclusive) of the ground truth; in sppdet's xyxy: x1 = xmin - 1, x2 = xmax.
IMAGES = {
    "img1": [{"name": "circle", "box": (1, 1, 10, 20)}],                   # (0, 0, 10, 20)
    "img2": [{"name": "square", "box": (5, 6, 64, 48)},                    # (4, 5, 64, 48)
             {"name": "circle", "box": (20, 20, 30, 30), "difficult": 1}],  # (19, 19, 30, 30)
    "img3": [{"name": "circle", "box": (31, 1, 50, 20)}],                  # (30, 0, 50, 20)
    "img4": [],
}
CIRCLE, SQUARE = 0, 1  # classes discovered: sorted names

# Final detections: (xyxy box, score, label) per image.
DETECTIONS = {
    "img1": [((0, 0, 10, 20), 0.9, CIRCLE),     # true positive
             ((0, 0, 10, 20), 0.3, CIRCLE)],    # duplicate: false positive
    "img2": [((19, 19, 30, 30), 0.8, CIRCLE),   # on a difficult object: ignored
             ((4, 5, 64, 48), 0.7, SQUARE)],    # true positive
    "img3": [((40, 30, 60, 45), 0.6, CIRCLE),   # no overlap: false positive
             ((30, 0, 50, 20), 0.4, CIRCLE)],   # true positive
    "img4": [((0, 0, 20, 20), 0.95, SQUARE)],   # no object: false positive
}
# circle, by score: TP, ignored, FP, TP, FP with npos 2 -> precision 1, 1, 1/2, 2/3, 1/2 at
# recall 1/2, 1/2, 1/2, 1, 1. 11-point: 6 thresholds <= 0.5 reach precision 1, 5 thresholds
# > 0.5 reach 2/3 -> (6 + 5 * 2/3) / 11 = 28/33. Area: 1/2 * 1 + 1/2 * 2/3 = 5/6.
# square: FP, TP with npos 1 -> precision 0, 1/2 at recall 0, 1 -> 1/2 for both metrics.
MAP_11POINT = (28 / 33 + 1 / 2) / 2
MAP_AREA = (5 / 6 + 1 / 2) / 2


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def as_detections(image_id: str, rows: list) -> ImageDetections:
    if not rows:
        return ImageDetections.empty(image_id)
    boxes, scores, labels = zip(*rows)
    return ImageDetections(image_id, boxes, scores, labels)


def fabricate(path: Path, dataset: Path, split: str, final: dict[str, list], *,
              candidates: dict[str, list] | None = None, model: str = "model-a",
              classes: tuple[str, ...] | None = None, nms: NMSSettings = NMSSettings()) -> Path:
    """A detections artifact as ``detect`` writes it, for the images of ``final``."""
    data = VOCDataset(dataset, split, classes)
    record = Record("detect", detections_params(model=model, data=dataset_params(data),
                                                classes=data.classes, nms=nms))
    candidates = final if candidates is None else candidates
    items = [DetectionsItem(as_detections(i, final[i]), as_detections(i, candidates[i]), 64, 48)
             for i in data.image_ids]
    return write_detections_artifact(path, record, items)


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    root = make_voc_dataset(tmp_path / "shapes", IMAGES, split="test")
    (root / "ImageSets" / "Main" / "val.txt").write_text("img1\nimg2\n")
    return root


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


def test_eval_artifact_matches_hand_computed_map(voc, work, tmp_path):
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test",
                    "--voc2007", "--write-comp4", str(tmp_path / "comp4"))
    assert result.exit_code == 0, result.output
    assert "Protocol: VOC2007 11-point AP, devkit rules (VOCevaldet), IoU >= 0.5" in result.output
    table = result.output.split("\n")
    header = next(line for line in table if line.startswith("method"))
    assert header.split() == ["method", "mAP", "circle", "square"]
    assert table[table.index(header) + 1].split() == ["model-a", "67.4", "84.8", "50.0"]
    out = work / "eval" / "model-a" / dataset_tag(voc) / "test"
    report = json.loads((out / "report.json").read_text())
    assert report["mean_ap"] == pytest.approx(MAP_11POINT, abs=1e-12)
    assert [c["ap"] for c in report["classes"]] == pytest.approx([28 / 33, 0.5], abs=1e-12)
    assert report["classes"][0]["n_ignored"] == 1 and report["split"] == "test"
    markdown = (out / "report.md").read_text()
    assert "Protocol: VOC2007 11-point AP" in markdown
    assert "| model-a | 67.4 | 84.8 | 50.0 |" in markdown
    assert (out / "pr_all.png").stat().st_size > 0 and (out / "pr_circle.png").exists()
    record = read_record(out / "report.json")
    assert record.stage == "eval" and record.inputs["detections"].path == str(dets.resolve())
    # the comp4 files it wrote are 1-based
    assert (tmp_path / "comp4" / "comp4_det_test_circle.txt").read_text().splitlines()[0] == \
        "img1 0.9 1 1 10 20"

    again = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test")
    assert again.exit_code == 0 and "Report up to date" in again.output
    assert "67.4" in again.output


def test_eval_area_metric(voc, work, tmp_path):
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    out = tmp_path / "report"
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "-s", "test", "--metric",
                    "area", "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    assert "Protocol: VOC2010+ area under the interpolated PR curve" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["metric"] == "area"
    assert report["mean_ap"] == pytest.approx(MAP_AREA, abs=1e-12)
    assert not list(out.glob("*.png"))


def write_comp4_by_hand(folder: Path, split: str) -> Path:
    """The same detections as another tool would write them: 1-based VOC boxes, any order."""
    folder.mkdir()
    lines = {"circle": [], "square": []}
    names = ("circle", "square")
    for image_id, rows in reversed(DETECTIONS.items()):
        for (x1, y1, x2, y2), score, label in rows:
            lines[names[label]].append(f"{image_id} {score:.6f} {x1 + 1} {y1 + 1} {x2} {y2}")
    for name, rows in lines.items():
        (folder / f"comp4_det_{split}_{name}.txt").write_text("\n".join(rows) + "\n")
    return folder


def test_eval_comp4_folder(voc, work, tmp_path):
    folder = write_comp4_by_hand(tmp_path / "other-tool", "test")
    result = invoke("-w", str(work), "eval", str(voc), str(folder), "--split", "test",
                    "--no-plots")
    assert result.exit_code == 0, result.output
    assert "Protocol: VOC2007 11-point AP" in result.output
    out = work / "eval" / "other-tool" / dataset_tag(voc) / "test"
    report = json.loads((out / "report.json").read_text())
    assert report["mean_ap"] == pytest.approx(MAP_11POINT, abs=1e-12)
    assert report["input"] == "comp4 files"
    # editing a file makes the report stale
    circle = folder / "comp4_det_test_circle.txt"
    circle.write_text(circle.read_text().replace("img1 0.900000", "img1 0.100000"))
    again = invoke("-w", str(work), "eval", str(voc), str(folder), "--split", "test",
                   "--no-plots")
    assert again.exit_code == 0 and "Report written" in again.output
    assert json.loads((out / "report.json").read_text())["mean_ap"] != pytest.approx(MAP_11POINT)


def test_eval_comp4_of_another_split_is_refused(voc, work, tmp_path):
    folder = write_comp4_by_hand(tmp_path / "other-tool", "val")
    # files named for another split
    result = invoke("-w", str(work), "eval", str(voc), str(folder), "--split", "test")
    assert result.exit_code == 1 and "missing comp4 files" in result.output
    # files named for the evaluated split, with images that are not in it
    result = invoke("-w", str(work), "eval", str(voc), str(folder), "--split", "val")
    assert result.exit_code == 1
    assert "not in split 'val'" in result.output and "img3" in result.output


def test_eval_refuses_detections_of_another_split(voc, work, tmp_path):
    dets = fabricate(tmp_path / "val.h5", voc, "val",
                     {i: DETECTIONS[i] for i in ("img1", "img2")})
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "split 'val' instead of 'test'" in result.output and "--force" in result.output
    assert not (work / "eval").exists()
    forced = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test", "--force",
                    "--no-plots")
    assert forced.exit_code == 0, forced.output
    assert "Warning: the detections were made on split 'val'" in forced.output


def test_eval_refuses_another_class_list_and_conflicting_metric(voc, work, tmp_path):
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test",
                    "--classes", "square,circle")
    assert result.exit_code == 1
    assert "classes ['circle', 'square'] instead of ['square', 'circle']" in result.output
    result = invoke("eval", str(voc), str(dets), "--voc2007", "--metric", "area")
    assert result.exit_code == 2 and "--voc2007" in result.output


def test_help_shows_defaults():
    text = " ".join(invoke("eval", "--help").output.split())  # undo line wrapping
    assert "[default: test]" in text and "[default: 11point]" in text
    assert "[default: 0.5" in text and "--write-comp4" in text and "--voc2007" in text
    text = " ".join(invoke("combine", "--help").output.split())
    assert text.count("[default: the inputs' setting") == 3 and "--name" in text


# Model combination (paper section 4.4): model B's confident circle on img1 (IoU 0.9 with A's)
# suppresses A's windows; A keeps its square on img2, which B does not see.
MODEL_A = {"img1": [((0, 0, 10, 20), 0.5, CIRCLE), ((0, 1, 10, 20), 0.45, CIRCLE)],
           "img2": [((4, 5, 64, 48), 0.7, SQUARE)], "img3": [], "img4": []}
MODEL_B = {"img1": [((1, 0, 10, 20), 0.8, CIRCLE)], "img2": [],
           "img3": [((30, 0, 50, 20), 0.4, CIRCLE)], "img4": []}


def test_combine_two_models(voc, work, tmp_path):
    # A's own NMS kept only its best circle; combination pools its candidates
    a = fabricate(tmp_path / "a.h5", voc, "test", {**MODEL_A, "img1": MODEL_A["img1"][:1]},
                  candidates=MODEL_A, model="a")
    b = fabricate(tmp_path / "b.h5", voc, "test", MODEL_B, model="b")
    result = invoke("-w", str(work), "combine", str(a), str(b), "--name", "a+b")
    assert result.exit_code == 0, result.output
    out = work / "detections" / "a+b" / dataset_tag(voc) / "test.h5"
    assert str(out) in result.output and "4 images" in result.output
    assert "detections per image: mean 0.8" in result.output  # 3 detections / 4 images
    with DetectionsReader(out) as reader:
        assert reader.image_ids() == ["img1", "img2", "img3", "img4"]
        img1 = reader.detections("img1")
        np.testing.assert_array_equal(img1.boxes, [[1, 0, 10, 20]])
        np.testing.assert_array_equal(img1.scores, np.array([0.8], np.float32))
        assert len(reader.candidates("img1")) == 3  # the pooled windows, A's first
        np.testing.assert_array_equal(reader.detections("img2").labels, [SQUARE])
        np.testing.assert_array_equal(reader.detections("img3").scores,
                                      np.array([0.4], np.float32))
        assert len(reader.detections("img4")) == 0
        assert reader.size("img1") == (64, 48)
        record = reader.record
    assert record.stage == "combine" and record.params["model"] == "a+b"
    assert record.params["combined_models"] == ["a", "b"]
    assert record.params["nms"] == NMSSettings().to_params()
    assert {k: v.path for k, v in record.inputs.items()} == {
        "detections_1": str(a.resolve()), "detections_2": str(b.resolve())}
    again = invoke("-w", str(work), "combine", str(a), str(b), "--name", "a+b")
    assert again.exit_code == 0 and "up to date" in again.output
    # the combination is a detections artifact like any other
    evaluated = invoke("-w", str(work), "eval", str(voc), str(out), "--no-plots")
    assert evaluated.exit_code == 0, evaluated.output
    assert (work / "eval" / "a+b" / dataset_tag(voc) / "test" / "report.json").exists()


def test_combine_refuses_mismatched_inputs(voc, work, tmp_path):
    a = fabricate(tmp_path / "a.h5", voc, "test", MODEL_A, model="a")
    val = fabricate(tmp_path / "val.h5", voc, "val", {i: MODEL_B[i] for i in ("img1", "img2")},
                    model="b")
    result = invoke("-w", str(work), "combine", str(a), str(val), "--name", "ab")
    assert result.exit_code == 1
    assert f"cannot combine {val} with {a}" in result.output
    assert "split 'val' instead of 'test'" in result.output
    other_classes = fabricate(tmp_path / "c.h5", voc, "test", {i: [] for i in IMAGES},
                              model="c", classes=("square", "circle"))
    result = invoke("-w", str(work), "combine", str(a), str(other_classes), "--name", "ac")
    assert result.exit_code == 1 and "classes ['square', 'circle'] instead of" in result.output
    assert not (work / "detections").exists()

    assert invoke("combine", str(a), "--name", "x").exit_code == 2  # one input
    result = invoke("-w", str(work), "combine", str(a), str(a), "--name", "aa")
    assert result.exit_code == 1 and "given twice" in result.output
    result = invoke("-w", str(work), "combine", str(a), str(val), "--name", "../up")
    assert result.exit_code == 1 and "model name '../up'" in result.output


def test_combine_nms_settings_must_agree_or_be_given(voc, work, tmp_path):
    a = fabricate(tmp_path / "a.h5", voc, "test", MODEL_A, model="a")
    b = fabricate(tmp_path / "b.h5", voc, "test", MODEL_B, model="b",
                  nms=NMSSettings(iou_threshold=0.95))
    result = invoke("-w", str(work), "combine", str(a), str(b), "--name", "ab")
    assert result.exit_code == 1 and "different iou_threshold" in result.output
    assert "--iou-threshold" in result.output
    # at IoU 0.95 nothing of img1 is suppressed (the windows overlap 0.9); no cap
    result = invoke("-w", str(work), "combine", str(a), str(b), "--name", "ab",
                    "--iou-threshold", "0.95", "--max-per-image", "0")
    assert result.exit_code == 0, result.output
    out = work / "detections" / "ab" / dataset_tag(voc) / "test.h5"
    with DetectionsReader(out) as reader:
        np.testing.assert_array_equal(reader.detections("img1").scores,
                                      np.array([0.8, 0.5, 0.45], np.float32))
        assert reader.nms == NMSSettings(iou_threshold=0.95, max_per_image=None)
