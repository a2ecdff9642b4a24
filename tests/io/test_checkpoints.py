"""The one checkpoint helper: round trip, atomic writes, and the refusal of other formats,
newer versions, other runs and truncated or foreign files."""

import pickle
import threading

import pytest
import torch

from sppdet.errors import ModelError, Remedy, StaleArtifactError
from sppdet.io.checkpoints import (
    load_checkpoint,
    load_training_state,
    read_checkpoint,
    save_checkpoint,
)

FORMAT = "sppdet-test-checkpoint"


def _payload():
    return {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)},
            "iteration": 7, "history": [{"loss": 0.5}], "name": "x"}


def _load(path, **kwargs):
    options = dict(format=FORMAT, version=2, what="test checkpoint")
    options.update(kwargs)
    return load_checkpoint(path, **options)


def test_round_trip_keeps_the_payload_and_adds_the_tags(tmp_path):
    path = tmp_path / "sub" / "state.pt"
    assert save_checkpoint(path, _payload(), format=FORMAT, version=2, identity="run-a") == path
    blob = _load(path, identity="run-a")
    assert (blob["format"], blob["version"], blob["identity"]) == (FORMAT, 2, "run-a")
    assert torch.equal(blob["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert blob["iteration"] == 7 and blob["history"] == [{"loss": 0.5}] and blob["name"] == "x"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.pt"]  # no temporaries
    # without an identity to check, any run's file is accepted; a file saved without one has none
    assert _load(path)["identity"] == "run-a"
    save_checkpoint(path, _payload(), format=FORMAT, version=2)
    assert "identity" not in _load(path)


def test_other_format_is_refused_naming_both(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, _payload(), format="sppdet-something-else", version=1)
    with pytest.raises(ModelError, match=r"a.pt is not an sppdet test checkpoint \(format "
                                         r"'sppdet-something-else', expected "
                                         r"'sppdet-test-checkpoint'\); do this"):
        _load(path, hint="; do this")
    untagged = tmp_path / "untagged.pt"
    torch.save({"model": {}}, untagged)
    with pytest.raises(ModelError, match="no format tag"):
        _load(untagged)


def test_newer_version_is_refused_and_older_ones_are_read(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, _payload(), format=FORMAT, version=3)
    with pytest.raises(ModelError, match=r"version 3 is newer than this sppdet reads \(2\); "
                                         r"upgrade sppdet"):
        _load(path)
    save_checkpoint(path, _payload(), format=FORMAT, version=1)
    assert _load(path)["version"] == 1
    old = tmp_path / "old.pt"  # written before the version tag: reads as version 0
    torch.save({"format": FORMAT, "iteration": 1}, old)
    assert _load(old)["iteration"] == 1
    bad = tmp_path / "bad.pt"
    torch.save({"format": FORMAT, "version": "2"}, bad)
    with pytest.raises(ModelError, match="malformed version '2'"):
        _load(bad)


def test_another_run_is_refused(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, _payload(), format=FORMAT, version=2, identity="run-a")
    with pytest.raises(StaleArtifactError, match=r"state.pt is a test checkpoint of a run "
                                                 r"with other settings or inputs; rerun with "
                                                 r"x=1") as err:
        _load(path, identity="run-b", identity_remedy=Remedy.rerun(x=1))
    assert err.value.remedy == Remedy.rerun(x=1)
    save_checkpoint(path, _payload(), format=FORMAT, version=2)  # no identity stored
    with pytest.raises(StaleArtifactError):
        _load(path, identity="run-a")


def test_training_state_messages_say_how_to_resume_or_start_over(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, _payload(), format=FORMAT, version=1, identity="run-a")
    assert load_training_state(path, format=FORMAT, version=1, what="training state",
                               identity="run-a")["iteration"] == 7
    with pytest.raises(StaleArtifactError, match="rerun with those settings to resume it, or "
                                                 "rerun with force=True to start over"):
        load_training_state(path, format=FORMAT, version=1, what="training state",
                            identity="run-b")
    with pytest.raises(ModelError, match="delete it, or rerun with force=True"):
        load_training_state(path, format="other", version=1, what="training state",
                            identity="run-a")


def test_truncated_foreign_missing_and_non_dict_files_are_refused(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, _payload(), format=FORMAT, version=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="state.pt: cannot read the checkpoint"):
        _load(path)
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="cannot read"):
        _load(path)
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps({"format": FORMAT}))  # a pickle, not a torch file
    with pytest.raises(ModelError, match="cannot read"):
        _load(foreign)
    with pytest.raises(ModelError, match=r"missing.pt: test checkpoint not found; make it"):
        _load(tmp_path / "missing.pt", missing_hint="; make it")
    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(ModelError, match="holds a list, not a dict"):
        read_checkpoint(listed, what="test checkpoint")


def test_a_failed_save_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    save_checkpoint(path, _payload(), format=FORMAT, version=2, identity="old")
    with pytest.raises(TypeError, match="pickle"):
        save_checkpoint(path, {"model": threading.Lock()}, format=FORMAT, version=2)
    assert _load(path)["identity"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_payload_may_not_overwrite_the_tags(tmp_path):
    with pytest.raises(ValueError, match=r"\['format', 'version'\]"):
        save_checkpoint(tmp_path / "a.pt", {"format": "x", "version": 9}, format=FORMAT,
                        version=1)
    assert not (tmp_path / "a.pt").exists()
