"""Artifact records, atomic writes, locks, staleness and resumable per-item stores."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sppdet.io.artifacts import (ArtifactLock, ItemReader, ItemStore, Record, check_inputs_current,
                              input_ref, is_up_to_date, parse_shard, read_record, record_path,
                              shard_items, write_artifact)
from sppdet.errors import (ArtifactError, ArtifactLockedError, ArtifactMissingError, ConfigError,
                           StaleArtifactError)


def _make(path, params, inputs=None, text="data"):
    record = Record(stage="demo-stage", params=params, inputs=inputs or {})
    with write_artifact(path, record) as tmp:
        tmp.write_text(text)
    return record


def test_digest_covers_params_and_inputs_not_summary():
    a = Record("s", {"x": 1, "scales": (480, 688)})
    assert a.digest == Record("s", {"scales": [480, 688], "x": 1}).digest
    assert a.digest != Record("s", {"x": 2, "scales": (480, 688)}).digest
    assert a.digest != Record("s", {"x": 1, "scales": (480, 688)}, stage_version=2).digest
    b = Record("s", {"x": 1, "scales": (480, 688)}, summary={"n": 5}, sppdet_version="9")
    assert a.digest == b.digest


def test_write_and_read_record(tmp_path):
    path = tmp_path / "out" / "a.txt"
    record = _make(path, {"k": 1})
    assert path.read_text() == "data"
    loaded = read_record(path)
    assert loaded.digest == record.digest and loaded.params == {"k": 1}
    assert is_up_to_date(path, record)
    assert not is_up_to_date(path, Record("demo-stage", {"k": 2}))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt", "a.txt.record.json"]


def test_failed_write_leaves_old_artifact_untouched(tmp_path):
    path = tmp_path / "a.txt"
    old = _make(path, {"k": 1}, text="old")
    with pytest.raises(RuntimeError):
        with write_artifact(path, Record("demo-stage", {"k": 2})) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash midway")
    assert path.read_text() == "old"
    assert read_record(path).digest == old.digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.txt.record.json"]


def test_killed_write_leaves_no_finished_looking_file(tmp_path):
    path = tmp_path / "a.txt"
    script = textwrap.dedent(f"""
        import os, signal
        from sppdet.io.artifacts import Record, write_artifact
        with write_artifact({str(path)!r}, Record("demo-stage", {{}})) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert result.returncode == -signal.SIGKILL
    assert not path.exists() and not record_path(path).exists()
    with pytest.raises(ArtifactMissingError, match="does not exist"):
        read_record(path, made_by="demo-stage")


def test_data_without_record_is_not_finished(tmp_path):
    path = tmp_path / "a.h5"
    path.write_text("x")
    with pytest.raises(ArtifactMissingError, match="never finished.*sppdet propose"):
        read_record(path, made_by="propose")


def test_edited_record_is_refused(tmp_path):
    path = tmp_path / "a.txt"
    _make(path, {"k": 1})
    data = json.loads(record_path(path).read_text())
    data["params"]["k"] = 5
    record_path(path).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="digest does not match"):
        read_record(path)


def test_stale_upstream_detected(tmp_path):
    upstream, downstream = tmp_path / "up.txt", tmp_path / "down.txt"
    _make(upstream, {"k": 1})
    record = _make(downstream, {}, inputs={"up": input_ref(upstream)})
    check_inputs_current(read_record(downstream), downstream)  # still current
    _make(upstream, {"k": 2})
    with pytest.raises(StaleArtifactError, match="older up"):
        check_inputs_current(read_record(downstream), downstream)
    assert record.inputs["up"].digest != read_record(upstream).digest


def test_lock_excludes_another_process(tmp_path):
    path = tmp_path / "a.h5"
    script = textwrap.dedent(f"""
        from sppdet.io.artifacts import ArtifactLock
        from sppdet.errors import ArtifactLockedError
        try:
            ArtifactLock({str(path)!r}).acquire()
        except ArtifactLockedError as exc:
            print("LOCKED", exc)
        else:
            print("FREE")
    """)
    with ArtifactLock(path):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert out.stdout.startswith("LOCKED") and f"pid {os.getpid()}" in out.stdout
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "FREE"


def test_lock_in_same_process(tmp_path):
    with ArtifactLock(tmp_path / "a"):
        with pytest.raises(ArtifactLockedError):
            ArtifactLock(tmp_path / "a").acquire()


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
    with pytest.raises(StaleArtifactError, match="--force"):
        ItemStore(path, Record("propose", {"method": "b"}))
    with ItemStore(path, Record("propose", {"method": "b"}), force=True) as store:
        assert store.pending(["img1"]) == ["img1"]


def test_item_store_failures(tmp_path):
    path = tmp_path / "props.h5"
    record = Record("propose", {})
    with ItemStore(path, record) as store:
        store.write("a", {"x": np.zeros(1)})
        store.write_failure("b", "cannot read the image")
        with pytest.raises(ArtifactError, match="b: cannot read the image.*--on-error skip"):
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
        import sppdet.io.artifacts as art
        store = art.ItemStore({str(path)!r}, art.Record("propose", {{}}))
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


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "x", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
