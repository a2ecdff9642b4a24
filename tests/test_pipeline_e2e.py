"""The whole pipeline on tiny synthetic data, and its make-like staleness rules."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from sppdet.io.records import read_record
from sppdet.cli import cli
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.detector.detections_io import DetectionsReader
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.stages import pipeline, planning
from sppdet.stages.layout import dataset_tag
from sppdet.stages.pipeline import CacheOptions, PipelineConfig, ProposeOptions

pytestmark = pytest.mark.slow  # a whole pipeline: about a minute of CPU

TINY = PipelineConfig(
    name="tiny", jobs=1, device="cpu",
    propose=ProposeOptions(max_boxes=150, max_size=200, min_size=6.0),
    cache_features=CacheOptions(backbone="efficientnet_lite0", scales=(160,), flip=True),
    finetune=FinetuneConfig(iterations=100, hidden=128, batch_size=32, val_every=50,
                            checkpoint_every=50, log_every=50),
)
# Two classes of clear, mid-sized shapes: small enough for CI (about a minute), yet a pipeline
# that learns reaches 0.6-0.75 mAP on it (seeds 3 and 4), while one that does not stays near 0.
TINY_DATA = DemoDataConfig(n_trainval=16, n_test=8, n_classes=2, image_width=200,
                           image_height=150, min_object_size=40, max_object_size=100,
                           tiny_fraction=0.0, seed=3)
MAP_FLOOR = 0.35


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    make_demo_data(data, TINY_DATA)
    work = root / "work"
    stages = []
    summary = pipeline.run(data, work, TINY, on_stage=stages.append)
    return data, work, summary, stages


def test_every_stage_runs_and_eval_reports_map(tiny_run):
    data, work, summary, stages = tiny_run
    names = [s.stage for s in stages]
    assert names == ["propose trainval", "propose test", "cache-features trainval",
                     "cache-features test", "finetune", "train-svm", "train-bbox-reg", "tune",
                     "detect", "eval"]
    assert not any(s.up_to_date for s in stages)
    report = summary.eval_summary.report
    assert len(report["classes"]) == 2
    # a change that breaks learning (features, fine-tuning, SVMs, boxes, NMS) fails here
    assert report["mean_ap"] >= MAP_FLOOR, report["classes"]
    with DetectionsReader(summary.detections) as reader:
        assert len(reader.image_ids()) == 8
    assert list((work / "eval").rglob("report.md")) and list((work / "eval").rglob("pr_*.png"))
    comp4 = list(work.rglob("comp4_det_test_*.txt"))
    assert len(comp4) == 2


def test_rerun_skips_everything(tiny_run):
    data, work, _, _ = tiny_run
    stages = []
    pipeline.run(data, work, TINY, on_stage=stages.append)
    assert all(s.up_to_date for s in stages), [s.stage for s in stages if not s.up_to_date]


def test_the_plan_forecasts_which_stages_run(tiny_run):
    data, work, summary, stages = tiny_run
    assert [s.stage for s in summary.plan.stages] == [s.stage for s in stages]
    assert "planned" in summary.to_text()
    recorded = json.loads((work / "models" / "tiny" / "plan.json").read_text())
    assert [s["stage"] for s in recorded["stages"]] == [s.stage for s in stages]
    detect = dataclasses.replace(TINY.detect, iou_threshold=0.4)
    svm = dataclasses.replace(TINY.train_svm, C=2e-3)
    # the tune step's rule is in its record: the forecast sees a change of confidence
    tune = dataclasses.replace(TINY.tune, confidence=0.0)
    cases = [(TINY, []), (dataclasses.replace(TINY, detect=detect), ["detect", "eval"]),
             (dataclasses.replace(TINY, tune=tune), ["tune", "detect", "eval"]),
             (dataclasses.replace(TINY, detect=detect, train_svm=svm),
              ["train-svm", "tune", "detect", "eval"])]
    for config, expected in cases:
        plan, _ = planning.make_plan(data, work, config, device_type="cpu")
        assert [s.stage for s in plan.stages if not s.up_to_date] == expected
        assert plan.seconds == sum(s.seconds for s in plan.stages if s.stage in expected)
    forced, _ = planning.make_plan(data, work, TINY, device_type="cpu", force=True)
    assert not any(s.up_to_date for s in forced.stages)


def test_changing_one_stage_reruns_it_and_what_follows(tiny_run):
    data, work, _, _ = tiny_run
    changed = dataclasses.replace(TINY, detect=dataclasses.replace(TINY.detect,
                                                                   iou_threshold=0.4))
    stages = []
    pipeline.run(data, work, changed, on_stage=stages.append)
    reran = [s.stage for s in stages if not s.up_to_date]
    assert reran == ["detect", "eval"]
    changed = dataclasses.replace(changed, train_svm=dataclasses.replace(TINY.train_svm,
                                                                         C=2e-3))
    stages = []
    pipeline.run(data, work, changed, on_stage=stages.append)
    reran = [s.stage for s in stages if not s.up_to_date]
    # the test settings belong to the SVMs they were chosen for: choosing again follows
    assert reran == ["train-svm", "tune", "detect", "eval"]


def test_caches_of_two_scale_settings_coexist(tiny_run, tmp_path):
    data, work, _, _ = tiny_run
    pipeline.run(data, work, TINY)  # undo what other tests changed
    two_scales = dataclasses.replace(TINY, name="tiny2", cache_features=dataclasses.replace(
        TINY.cache_features, scales=(128, 160)))
    stages = []
    pipeline.run(data, work, two_scales, on_stage=stages.append)
    assert [s.stage for s in stages if s.up_to_date] == ["propose trainval", "propose test"]
    folder = work / "features" / dataset_tag(data) / "efficientnet_lite0"
    assert sorted(p.name for p in folder.iterdir()) == ["s128-160", "s128-160-flip", "s160",
                                                        "s160-flip"]
    for config in (TINY, two_scales, TINY):
        stages = []
        pipeline.run(data, work, config, on_stage=stages.append)
        assert all(s.up_to_date for s in stages), [s.stage for s in stages if not s.up_to_date]
    # two caches of the test split: detect reads the one made with the settings the model
    # was fine-tuned with (s128-160-flip: the test split's s128-160), unless told otherwise
    detect = ["-w", str(work), "detect", str(data), "--name", "tiny2", "--out",
              str(tmp_path / "test.h5"), "--device", "cpu"]
    for option, variant in (([], "s128-160"), (["--feature-variant", "s160"], "s160")):
        result = CliRunner().invoke(cli, [*detect, *option])
        assert result.exit_code == 0, result.output
        record = read_record(tmp_path / "test.h5")
        assert record.inputs["features"].path == str(folder / variant / "test.h5")


def test_detect_on_image_files_draws_them(tiny_run, tmp_path):
    data, work, _, _ = tiny_run
    image = sorted((data / "JPEGImages").glob("*.jpg"))[0]
    result = CliRunner().invoke(cli, ["-w", str(work), "detect", str(image), "--name", "tiny",
                                      "--out", str(tmp_path / "drawn"), "--scales", "160"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "drawn" / f"{image.stem}.detections.png").exists()
    assert (tmp_path / "drawn" / "detections.json").exists()
    # the model's test settings: its NMS and the operating points chosen on val
    assert "chosen on split 'val'" in result.output
    assert "Kept at the operating points chosen on validation" in result.output


def test_pipeline_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  iterationz: 5\n")
    with pytest.raises(Exception, match="unknown key.*iterationz"):
        pipeline.load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("name: x\nfinetune:\n  iterations: 5\ncache_features:\n  scales: [480]\n")
    config = pipeline.load_config(good)
    assert config.name == "x" and config.finetune.iterations == 5
    assert config.cache_features.scales == (480,)


def test_detect_with_soft_nms_records_it_and_decays_the_candidates(tiny_run, tmp_path):
    import numpy as np

    from sppdet.ops.nms import class_nms

    data, work, summary, _ = tiny_run
    tuned = read_record(summary.detections)
    # the pipeline's detect used the settings chosen on val, class by class (a record of one
    # hard NMS for every class keeps its three old keys: tests/detector/test_detections_io.py)
    assert set(tuned.params["nms"]) == {"iou_threshold", "score_threshold", "max_per_image",
                                        "per_class"}
    assert len(tuned.params["nms"]["per_class"]) == 2
    out = tmp_path / "soft.h5"
    # (another test adds a second cache of the test split: name the variant)
    result = CliRunner().invoke(cli, ["-w", str(work), "detect", str(data), "--name", "tiny",
                                      "--out", str(out), "--device", "cpu",
                                      "--feature-variant", "s160", "--nms", "gaussian",
                                      "--nms-sigma", "0.3"])
    assert result.exit_code == 0, result.output
    record = read_record(out)
    assert (record.params["nms"]["method"], record.params["nms"]["sigma"]) == ("gaussian", 0.3)
    with DetectionsReader(out) as reader:
        for image_id in reader.image_ids():
            final, candidates = reader.detections(image_id), reader.candidates(image_id)
            keep, scores = class_nms(candidates.boxes, candidates.scores, candidates.labels,
                                     method="gaussian", sigma=0.3, max_per_image=100,
                                     score_threshold=record.params["nms"]["score_threshold"])
            np.testing.assert_array_equal(final.boxes, candidates.boxes[keep])
            np.testing.assert_allclose(final.scores, scores.astype(np.float32))
