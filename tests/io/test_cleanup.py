"""`sppdet clean` and sppdet.io.cleanup: leftovers of killed runs in a work dir."""

import os
import time

import numpy as np
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.io.cleanup import clean, find_leftovers
from sppdet.io.item_store import ItemStore
from sppdet.io.locks import ArtifactLock
from sppdet.io.records import Record, write_record


def _work_with_leftovers(work):
    """A merged artifact with its parts still there, a merge temporary, a record temporary,
    an unfinished run, and a temporary of a file written without a lock."""
    folder = work / "proposals" / "data-abc123"
    done = folder / "test.h5"
    with ItemStore(done, Record("propose", {})) as store:
        store.write("a", {"x": np.zeros(2)})
        store.finalize(["a"])
    # as a kill before the parts' removal leaves them: a copy of the merged run's parts
    parts = done.with_name("test.h5.parts")
    with ItemStore(done, Record("propose", {})) as store:
        store.write("a", {"x": np.zeros(2)})
        store.record.summary["run"] = store.run_id
    write_record(done, store.record)  # the merged file's record now names this run
    (folder / ".test.h5.k2j4h5g6.tmp").write_bytes(b"\0" * 1000)
    (folder / ".test.h5.record.json.abcdefgh.tmp").write_text("{")
    unfinished = folder / "trainval.h5"
    with ItemStore(unfinished, Record("propose", {"split": "trainval"})) as store:
        store.write("a", {"x": np.zeros(2)})
    report = work / "eval" / ".report.md.abcdefgh.tmp"
    report.parent.mkdir(parents=True)
    report.write_text("half a report")
    return parts, unfinished.with_name("trainval.h5.parts"), report


def test_find_and_clean_leftovers(tmp_path):
    work = tmp_path / "work"
    parts, unfinished, report = _work_with_leftovers(work)
    kinds = {str(item.path.relative_to(work)): item.kind for item in find_leftovers(work)}
    assert kinds == {
        "proposals/data-abc123/.test.h5.k2j4h5g6.tmp": "temporary",
        "proposals/data-abc123/.test.h5.record.json.abcdefgh.tmp": "temporary",
        "proposals/data-abc123/test.h5.parts": "merged parts",
        "proposals/data-abc123/trainval.h5.parts": "unfinished parts",
        "eval/.report.md.abcdefgh.tmp": "temporary",
    }
    deleted, skipped = clean(work, dry_run=True)
    assert len(deleted) == 3 and parts.exists()
    # a recent temporary of a file without a lock may be a write in flight: kept
    assert {i.path for i in skipped} == {unfinished, report}
    os.utime(report, (time.time() - 7200, time.time() - 7200))
    with ArtifactLock(parts.with_name("test.h5"), suffix=".shard1of2.lock"):
        deleted, skipped = clean(work)  # a run is writing test.h5: its files stay
        assert {i.path for i in deleted} == {report}
    deleted, _ = clean(work)
    assert len(deleted) == 3 and not parts.exists() and unfinished.exists()
    deleted, _ = clean(work, unfinished=True)
    assert [i.path for i in deleted] == [unfinished]
    assert find_leftovers(work) == []


def test_clean_command(tmp_path):
    work = tmp_path / "work"
    parts, unfinished, _ = _work_with_leftovers(work)
    result = CliRunner().invoke(cli, ["-w", str(work), "clean", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete merged parts" in result.output and parts.exists()
    result = CliRunner().invoke(cli, ["-w", str(work), "clean"])
    assert result.exit_code == 0, result.output
    assert "3 leftover(s) deleted" in result.output
    assert "kept 1 unfinished run(s)" in result.output and str(unfinished) in result.output
    assert not parts.exists()
