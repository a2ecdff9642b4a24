"""The stage skeleton (stages/runner.py): skip when current, lock and log while writing,
commit the artifact with its record, and the per-image summary lines."""

import logging

import numpy as np
import pytest

from sppdet.errors import ArtifactLockedError, StaleArtifactError
from sppdet.io.locks import ArtifactLock
from sppdet.io.records import Record, read_record
from sppdet.stages.runner import StageOutput, item_summary_lines


def test_commit_then_current_unless_forced_or_changed(tmp_path):
    out = tmp_path / "models" / "m" / "svm.npz"
    output = StageOutput(out, Record("train-svm", {"C": 1e-3}))
    assert not output.is_current()
    with output.writing():
        assert output.commit(lambda tmp: tmp.write_bytes(b"data"), summary={"n": 3}) == out
    assert out.read_bytes() == b"data" and read_record(out).summary == {"n": 3}
    assert StageOutput(out, Record("train-svm", {"C": 1e-3})).is_current()
    assert not StageOutput(out, Record("train-svm", {"C": 1e-3}), force=True).is_current()
    assert not StageOutput(out, Record("train-svm", {"C": 1e-2})).is_current()


def test_writing_holds_the_lock_and_logs_to_the_artifact_log(tmp_path):
    out = tmp_path / "fc.pt"
    with StageOutput(out, Record("finetune", {})).writing():
        with pytest.raises(ArtifactLockedError):
            ArtifactLock(out).acquire()
        logging.getLogger("sppdet.test").warning("inside the stage")
    with ArtifactLock(out):  # released on exit
        pass
    assert "inside the stage" in (tmp_path / "fc.pt.log").read_text()


def test_a_failed_commit_leaves_no_record(tmp_path):
    out = tmp_path / "a.npz"
    output = StageOutput(out, Record("s", {}))
    with pytest.raises(RuntimeError, match="crash"):
        with output.writing():
            output.commit(lambda tmp: (_ for _ in ()).throw(RuntimeError("crash")))
    assert not out.exists() and not output.is_current()


def test_item_store_follows_force(tmp_path):
    out = tmp_path / "props.h5"
    with StageOutput(out, Record("propose", {"k": 1})).item_store() as store:
        store.write("a", {"x": np.zeros(2)})
    with pytest.raises(StaleArtifactError, match="partial run"):
        StageOutput(out, Record("propose", {"k": 2})).item_store()
    with StageOutput(out, Record("propose", {"k": 2}), force=True).item_store() as store:
        assert store.pending(["a"]) == ["a"]  # the other run's part was discarded


def test_item_summary_lines():
    assert item_summary_lines({}, True) == []
    assert item_summary_lines({"img1": "unreadable"}, False) == [
        "  failures: 1", "    img1: unreadable",
        "  this shard is done; the artifact is merged when every shard is"]
