"""Input paths of fine-tuning by the work-dir layout (moved out of the CLI; issue 13, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sppdet.errors import ConfigError
from sppdet.io.records import record_path
from sppdet.stages.layout import features_path, proposals_path
from sppdet.stages.training_inputs import finetune_inputs


def _dataset(root: Path, *splits: str) -> Path:
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split in splits:
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("img1\n")
    return root


def _finished_cache(work: Path, dataset: Path, split: str, variant: str) -> Path:
    """A feature cache as find_features sees a finished one: the file and its record."""
    path = features_path(work, dataset, split, "zf5", variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    record_path(path).write_text("{}")
    return path


def test_train_and_val_by_default(tmp_path) -> None:
    work, data = tmp_path / "work", _dataset(tmp_path / "voc", "train", "val", "trainval")
    for split in ("train", "val"):
        for variant in ("s48", "s48-flip"):
            _finished_cache(work, data, split, variant)
    inputs = finetune_inputs(work, data, variant="s48-flip", default_backbone="zf5")
    assert (inputs.train_split, inputs.val_split) == ("train", "val")
    assert inputs.train_proposals == proposals_path(work, data, "train", "ss-fast")
    assert inputs.val_proposals == proposals_path(work, data, "val", "ss-fast")
    # the validation cache comes from the training cache's variant folder
    assert inputs.train_features == features_path(work, data, "train", "zf5", "s48-flip")
    assert inputs.val_features == features_path(work, data, "val", "zf5", "s48-flip")
    no_val = finetune_inputs(work, data, variant="s48", validate=False, method="edgeboxes",
                             default_backbone="zf5")
    assert no_val.val_split is None and no_val.val_proposals is no_val.val_features is None
    assert no_val.train_proposals.name == "train.edgeboxes.h5"


def test_without_a_train_split_the_training_split_without_validation(tmp_path) -> None:
    work, data = tmp_path / "work", _dataset(tmp_path / "voc", "trainval", "val", "test")
    _finished_cache(work, data, "trainval", "s48")
    inputs = finetune_inputs(work, data, default_backbone="zf5")
    assert (inputs.train_split, inputs.val_split) == ("trainval", None)
    assert inputs.train_features.parent.name == "s48" and inputs.val_features is None
    # a split given by name is used as it is: validation on val when the dataset has it
    _finished_cache(work, data, "val", "s48")
    named = finetune_inputs(work, data, train_split="trainval", default_backbone="zf5")
    assert (named.train_split, named.val_split) == ("trainval", "val")


def test_inputs_that_decide_the_same_thing_are_exclusive(tmp_path) -> None:
    work, data = tmp_path / "work", _dataset(tmp_path / "voc", "train")
    given = tmp_path / "f.h5"
    for kwargs in ({"proposals": given, "method": "ss-fast"},
                   {"features": given, "backbone": "zf5"},
                   {"features": given, "variant": "s48"}):
        with pytest.raises(ConfigError, match="exclusive") as caught:
            finetune_inputs(work, data, default_backbone="zf5", **kwargs)
        assert "--" not in str(caught.value)


def _artifact(path: Path, record) -> Path:
    from sppdet.io.records import write_artifact

    path.parent.mkdir(parents=True, exist_ok=True)
    with write_artifact(path, record) as tmp:
        tmp.write_bytes(b"x")
    return path


def test_detect_reads_the_proposals_of_the_method_the_model_was_trained_on(tmp_path) -> None:
    """A model fine-tuned on EdgeBoxes detects on EdgeBoxes proposals unless told otherwise;
    the method comes from the proposals' record, or from their file name once moved."""
    from sppdet.io.records import Record, input_ref
    from sppdet.stages.training_inputs import detect_inputs, trained_method

    work, dataset = tmp_path / "work", _dataset(tmp_path / "data", "trainval", "test")
    train = _artifact(proposals_path(work, dataset, "trainval", "edgeboxes"),
                      Record("propose", {"method": "edgeboxes"}))
    fc = _artifact(work / "models" / "m" / "fc.pt", Record(
        "finetune", {"backbone": {"name": "fakenet"}},
        inputs={"proposals_train": input_ref(train, made_by="propose")}))
    assert trained_method(fc) == "edgeboxes"
    proposals, _ = detect_inputs(work, dataset, "test", "m")
    assert proposals == proposals_path(work, dataset, "test", "edgeboxes")
    # an explicit method or file wins
    assert detect_inputs(work, dataset, "test", "m", method="ss-fast")[0] == proposals_path(
        work, dataset, "test", "ss-fast")
    # proposals moved away: the name <split>.<method>.h5 still tells
    train.rename(train.with_name("elsewhere.h5"))
    record_path(train).unlink()
    assert trained_method(fc) == "edgeboxes"
    # no checkpoint, or a checkpoint whose record names no proposals: the default method
    assert trained_method(work / "models" / "none" / "fc.pt") is None
    bare = _artifact(work / "models" / "b" / "fc.pt", Record("finetune", {}))
    assert trained_method(bare) is None
    assert detect_inputs(work, dataset, "test", "b", features=tmp_path / "f.h5")[0] == \
        proposals_path(work, dataset, "test", "ss-fast")
