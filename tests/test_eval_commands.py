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
    assert result.exit_code == 1 and "no comp4 file for split 'test'" in result.output
    assert "comp4_det_val_circle.txt" in result.output
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


# ---------------------------------------------------------------------------------------------
# The devkit's edge cases through the CLI, and the analysis, COCO and HTML outputs.
# ---------------------------------------------------------------------------------------------


def annotations_only(voc: Path, target: Path) -> Path:
    """A copy of the dataset with Annotations/ and ImageSets/ only, as the devkit needs."""
    import shutil

    for folder in ("Annotations", "ImageSets"):
        shutil.copytree(voc / folder, target / folder)
    return target


def test_eval_from_annotations_alone(voc, work, tmp_path):
    bare = annotations_only(voc, tmp_path / "bare")
    folder = write_comp4_by_hand(tmp_path / "other-tool", "test")
    out = tmp_path / "report"
    result = invoke("-w", str(work), "eval", str(bare), str(folder), "--split", "test",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["mean_ap"] == pytest.approx(
        MAP_11POINT, abs=1e-12)
    assert "4 of 4 images are absent" in result.output
    assert not list(out.glob("gallery_*"))  # nothing to draw on
    # a detections artifact too: only split, classes and image count can be checked
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    result = invoke("-w", str(work), "eval", str(bare), str(dets), "--split", "test",
                    "--out", str(tmp_path / "report2"))
    assert result.exit_code == 0, result.output
    assert "images are absent, so only its split, classes and image count" in result.output
    report = json.loads((tmp_path / "report2" / "report.json").read_text())
    assert report["mean_ap"] == pytest.approx(MAP_11POINT, abs=1e-12)


def test_missing_comp4_file_counts_as_no_detections(voc, work, tmp_path):
    folder = write_comp4_by_hand(tmp_path / "other-tool", "test")
    (folder / "comp4_det_test_square.txt").unlink()
    out = tmp_path / "report"
    result = invoke("-w", str(work), "eval", str(voc), str(folder), "--split", "test",
                    "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    assert "Warning: no comp4 file for 1 class(es)" in result.output
    assert "comp4_det_test_square.txt" in result.output
    # circle 28/33 as before, square 0 (one object, no detection)
    report = json.loads((out / "report.json").read_text())
    assert report["mean_ap"] == pytest.approx((28 / 33 + 0) / 2, abs=1e-12)
    assert report["classes"][1]["flags"] == ["no_detections"]


def test_class_without_ground_truth_prints_both_means(voc, work, tmp_path):
    folder = write_comp4_by_hand(tmp_path / "other-tool", "test")
    (folder / "comp4_det_test_triangle.txt").write_text("img4 0.5 1 1 5 5\n")
    out = tmp_path / "report"
    result = invoke("-w", str(work), "eval", str(voc), str(folder), "--split", "test",
                    "--classes", "circle,square,triangle", "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    # mAP over circle and square: (28/33 + 1/2) / 2 = 67.4 %; the devkit's mean counts the
    # triangle (no ground truth) as 0: (28/33 + 1/2 + 0) / 3 = 44.9 %
    assert ("mAP 67.4 % over 2 of 3 classes (classes without ground truth left out); devkit "
            "mAP 44.9 % over all 3 (those counted as 0)") in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["devkit_mean_ap"] == pytest.approx((28 / 33 + 1 / 2) / 3, abs=1e-12)
    assert "devkit mAP (classes without ground truth as 0): 44.9 %" in (
        out / "report.md").read_text()


# circle: a duplicate (localization) and a box on an empty area of img3 (background); square:
# a box on img4, which has no object (background).
FP_TYPES_BY_HAND = {"localization": 1, "similar": 0, "other": 0, "background": 2}
# COCO: all boxes exact, so every IoU threshold agrees. circle: TP, (crowd: ignored), FP, TP,
# FP -> recall .5 .5 1 1, precision 1 1/2 2/3 1/2; of the 101 recall points 51 (r <= 0.5)
# see precision 1, 50 see 2/3 -> 253/303. square: FP, TP -> 1/2 everywhere.
COCO_AP_BY_HAND = (253 / 303 + 1 / 2) / 2


def test_eval_analysis_coco_and_html(voc, work, tmp_path):
    pytest.importorskip("pycocotools", reason="the 'coco' extra is not installed")
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    out = tmp_path / "report"
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test",
                    "--out", str(out), "--analysis", "--coco", "--gallery", "2")
    assert result.exit_code == 0, result.output
    analysis = json.loads((out / "analysis.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert analysis["totals"] == FP_TYPES_BY_HAND
    assert sum(analysis["totals"].values()) == sum(
        c["n_false_positives"] for c in report["classes"]) == 3
    assert "False positives (3): localization 1, similar 0, other 0, background 2" in \
        result.output
    coco = report["coco"]
    assert coco["AP50"] == pytest.approx(COCO_AP_BY_HAND, abs=1e-12)
    assert coco["AP"] == pytest.approx(COCO_AP_BY_HAND, abs=1e-12)
    assert "COCO (pycocotools): AP 66.7, AP50 66.7" in result.output
    gt = json.loads((out / "coco_gt.json").read_text())
    assert gt["annotations"][0]["bbox"] == [0, 0, 10, 20]  # img1 circle (1, 1, 10, 20)
    assert (out / "analysis_fp_types.png").exists() and (out / "analysis_ap_impact.png").exists()
    assert (out / "analysis_top_fp_circle.png").exists()
    assert len(list(out.glob("gallery_*.jpg"))) == 2
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "False-positive analysis" in page
    # self-contained: every image inline, nothing fetched
    assert page.count('src="data:image/png;base64,') == len(list(out.glob("*.png")))
    assert page.count('src="data:image/jpeg;base64,') == 2
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "COCO metrics" in page and "84.8" in page  # circle's 11-point AP


def test_coco_without_pycocotools_names_the_extra(voc, work, tmp_path, monkeypatch):
    import sys

    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test", "--coco")
    assert result.exit_code == 1
    assert "pycocotools" in result.output and "sppdet[coco]" in result.output
    assert not (work / "eval").exists()  # refused before any work


def test_export_coco(voc, work, tmp_path):
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    result = invoke("-w", str(work), "export-coco", str(voc), str(dets), "--split", "test")
    assert result.exit_code == 0, result.output
    out = work / "coco" / dataset_tag(voc)
    gt = json.loads((out / "test_gt.json").read_text())
    results = json.loads((out / "test_detections.json").read_text())
    assert "4 images, 4 objects, 1 difficult as crowd regions" in result.output
    # img2: square (5, 6, 64, 48) -> [4, 5, 60, 43]; the difficult circle is a crowd region
    img2 = [a for a in gt["annotations"] if a["image_id"] == 2]
    assert [(a["bbox"], a["iscrowd"]) for a in img2] == [([4, 5, 60, 43], 0),
                                                          ([19, 19, 11, 11], 1)]
    assert len(results) == 7
    # the img4 square at 0-based (0, 0, 20, 20): [0, 0, 20, 20], category 2, image 4
    assert {"image_id": 4, "category_id": 2, "bbox": [0.0, 0.0, 20.0, 20.0],
            "score": pytest.approx(0.95, abs=1e-7)} in results
    only_gt = invoke("export-coco", str(voc), "--split", "test", "--out", str(tmp_path / "c"))
    assert only_gt.exit_code == 0 and (tmp_path / "c" / "test_gt.json").exists()
    assert not (tmp_path / "c" / "test_detections.json").exists()


def test_every_devkit_edge_case_from_annotations_alone(work, tmp_path):
    """Annotations/ and ImageSets/ only; the AP of each case worked out by hand."""
    from tests.conftest import write_voc_xml

    root = tmp_path / "bare"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("img1\nimg2\n")
    write_voc_xml(root / "Annotations" / "img1.xml", "img1.jpg", 64, 48, [
        {"name": "a", "box": (1, 1, 24, 35)},
        {"name": "b", "box": (5, 5, 5, 5)}])          # a single pixel: area 1
    write_voc_xml(root / "Annotations" / "img2.xml", "img2.jpg", 64, 48, [
        {"name": "d", "box": (10, 10, 20, 20)}])
    folder = tmp_path / "results"
    folder.mkdir()
    # a: overlap exactly 0.5 in the devkit's arithmetic (0-based floats give 0.4999...)
    (folder / "comp4_det_test_a.txt").write_text("img1 0.9 1.19 14.28 32.94596685082873 35\n")
    # b: a 2x1 box over the single pixel: intersection 1, union 2 -> 0.5
    (folder / "comp4_det_test_b.txt").write_text("img1 0.8 5 5 6 5\n")
    # c: no ground truth at all; d: no result file
    (folder / "comp4_det_test_c.txt").write_text("img2 0.7 1 1 5 5\n")
    out = tmp_path / "report"
    result = invoke("-w", str(work), "eval", str(root), str(folder), "--split", "test",
                    "--classes", "a,b,c,d", "--out", str(out), "--analysis")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    # a: 1 (a true positive, the only object); b: 1; c: undefined (devkit 0); d: 0
    aps = [c["ap"] for c in report["classes"]]
    assert aps[0] == pytest.approx(1.0, abs=1e-12) and aps[1] == pytest.approx(1.0, abs=1e-12)
    assert aps[2] is None and aps[3] == 0.0
    assert report["mean_ap"] == pytest.approx(2 / 3, abs=1e-12)          # (1 + 1 + 0) / 3
    assert report["devkit_mean_ap"] == pytest.approx(2 / 4, abs=1e-12)   # (1 + 1 + 0 + 0) / 4
    assert "Warning: no comp4 file for 1 class(es)" in result.output
    assert "comp4_det_test_d.txt" in result.output
    assert "2 of 2 images are absent" in result.output
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["totals"] == {"localization": 0, "similar": 0, "other": 0, "background": 1}


def test_eval_reports_images_left_out_of_the_split(voc, work, tmp_path):
    """Case 6 (eval): a split id without files is said, in the output and the log."""
    dets = fabricate(tmp_path / "a.h5", voc, "test", DETECTIONS)
    split = voc / "ImageSets" / "Main" / "test.txt"
    split.write_text(split.read_text() + "ghost\n")  # no annotation, no image
    result = invoke("-w", str(work), "eval", str(voc), str(dets), "--split", "test")
    assert result.exit_code == 0, result.output
    assert "Warning: left out of split 'test' (cannot be read): ghost: " in result.output
    assert "annotation file not found" in result.output
    log = next(work.rglob("report.json.log")).read_text()
    assert "left out of split 'test' (cannot be read): ghost" in log
