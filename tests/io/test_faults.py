"""The fault hook itself: parsing, counting, and each action."""

import errno

import pytest

from sppdet.io.faults import fault_point
from tests.fault_injection import inject, kill_at


def test_unset_does_nothing(monkeypatch):
    monkeypatch.delenv("SPPDET_FAULT", raising=False)
    fault_point("item-write", "propose")  # no exception, no kill


def test_enospc_fires_on_the_nth_passage_of_the_named_stage_only(monkeypatch, tmp_path):
    with inject(monkeypatch, "propose:item-write:3:enospc"):
        fault_point("item-write", "detect")  # another stage: not counted
        fault_point("item-committed", "propose")  # another point: not counted
        fault_point("item-write", "propose")
        fault_point("item-write", "propose")
        with pytest.raises(OSError) as caught:
            fault_point("item-write", "propose", tmp_path / "x.h5")
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(
            tmp_path / "x.h5")
        fault_point("item-write", "propose")  # the 4th passes


def test_erofs_and_any_stage(monkeypatch):
    with inject(monkeypatch, "*:artifact-write:erofs"):
        with pytest.raises(OSError) as caught:
            fault_point("artifact-write", "train-svm")
        assert caught.value.errno == errno.EROFS


@pytest.mark.parametrize("spec", ["propose", "propose:no-such-point",
                                  "propose:item-write:sometimes"])
def test_bad_specs_are_refused(monkeypatch, spec):
    with inject(monkeypatch, spec), pytest.raises(ValueError, match="SPPDET_FAULT"):
        fault_point("item-write", "propose")


def test_kill_sends_sigkill():
    kill_at("x:item-committed:2", """
        from sppdet.io.faults import fault_point
        fault_point("item-committed", "x")
        print("passed once")
        fault_point("item-committed", "x")
        raise SystemExit("not killed")
    """)
