"""False-positive analysis (Hoiem et al. 2012): a hand-built case with every type, and random
cases against a plain-loop reference; the type counts always add up to the AP's false
positives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sppdet.errors import ConfigError
from sppdet.evaluation.analysis import (
    FP_TYPES,
    analyse_false_positives,
    similar_class_groups,
)
from sppdet.evaluation.analysis_plots import (
    plot_ap_impact,
    plot_fp_types,
    plot_top_false_positives,
)
from sppdet.evaluation.voc_ap import ClassDetections, ImageGroundTruth, evaluate_detections

CLASSES = ["cat", "dog", "car"]


def gt_record(image_id, objects):
    """objects: (class index, VOC box, difficult)."""
    boxes_voc = np.array([o[1] for o in objects], dtype=np.float64).reshape(-1, 4)
    return ImageGroundTruth(image_id, boxes_voc - [1, 1, 0, 0], [o[0] for o in objects],
                            [o[2] for o in objects], boxes_voc)


def voc_dets(rows):
    """rows: (image id, score, VOC box)."""
    return ClassDetections.from_voc([r[0] for r in rows], np.array([r[1] for r in rows]),
                                    np.array([r[2] for r in rows], dtype=np.float64))


GROUND_TRUTH = [
    gt_record("a", [(0, (1, 1, 10, 10), False), (1, (21, 1, 30, 10), False),
                    (2, (41, 1, 50, 10), False), (0, (61, 1, 70, 10), True)]),
    gt_record("b", []),
]
# cat detections, best first, and the type each must get:
CAT = [
    ("a", 0.97, (21, 1, 30, 10)),   # exactly the dog: similar (animals)
    ("b", 0.96, (1, 1, 10, 10)),    # an image without objects: background
    ("a", 0.95, (1, 1, 10, 10)),    # the cat: true positive
    ("a", 0.90, (1, 1, 10, 10)),    # again: duplicate -> localization
    ("a", 0.85, (1, 1, 10, 4)),     # overlap 40/100 = 0.4 with the cat: localization
    ("a", 0.75, (41, 1, 50, 10)),   # exactly the car: other
    ("a", 0.65, (1, 1, 10, 1)),     # overlap 10/100 = 0.1 exactly: localization
    ("a", 0.60, (1, 1, 5, 1)),      # overlap 5/100 = 0.05: background
    ("a", 0.55, (61, 1, 70, 10)),   # the difficult cat: ignored, not a false positive
]
EXPECTED_TYPES = ["similar", "background", "correct", "localization", "localization", "other",
                  "localization", "background", "ignored"]


def test_hand_built_case_every_type():
    detections = {"cat": voc_dets(CAT)}
    evaluation = evaluate_detections(GROUND_TRUTH, detections, CLASSES)
    cat = evaluation.per_class[0]
    assert (cat.n_true_positives, cat.n_false_positives, cat.n_ignored) == (1, 7, 1)
    result = analyse_false_positives(GROUND_TRUTH, detections, evaluation)
    assert result.class_groups == {"animals": ("cat", "dog")}  # a one-class group is none
    analysis = result.per_class[0]
    assert list(analysis.outcome) == EXPECTED_TYPES
    assert analysis.counts == {"localization": 3, "similar": 1, "other": 1, "background": 2}
    assert sum(analysis.counts.values()) == cat.n_false_positives == 7
    assert analysis.n_duplicates == 1
    # AP by hand: the true positive is third (precision 1/3 at recall 1) -> 1/3 in every
    # 11-point threshold. Without the similar (or the background) false positives it is
    # second -> 1/2; without localization or other errors (all after it) still 1/3.
    assert cat.ap == pytest.approx(1 / 3, abs=1e-12)
    assert analysis.ap_without == pytest.approx(
        {"localization": 1 / 3, "similar": 1 / 2, "other": 1 / 3, "background": 1 / 2},
        abs=1e-12)
    top = analysis.top
    assert [fp.rank for fp in top] == [1, 2, 4, 5, 6, 7, 8]
    assert (top[0].fp_type, top[0].object_class, top[0].overlap) == ("similar", "dog", 1.0)
    assert (top[1].fp_type, top[1].object_class, top[1].overlap) == ("background", None,
                                                                     -math.inf)
    assert top[2].duplicate and top[2].overlap == 1.0
    assert top[3].overlap == 0.4 and top[3].object_box_voc == (1, 1, 10, 10)
    assert not top[3].duplicate
    assert top[5].overlap == 0.1
    # the classes without detections have no false positives
    assert [c.n_false_positives for c in result.per_class[1:]] == [0, 0]
    content = result.to_dict()
    json.dumps(content, allow_nan=False)
    assert content["totals"] == analysis.counts and content["n_false_positives"] == 7


def test_without_class_groups_similar_becomes_other():
    detections = {"cat": voc_dets(CAT)}
    evaluation = evaluate_detections(GROUND_TRUTH, detections, CLASSES)
    result = analyse_false_positives(GROUND_TRUTH, detections, evaluation, class_groups={})
    assert result.per_class[0].counts == {"localization": 3, "similar": 0, "other": 2,
                                          "background": 2}
    assert similar_class_groups(["RBC", "WBC", "Platelets"]) == {}
    assert similar_class_groups(["cat", "dog", "car", "bus", "person"]) == {
        "animals": ("cat", "dog"), "vehicles": ("bus", "car")}
    with pytest.raises(ConfigError, match="not evaluated"):
        analyse_false_positives(GROUND_TRUTH, detections, evaluation,
                                class_groups={"pets": ("cat", "hamster")})


def devkit_overlap(bb, g):
    bi = [max(bb[0], g[0]), max(bb[1], g[1]), min(bb[2], g[2]), min(bb[3], g[3])]
    iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
    if iw <= 0 or ih <= 0:
        return -math.inf
    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) \
        - iw * ih
    return iw * ih / ua


def reference_types(ground_truth, class_index, detections, similar_to):
    """Plain loops: the devkit's assignment, then each false positive's type."""
    order = sorted(range(len(detections)), key=lambda k: -detections.scores[k])
    by_image = {r.image_id: r for r in ground_truth}
    taken = set()
    out = []
    for k in order:
        record = by_image[detections.image_ids[k]]
        box = list(detections.boxes_voc[k])
        best, best_j = -math.inf, None
        for j, (g, label) in enumerate(zip(record.boxes_voc, record.labels)):
            if label == class_index:
                ov = devkit_overlap(box, list(g))
                if ov > best:
                    best, best_j = ov, j
        if best >= 0.5:
            if record.difficult[best_j]:
                out.append("ignored")
            elif (record.image_id, best_j) not in taken:
                taken.add((record.image_id, best_j))
                out.append("correct")
            else:
                out.append("localization")
            continue
        if best >= 0.1:
            out.append("localization")
            continue
        sim = oth = -math.inf
        for g, label in zip(record.boxes_voc, record.labels):
            if label == class_index:
                continue
            ov = devkit_overlap(box, list(g))
            if label in similar_to:
                sim = max(sim, ov)
            else:
                oth = max(oth, ov)
        out.append("similar" if sim >= 0.1 else "other" if oth >= 0.1 else "background")
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_reference_and_add_up(seed):
    rng = np.random.default_rng(seed)
    ground_truth, detections = [], {name: [] for name in CLASSES}
    for i in range(int(rng.integers(1, 8))):
        objects = []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.integers(1, 60, 2)
            w, h = rng.integers(1, 25, 2)
            objects.append((int(rng.integers(0, 3)), (x, y, x + w - 1, y + h - 1),
                            bool(rng.random() < 0.15)))
        ground_truth.append(gt_record(f"im{i}", objects))
        for _ in range(int(rng.integers(0, 20))):
            if objects and rng.random() < 0.7:
                base = np.array(objects[int(rng.integers(0, len(objects)))][1], float)
                box = base + rng.normal(0, 3, 4)
                box[2:] = np.maximum(box[2:], box[:2])
            else:
                x, y = rng.uniform(1, 60, 2)
                box = np.array([x, y, x + rng.uniform(0, 25), y + rng.uniform(0, 25)])
            name = CLASSES[int(rng.integers(0, 3))]
            detections[name].append((f"im{i}", float(rng.integers(0, 6)) / 5, tuple(box)))
    by_class = {n: voc_dets(rows) if rows else ClassDetections.empty()
                for n, rows in detections.items()}
    for metric in ("11point", "area"):
        evaluation = evaluate_detections(ground_truth, by_class, CLASSES, metric=metric)
        result = analyse_false_positives(ground_truth, by_class, evaluation)
        for c, (res, ana) in enumerate(zip(evaluation.per_class, result.per_class)):
            assert sum(ana.counts.values()) == ana.n_false_positives == res.n_false_positives
            similar_to = {1} if c == 0 else {0} if c == 1 else set()  # cat ~ dog
            expected = reference_types(ground_truth, c, by_class[CLASSES[c]], similar_to)
            assert list(ana.outcome) == expected, (seed, c)
        assert sum(result.totals.values()) == sum(r.n_false_positives
                                                  for r in evaluation.per_class)


def test_figures(tmp_path: Path):
    detections = {"cat": voc_dets(CAT)}
    evaluation = evaluate_detections(GROUND_TRUTH, detections, CLASSES)
    result = analyse_false_positives(GROUND_TRUTH, detections, evaluation)
    for path in (plot_fp_types(result, tmp_path / "types.png"),
                 plot_ap_impact(result, tmp_path / "impact.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = []

    def load(image_id):
        loaded.append(image_id)
        return np.full((40, 80, 3), 128, np.uint8)

    drawn = plot_top_false_positives(result.per_class[0], load, tmp_path / "top.png")
    assert drawn is not None and drawn.stat().st_size > 0
    assert loaded == [fp.image_id for fp in result.per_class[0].top]
    assert plot_top_false_positives(result.per_class[1], load, tmp_path / "none.png") is None
    assert FP_TYPES == ("localization", "similar", "other", "background")
