"""Recipes (the base settings chosen for the machine) and the pipeline's plan (time, disk,
the refusal when the disk is too small)."""

from __future__ import annotations

import dataclasses
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.errors import ConfigError, StorageError
from sppdet.io.item_store import ItemStore
from sppdet.io.records import Record
from sppdet.stages import plan as plan_module
from sppdet.stages import planning, recipes
from sppdet.stages.pipeline_config import PipelineConfig, resolve_config
from sppdet.stages.plan import SplitFacts, build_plan, cache_bytes, check_disk
from sppdet.training.finetune.config import FinetuneConfig

from .conftest import make_voc_dataset

Usage = namedtuple("Usage", "total used free")


def cpu(_name: str) -> str:
    return "cpu"


def cuda(_name: str) -> str:
    return "cuda"


# --- recipe resolution -------------------------------------------------------------------------


def test_auto_is_cpu_on_the_cpu_and_paper_on_a_gpu() -> None:
    assert resolve_config([], cpu).recipe.name == "cpu"
    assert resolve_config([], cuda).recipe.name == "paper"
    assert "the device is cuda" in resolve_config([], cuda).recipe.reason


def test_auto_asks_for_the_type_of_the_configured_device() -> None:
    asked = []
    resolve_config([("--device", {"device": "cuda:1"})], lambda name: asked.append(name) or "cuda")
    assert asked == ["cuda:1"]
    # an explicit recipe needs no device
    resolve_config([("--recipe", {"recipe": "paper"})], lambda name: pytest.fail("asked"))


def test_paper_is_todays_defaults_field_by_field() -> None:
    config = resolve_config([("--recipe", {"recipe": "paper"})], cpu).config
    defaults = PipelineConfig()
    for field in dataclasses.fields(PipelineConfig):
        if field.name != "recipe":
            assert getattr(config, field.name) == getattr(defaults, field.name), field.name
    assert config.recipe == "paper"
    assert config.finetune.iterations == 90_000 and config.finetune.hidden == 4096
    assert config.cache_features.scales == (480, 576, 688, 864, 1200)


def test_the_cpu_recipe() -> None:
    resolved = resolve_config([], cpu)
    config = resolved.config
    assert config.recipe == "cpu"
    assert config.cache_features.scales == (688,) and config.cache_features.flip
    assert config.finetune.hidden == 1024 and config.finetune.lr == 0.01
    assert config.finetune_epochs == recipes.CPU_EPOCHS
    assert config.propose.method == "edgeboxes" != PipelineConfig().propose.method
    # the SVM, box regression and detection settings and the box count stay the declared ones
    defaults = PipelineConfig()
    assert (config.train_svm, config.train_bbox_reg, config.detect) == (
        defaults.train_svm, defaults.train_bbox_reg, defaults.detect)
    assert config.propose.max_boxes == defaults.propose.max_boxes
    assert resolved.sources["finetune.hidden"] == "recipe cpu"


def test_the_file_and_the_options_override_the_recipe() -> None:
    layers = [("my.yaml", {"cache_features": {"scales": [480, 688]},
                           "finetune": {"lr": 0.02}}),
              ("--scales", {"cache_features": {"scales": (600,)}})]
    resolved = resolve_config(layers, cpu)
    config = resolved.config
    assert config.cache_features.scales == (600,)  # the option beats the file
    assert config.finetune.lr == 0.02  # the file beats the recipe
    assert config.finetune.hidden == 1024  # the recipe's where nobody else says
    assert resolved.sources["cache_features.scales"] == "--scales"
    assert resolved.sources["finetune.lr"] == "my.yaml"


def test_the_recipe_key_of_the_file_and_the_option() -> None:
    assert resolve_config([("f.yaml", {"recipe": "paper"})], cpu).recipe.name == "paper"
    layers = [("f.yaml", {"recipe": "paper"}), ("--recipe", {"recipe": "cpu"})]
    assert resolve_config(layers, cuda).recipe.name == "cpu"
    with pytest.raises(ConfigError, match="f.yaml: unknown recipe 'fast'"):
        resolve_config([("f.yaml", {"recipe": "fast"})], cpu)


def test_explicit_iterations_replace_the_recipes_epochs() -> None:
    resolved = resolve_config([("--iterations", {"finetune": {"iterations": 900}})], cpu)
    assert resolved.config.finetune.iterations == 900
    assert resolved.config.finetune_epochs is None
    with pytest.raises(ConfigError, match="both give the fine-tuning length"):
        resolve_config([("f.yaml", {"finetune_epochs": 2}),
                        ("--iterations", {"finetune": {"iterations": 900}})], cpu)
    # epochs from a file with the paper recipe
    resolved = resolve_config([("f.yaml", {"recipe": "paper", "finetune_epochs": 2})], cpu)
    assert resolved.config.finetune_epochs == 2.0


# --- fine-tuning length by epochs --------------------------------------------------------------


def test_epoch_iterations_hand_computed() -> None:
    config = FinetuneConfig()  # batch 128, 25 % positives: 32 per mini-batch
    # BCCD's train split: 35,700 positive windows; 3 epochs = 107,100 / 32 = 3,346.9
    assert recipes.epoch_iterations(35_700, 3.0, config) == 3347
    assert recipes.epoch_iterations(100, 3.0, config) == recipes.MIN_EPOCH_ITERATIONS
    assert recipes.epoch_iterations(10**9, 3.0, config) == recipes.MAX_EPOCH_ITERATIONS
    assert recipes.epoch_iterations(0, 3.0, config) == recipes.MIN_EPOCH_ITERATIONS
    half = dataclasses.replace(config, fg_fraction=0.5)  # 64 per mini-batch
    assert recipes.epoch_iterations(64_000, 1.0, half) == 1000


def test_epochs_scale_the_intervals_unless_given() -> None:
    config = FinetuneConfig()
    length = recipes.finetune_length(config, 3.0, positives=lambda: 35_700, objects=0)
    assert length.exact and length.config.iterations == 3347
    assert length.config.val_every == length.config.checkpoint_every == 1116  # ceil(3347 / 3)
    kept = recipes.finetune_length(config, 3.0, positives=lambda: 35_700, objects=0,
                                   keep=frozenset({"val_every"}))
    assert kept.config.val_every == 1000 and kept.config.checkpoint_every == 1116
    estimate = recipes.finetune_length(config, 3.0, positives=None, objects=1000)
    # 1,000 objects x 16 = 16,000 windows; 3 epochs / 32 per batch = 1,500
    assert not estimate.exact and estimate.config.iterations == 1500
    assert "about 16,000 positive windows" in estimate.reason
    as_given = recipes.finetune_length(config, None, positives=None, objects=5)
    assert as_given.config == config


def test_positive_windows_are_counted_as_finetuning_labels_them(tmp_path) -> None:
    data = make_voc_dataset(tmp_path / "d", {
        "a": [{"name": "cell", "box": (1, 1, 10, 10)}],  # xyxy (0, 0, 10, 10)
        "b": [],
    }, split="train")
    proposals = tmp_path / "p.h5"
    boxes = {"a": np.array([[0, 0, 10, 10],    # IoU 1: positive
                            [0, 0, 10, 5],     # IoU 0.5: positive (>=)
                            [0, 0, 10, 4],     # IoU 0.4: negative
                            [30, 30, 40, 40]],  # IoU 0: neither
                           np.float32),
             "b": np.array([[0, 0, 5, 5]], np.float32)}
    with ItemStore(proposals, Record("propose", {"method": "hand"})) as store:
        for image_id, b in boxes.items():
            store.write(image_id, {"boxes": b}, {"width": 64, "height": 48})
        store.finalize(list(boxes))
    config = FinetuneConfig()
    # the ground-truth box itself, then the two proposals at IoU >= 0.5
    assert recipes.count_positive_windows(data, "train", proposals, config) == 3
    no_gt = dataclasses.replace(config, include_gt=False)
    assert recipes.count_positive_windows(data, "train", proposals, no_gt) == 2


# --- the plan's numbers ------------------------------------------------------------------------


def _facts(split: str) -> SplitFacts:
    # trainval: 10 images of 640 x 480 with 3 objects each; test: 4 images
    n = {"trainval": 10, "test": 4}[split]
    return SplitFacts(images=n, sizes=[(480, 640)] * n, objects=3 * n)


def test_cache_bytes_hand_computed() -> None:
    # 480 x 640 at 688: 688 x 917 pixels (917.33 rounded), 43 x 58 cells of 16 pixels,
    # x 112 channels x 2 bytes = 558,656 bytes; lzf saves nothing on EfficientNet (measured)
    one = cache_bytes([(480, 640)], (688,), backbone="efficientnet_lite0", flip=False,
                      dtype="float16", compression="lzf")
    assert one == 43 * 58 * 112 * 2 == 558_656
    assert cache_bytes([(480, 640)] * 3, (688,), backbone="efficientnet_lite0", flip=True,
                       dtype="float32", compression="none") == 3 * 2 * 2 * one
    # ZF-5: 256 channels, lzf keeps 60 % of the raw bytes (measured)
    zf = cache_bytes([(480, 640)], (688,), backbone="zf5", flip=False, dtype="float16",
                     compression="lzf")
    assert zf == int(43 * 58 * 256 * 2 * 0.6)


def test_plan_numbers_on_a_fake_dataset(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100e9, 50e9, 50e9))
    config = resolve_config([("--jobs", {"jobs": 2}), ("--method", {"propose": {
        "method": "edgeboxes"}})], cpu).config
    plan = build_plan(tmp_path, tmp_path / "work", config, device_type="cpu",
                      recipe="cpu", recipe_reason="test", sources={}, finetune_note="",
                      finetune_iterations=600, facts=_facts,
                      classes=2)
    by = {s.stage: s for s in plan.stages}
    # EdgeBoxes 0.17 s per image per worker: 10 images / 2 jobs
    assert by["propose trainval"].seconds == pytest.approx(10 * 0.17 / 2)
    assert by["propose trainval"].bytes == 10 * (2000 * 16 + 512)
    # EfficientNet conv5 at 688: 0.455 x ZF-5's 0.200 s per pass; trainval with flips
    assert by["cache-features trainval"].seconds == pytest.approx(10 * 2 * 0.200 * 0.455)
    assert by["cache-features test"].seconds == pytest.approx(4 * 0.200 * 0.455)
    assert by["cache-features trainval"].bytes == 10 * 2 * 558_656
    assert by["cache-features test"].bytes == 4 * 558_656
    # fine-tuning: 11 ms pooling + 39 ms fc at 5,600 -> 1,024 (the measured reference)
    assert by["finetune"].seconds == pytest.approx(600 * 0.050)
    # train-svm 0.25 s per image per 1,000 boxes; detect (0.075 + 0.06) per 1,000 boxes
    assert by["train-svm"].seconds == pytest.approx(10 * 0.25 * 2)
    assert by["train-bbox-reg"].seconds == pytest.approx(10 * 0.1)
    assert by["detect"].seconds == pytest.approx(4 * 2 * 0.135)
    assert by["detect"].bytes == 4 * 50_000
    assert plan.seconds == pytest.approx(sum(s.seconds for s in plan.stages))
    # fc6, fc7 and fc8 (2 classes + background), float32, 3 copies (model, checkpoint, best)
    assert by["finetune"].bytes == 3 * 4 * (5600 * 1024 + 1024 * 1024 + 1024 * 3) == 81_432_576
    # the largest artifact counts twice (a per-image stage's parts and merged file)
    assert plan.needed_bytes == plan.new_bytes + 81_432_576
    assert plan.free_bytes == 50e9
    text = plan.to_text()
    assert "propose trainval" in text and "edgeboxes, 2,000 boxes per image, 2 jobs" in text
    # the tune step: selection SVMs and box regressors on 6 fine-tuning images, detection of
    # 4 validation images (SVM and softmax candidates from one pass); detect follows it
    tuned = build_plan(tmp_path, tmp_path / "work", config, device_type="cpu", recipe="cpu",
                       recipe_reason="test", sources={}, finetune_note="",
                       finetune_iterations=600, facts=_facts, classes=2, tune_images=(6, 4))
    stages = [s.stage for s in tuned.stages]
    assert stages.index("tune") == stages.index("detect") - 1
    tune = tuned.stages[stages.index("tune")]
    assert tune.seconds == pytest.approx(6 * (0.25 * 2 + 0.1) + 4 * 2 * 0.135)
    assert "NMS per class from the tune step" in tuned.to_text()


def test_five_scales_and_a_gpu_scale_the_costs(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100e9, 50e9, 50e9))
    config = resolve_config([], cuda).config  # the paper recipe: five scales, hidden 4,096
    plan = build_plan(tmp_path, tmp_path / "work", config, device_type="cuda",
                      recipe="paper", recipe_reason="test", sources={}, finetune_note="",
                      finetune_iterations=90_000, facts=_facts,
                      classes=2)
    by = {s.stage: s for s in plan.stages}
    area = sum((s / 688) ** 2 for s in (480, 576, 688, 864, 1200))  # 6.807
    # the paper's GPU: ZF-5 conv 0.053 s per image at one scale
    assert by["cache-features test"].seconds == pytest.approx(4 * area * 0.053 * 0.455)
    # fine-tuning: 80 ms per iteration at ZF-5's 12,800 -> 4,096; EfficientNet's 5,600 inputs
    ratio = (5600 * 4096 + 4096**2) / (12800 * 4096 + 4096**2)
    assert by["finetune"].seconds == pytest.approx(90_000 * 0.080 * ratio)


def test_up_to_date_stages_cost_nothing_and_a_stale_input_reruns_what_follows(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100e9, 50e9, 50e9))
    config = resolve_config([], cpu).config
    current = {"propose trainval", "propose test", "cache-features trainval",
               "cache-features test", "finetune", "train-svm", "detect", "eval"}
    plan = build_plan(tmp_path, tmp_path / "work", config, device_type="cpu", recipe="cpu",
                      recipe_reason="test", sources={}, finetune_note="",
                      finetune_iterations=600, facts=_facts,
                      classes=2, is_current=lambda stage: stage in current)
    state = {s.stage: s.up_to_date for s in plan.stages}
    # train-bbox-reg is not current, so detect (which reads it) and eval run again
    assert state == {"propose trainval": True, "propose test": True,
                     "cache-features trainval": True, "cache-features test": True,
                     "finetune": True, "train-svm": True, "train-bbox-reg": False,
                     "detect": False, "eval": False}
    assert plan.seconds == pytest.approx(sum(s.seconds for s in plan.stages
                                             if s.stage in ("train-bbox-reg", "detect",
                                                            "eval")))
    assert "up to date" in plan.to_text()


# --- refusing early ----------------------------------------------------------------------------


def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    objects = [{"name": "cell", "box": (5, 5, 30, 30)}]
    make_voc_dataset(root, {"a": objects, "b": objects}, split="trainval")
    make_voc_dataset(root, {"c": objects}, split="test")
    return root


def test_check_disk_names_needed_and_free() -> None:
    plan = plan_module.Plan(recipe="cpu", recipe_reason="", device_type="cpu",
                            stages=[plan_module.PlannedStage("cache-features trainval", "",
                                                             bytes=3_000_000_000)],
                            free_bytes=2_000_000_000, work_dir=Path("/w"))
    with pytest.raises(StorageError, match=r"needs about 6.0 GB in /w but only 2.0 GB are free"):
        check_disk(plan)
    plan.free_bytes = 6_000_000_000
    check_disk(plan)  # fits exactly


def test_the_pipeline_refuses_before_any_stage_when_the_disk_is_too_small(
        tmp_path, monkeypatch) -> None:
    data = _voc(tmp_path)
    work = tmp_path / "work"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 1000))
    result = CliRunner().invoke(cli, ["-w", str(work), "pipeline", str(data), "--device",
                                      "cpu"])
    assert result.exit_code == 1, result.output
    assert "needs about" in result.output and "0.0 GB are free" in result.output
    assert "nothing was run" in result.output
    assert "Plan (recipe cpu" in result.output  # the plan was printed first
    assert not work.exists()  # nothing written


def test_plan_only_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch) -> None:
    data = _voc(tmp_path)
    work = tmp_path / "work"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, 10**12))
    result = CliRunner().invoke(cli, ["-w", str(work), "pipeline", str(data), "--device",
                                      "cpu", "--plan-only", "--iterations", "700"])
    assert result.exit_code == 0, result.output
    assert "700 iterations" in result.output and "why: iterations: --iterations" in result.output
    assert "scale 688, with flips" in result.output  # the cpu recipe on the CPU
    assert "why: scales, flip: recipe cpu" in result.output
    assert not work.exists()
    paper = CliRunner().invoke(cli, ["-w", str(work), "pipeline", str(data), "--device",
                                     "cpu", "--dry-run", "--recipe", "paper"])
    assert paper.exit_code == 0, paper.output
    assert "scales 480, 576, 688, 864, 1200, with flips" in paper.output
    assert "90,000 iterations" in paper.output


def test_no_tune_leaves_the_tune_step_out_of_the_plan(tmp_path, monkeypatch) -> None:
    data = _voc(tmp_path)
    objects = [{"name": "cell", "box": (5, 5, 30, 30)}]
    make_voc_dataset(data, {"a": objects}, split="train")  # fine-tuning holds out val: tune
    make_voc_dataset(data, {"b": objects}, split="val")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, 10**12))
    runs = {}
    for flags in ([], ["--no-tune"], ["--tune"]):
        result = CliRunner().invoke(cli, ["-w", str(tmp_path / "work"), "pipeline", str(data),
                                          "--device", "cpu", "--plan-only", *flags])
        assert result.exit_code == 0, result.output
        runs[" ".join(flags)] = result.output

    def has_tune(text: str) -> bool:
        return any(line.split()[:1] == ["tune"] for line in text.splitlines())

    assert has_tune(runs[""]) and has_tune(runs["--tune"])  # on by default (a val split exists)
    assert not has_tune(runs["--no-tune"])
    assert "NMS per class from the tune step" not in runs["--no-tune"]


def test_help_shows_the_recipes_and_the_default() -> None:
    result = CliRunner().invoke(cli, ["pipeline", "--help"])
    assert result.exit_code == 0
    assert "[auto|paper|cpu]" in result.output
    assert "else auto]" in " ".join(result.output.split())
    assert "--plan-only, --dry-run" in result.output


def test_the_backbone_table_matches_the_trunks() -> None:
    from sppdet.backbones import BACKBONES

    for name, (channels, stride, _cost, _relu) in plan_module.BACKBONES.items():
        trunk = BACKBONES[name]
        assert (trunk.out_channels, trunk.stride) == (channels, stride), name
    assert set(plan_module.BACKBONES) == set(BACKBONES)


def test_matches_reads_the_records(tmp_path) -> None:
    data = make_voc_dataset(tmp_path / "d", {"a": []}, split="train")
    del data
    upstream, downstream = tmp_path / "up.h5", tmp_path / "down.h5"
    from sppdet.io.records import write_artifact

    with write_artifact(upstream, Record("propose", {"method": "x"})) as tmp:
        tmp.write_bytes(b"1")
    from sppdet.io.records import input_ref

    record = Record("finetune", {"config": {"iterations": 600, "lr": 0.01}},
                    inputs={"proposals_train": input_ref(upstream)})
    with write_artifact(downstream, record) as tmp:
        tmp.write_bytes(b"2")
    expected = planning.Expected(downstream, {"config": {"iterations": 600}},
                                 {"proposals_train": upstream})
    assert planning.matches(expected)
    assert not planning.matches(dataclasses.replace(expected, params={"config": {
        "iterations": 601}}))
    assert not planning.matches(dataclasses.replace(expected, path=tmp_path / "none.h5"))
    # the input was remade with other settings: its digest changed
    with write_artifact(upstream, Record("propose", {"method": "y"})) as tmp:
        tmp.write_bytes(b"1")
    assert not planning.matches(expected)
