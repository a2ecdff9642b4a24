"""Evaluation reports: table, report.json, report.md and PR curve PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sppdet.detector.detections import ImageDetections
from sppdet.errors import ConfigError
from sppdet.evaluation.report import ap_table, report_dict, write_report
from sppdet.evaluation.voc_ap import ImageGroundTruth, evaluate_detections

CLASSES = ["cat", "dog", "bird", "fish"]


def small_evaluation(metric: str = "11point"):
    # cat: TP then FP (AP 1); dog: one TP, one missed object (AP 6/11 in 11-point);
    # bird: no positives (excluded); fish: all detections on a difficult object (AP 0, flagged).
    gt = [
        ImageGroundTruth(
            "1", [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]],
            [0, 1, 1, 3], [0, 0, 0, 1],
        ),
        ImageGroundTruth("2", [[0, 0, 5, 5]], [3], [0]),
    ]
    detections = [
        ImageDetections(
            "1",
            [[0, 0, 10, 10], [80, 80, 90, 90], [20, 0, 30, 10], [60, 0, 70, 10], [0, 0, 3, 3]],
            [0.9, 0.1, 0.8, 0.7, 0.6],
            [0, 0, 1, 3, 2],
        ),
        ImageDetections.empty("2"),
    ]
    return evaluate_detections(gt, detections, CLASSES, metric=metric)


def test_table_like_paper_table_11():
    ev = small_evaluation()
    table = ap_table(ev).splitlines()
    assert table[0] == "| method | mAP | cat | dog | bird | fish |"
    # mAP over cat, dog, fish: (100 + 54.5 + 0) / 3.
    assert table[2] == "| sppdet | 51.5 | 100.0 | 54.5 | n/a | 0.0 |"
    rows = ap_table({"A": ev, "B": ev}, classes_as_rows=True).splitlines()
    assert rows[0] == "| class | A | B |"
    assert rows[3] == "| dog | 54.5 | 54.5 |"
    assert rows[-1] == "| **mAP** | 51.5 | 51.5 |"
    with pytest.raises(ConfigError, match="another metric"):
        ap_table({"A": ev, "B": small_evaluation("area")})


def test_report_files(tmp_path: Path):
    ev = small_evaluation()
    written = write_report(tmp_path, ev, title="Test split", extra={"split": "test"})
    data = json.loads(Path(written["json"]).read_text())
    assert data["protocol"] == "VOC2007 11-point AP, devkit rules (VOCevaldet)"
    assert data["split"] == "test"
    assert data["mean_ap"] == pytest.approx((1.0 + 6 / 11 + 0.0) / 3, abs=1e-12)
    assert data["classes_excluded_from_mean"] == ["bird"]
    by_name = {c["class"]: c for c in data["classes"]}
    assert by_name["bird"]["ap"] is None and by_name["bird"]["flags"] == ["no_positives"]
    assert by_name["fish"]["devkit_ap"] is None  # the devkit's NaN, JSON-safe
    assert by_name["fish"]["ap"] == 0.0 and "all_detections_ignored" in by_name["fish"]["flags"]
    assert any("left out of the mAP: bird" in n for n in data["notes"])

    md = Path(written["markdown"]).read_text()
    assert "Protocol: VOC2007 11-point AP, devkit rules (VOCevaldet), IoU >= 0.5." in md
    assert "mAP: 51.5 % over 3 of 4 classes" in md
    assert "| fish | 0.00 | 1 | 1 | 0 | 0 | 1 | all_detections_ignored |" in md
    assert "![pr_all.png](pr_all.png)" in md

    names = sorted(p.name for p in written["figures"])
    assert names == ["pr_all.png", "pr_cat.png", "pr_dog.png", "pr_fish.png"]
    for path in written["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_report_without_plots_and_empty_split(tmp_path: Path):
    ev = evaluate_detections([], [], CLASSES, metric="area")
    written = write_report(tmp_path, ev, plots=False)
    assert written["figures"] == []
    data = json.loads(Path(written["json"]).read_text())
    assert data["mean_ap"] is None and data["metric"] == "area"
    assert data["protocol"].startswith("VOC2010+ area")
    assert "n/a" in Path(written["markdown"]).read_text()


def test_report_dict_counts_match_result():
    ev = small_evaluation()
    data = report_dict(ev)
    for entry, result in zip(data["classes"], ev.per_class):
        assert entry["n_true_positives"] == result.n_true_positives
        assert entry["n_false_positives"] == result.n_false_positives
        assert entry["npos"] == result.npos
    assert data["classes"][0]["n_false_positives"] == 1
    assert np.isclose(data["classes"][1]["ap_percent"], 100 * 6 / 11)
