"""Resumable per-item stores: resume, refusal of other parameters, failures, a kill mid-item,
shards, and the parsing of a shard."""

import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sppdet.errors import ArtifactError, ConfigError, StaleArtifactError
from sppdet.io.item_store import ItemReader, ItemStore, parse_shard, shard_items
from sppdet.io.records import Record, read_record


def test_item_store_resume_and_finalize(tmp_path):
    path = tmp_path / "props.h5"
    ids = ["img1", "img2", "odd/id"]
    record = Record("propose", {"method": "x"})
    with ItemStore(path, record) as store:
        store.write("img1", {"boxes": np.ones((2, 4), np.float32)}, {"width": 10})
        assert store.finalize(ids) is None  # not all done: nothing merged
    assert not path.exists()
    with ItemStore(path, record) as store:  # a rerun resumes
        assert store.pending(ids) == ["img2", "odd/id"]
        store.write("img2", {"boxes": np.zeros((0, 4), np.float32)}, {"width": 11})
        store.write("odd/id", {"boxes": np.full((1, 4), 3, np.float32)}, {"width": 12})
        assert store.finalize(ids) == path
    assert not path.with_name("props.h5.parts").exists()
    with ItemReader(path) as reader:
        assert reader.ids() == ids
        arrays, attrs = reader.read("img1")
        np.testing.assert_array_equal(arrays["boxes"], np.ones((2, 4)))
        assert attrs["width"] == 10
        assert reader.read("img2")[0]["boxes"].shape == (0, 4)
        assert reader.read("odd/id")[1]["width"] == 12
        assert reader.record.digest == record.digest


def test_item_store_refuses_other_params_unless_forced(tmp_path):
    path = tmp_path / "props.h5"
    with ItemStore(path, Record("propose", {"method": "a"})) as store:
        store.write("img1", {"x": np.zeros(1)})
    with pytest.raises(StaleArtifactError, match="force=True to discard it"):
        ItemStore(path, Record("propose", {"method": "b"}))
    with ItemStore(path, Record("propose", {"method": "b"}), force=True) as store:
        assert store.pending(["img1"]) == ["img1"]


def test_item_store_failures(tmp_path):
    path = tmp_path / "props.h5"
    record = Record("propose", {})
    with ItemStore(path, record) as store:
        store.write("a", {"x": np.zeros(1)})
        store.write_failure("b", "cannot read the image")
        with pytest.raises(ArtifactError, match="b: cannot read the image.*on_error='skip'"):
            store.finalize(["a", "b"])
        store.finalize(["a", "b"], allow_failures=True)
    with ItemReader(path) as reader:
        assert reader.ids() == ["a"] and reader.failures == {"b": "cannot read the image"}
        with pytest.raises(ArtifactError, match="it failed: cannot read"):
            reader.group("b")
    assert read_record(path).summary["failures"] == {"b": "cannot read the image"}


def test_item_store_killed_mid_item_resumes(tmp_path):
    path = tmp_path / "props.h5"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        import sppdet.io.item_store as art
        from sppdet.io.records import Record
        store = art.ItemStore({str(path)!r}, Record("propose", {{}}))
        store.write("a", {{"x": np.zeros(3)}})
        real_replace = os.replace
        def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        art.os.replace = die  # killed after writing b's temporary file, before the rename
        store.write("b", {{"x": np.ones(3)}})
    """)
    result = subprocess.run([sys.executable, "-c", script])
    assert result.returncode == -signal.SIGKILL
    parts = path.with_name("props.h5.parts")
    assert any(p.name.endswith(".tmp") for p in parts.iterdir())
    with ItemStore(path, Record("propose", {})) as store:  # the lock died with the process
        assert store.pending(["a", "b"]) == ["b"]
        assert not any(p.name.endswith(".tmp") for p in parts.iterdir())


def test_shards_share_parts_and_last_one_merges(tmp_path):
    path = tmp_path / "props.h5"
    ids = [f"i{k}" for k in range(5)]
    record = Record("propose", {})
    assert shard_items(ids, (1, 2)) == ["i0", "i2", "i4"]
    assert shard_items(ids, (2, 2)) == ["i1", "i3"]
    first, second = ItemStore(path, record, shard=(1, 2)), ItemStore(path, record, shard=(2, 2))
    for item in shard_items(ids, (1, 2)):
        first.write(item, {"x": np.zeros(1)})
    assert first.finalize(ids) is None
    for item in shard_items(ids, (2, 2)):
        second.write(item, {"x": np.zeros(1)})
    assert second.finalize(ids) == path
    first.close()
    second.close()
    with ItemReader(path) as reader:
        assert reader.ids() == ids


def test_a_shard_leaves_temporaries_another_shard_may_be_writing(tmp_path):
    """Shards of one run share the parts folder: opening a shard must not delete a ``.tmp``
    file (another shard may be writing it); an unsharded run removes those of a killed run."""
    path = tmp_path / "props.h5"
    record = Record("propose", {})
    parts = path.with_name("props.h5.parts")
    with ItemStore(path, record, shard=(1, 2)):
        in_flight = parts / ".i1.h5.k3x9q.tmp"  # what shard 2 is writing right now
        in_flight.write_bytes(b"partial")
    with ItemStore(path, record, shard=(2, 2)) as store:
        assert in_flight.exists() and store.pending(["i1"]) == ["i1"]
    with ItemStore(path, record):
        assert not in_flight.exists()


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "x", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def _store_items(path, record, ids, *, force=False):
    with ItemStore(path, record, force=force) as store:
        for k, item in enumerate(ids):
            store.write(item, {"x": np.full(3, k, np.float32)}, {"k": k})
        return store.finalize(ids)


def test_force_rebuilds_an_artifact_whose_record_is_unchanged(tmp_path):
    """Case 1: --force recomputes every item and must merge them, not keep the old file."""
    path = tmp_path / "props.h5"
    record = Record("propose", {"method": "x"})
    ids = ["a", "b"]
    assert _store_items(path, record, ids) == path
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])  # truncated, the record still vouches for it
    with pytest.raises(ArtifactError, match="cannot open"):
        ItemReader(path)
    assert _store_items(path, Record("propose", {"method": "x"}), ids, force=True) == path
    with ItemReader(path) as reader:
        assert reader.ids() == ids and reader.read("b")[0]["x"].tolist() == [1, 1, 1]
    assert not path.with_name("props.h5.parts").exists()


def test_a_shard_that_finishes_after_another_merged_this_run_reports_done(tmp_path):
    path = tmp_path / "props.h5"
    ids = ["a", "b", "c"]
    _store_items(path, Record("propose", {}), ids)
    # a forced rerun in two shards: the second to finish merges, the first sees it merged
    first = ItemStore(path, Record("propose", {}), force=True, shard=(1, 2))
    second = ItemStore(path, Record("propose", {}), force=True, shard=(2, 2))
    for item in shard_items(ids, (2, 2)):
        second.write(item, {"x": np.zeros(1)})
    for item in shard_items(ids, (1, 2)):
        first.write(item, {"x": np.ones(1)})
    assert first.finalize(ids) == path
    assert second.finalize(ids) == path
    first.close()
    second.close()
    with ItemReader(path) as reader:
        assert reader.read("a")[0]["x"].tolist() == [1.0]


MERGE_SCRIPT = """
    import numpy as np
    from sppdet.io.item_store import ItemStore
    from sppdet.io.records import Record
    ids = ["a", "b", "odd/id"]
    with ItemStore({path!r}, Record("propose", {{"n": 1}})) as store:
        for k, item in enumerate(ids):
            store.write(item, {{"x": np.arange(k + 2, dtype=np.float32)}}, {{"k": k}})
        store.finalize(ids)
"""


@pytest.mark.parametrize("point, left", [
    ("artifact-write", {".props.h5.TMP", "props.h5.parts"}),  # the full-size merge file
    ("artifact-renamed", {"props.h5", "props.h5.parts"}),  # data in place, no record
    ("record-write", {"props.h5", ".props.h5.record.json.TMP", "props.h5.parts"}),
    ("merge-committed", {"props.h5", "props.h5.record.json", "props.h5.parts"}),
])
def test_kill_during_the_merge_resumes_to_the_same_artifact_without_orphans(tmp_path, point,
                                                                            left):
    """Case 3 and the merge step's kill/resume equality."""
    from tests.fault_injection import assert_same_items, kill_at, leftovers

    clean = tmp_path / "clean" / "props.h5"
    clean.parent.mkdir()
    subprocess.run([sys.executable, "-c", textwrap.dedent(MERGE_SCRIPT.format(path=str(clean)))],
                   check=True)
    killed = tmp_path / "killed" / "props.h5"
    kill_at(f"propose:{point}", MERGE_SCRIPT.format(path=str(killed)))
    found = {re.sub(r"\.[a-z0-9_]{8}\.tmp$", ".TMP", p.name)
             for p in killed.parent.iterdir() if not p.name.endswith(".lock")}
    assert found == left
    # the next run of the stage cleans up, merges (or sees it merged) and ends equal
    subprocess.run([sys.executable, "-c", textwrap.dedent(MERGE_SCRIPT.format(path=str(killed)))],
                   check=True)
    assert_same_items(killed, clean)
    assert leftovers(killed.parent) == []


def test_stale_temporaries_are_left_alone_while_another_writer_runs(tmp_path):
    path = tmp_path / "props.h5"
    record = Record("propose", {})
    running = ItemStore(path, record, shard=(1, 2))
    in_flight = running.parts_dir / ".a.h5.abcdefgh.tmp"  # shard 1 is writing image a
    in_flight.write_bytes(b"half")
    with ItemStore(path, record):
        assert in_flight.exists()  # another writer is at work: nothing is removed
    running.close()
    with ItemStore(path, record):
        assert not in_flight.exists()  # now it is a leftover


def test_a_damaged_part_is_deleted_and_named_at_the_merge(tmp_path):
    path = tmp_path / "props.h5"
    record = Record("propose", {})
    with ItemStore(path, record) as store:
        store.write("a", {"x": np.zeros(2)})
        store.write("b", {"x": np.ones(2)})
    (path.with_name("props.h5.parts") / "b.h5").write_bytes(b"")  # renamed, never flushed
    with ItemStore(path, record) as store:
        with pytest.raises(ArtifactError, match=r"b\.h5 was damaged.*compute image b again"):
            store.finalize(["a", "b"])
    with ItemStore(path, record) as store:
        assert store.pending(["a", "b"]) == ["b"]


def test_with_closes_the_store_even_on_an_error(tmp_path):
    path = tmp_path / "props.h5"
    with pytest.raises(RuntimeError, match="in the block"):
        with ItemStore(path, Record("propose", {})) as store:
            assert isinstance(store, ItemStore)
            raise RuntimeError("in the block")
    with ItemStore(path, Record("propose", {})):  # the lock was released: it opens again
        pass
