"""Artifact records: digests, finished artifacts, edited records, stale inputs, and the write
of a single-file artifact with its record (crash-safe)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from sppdet.errors import ArtifactError, ArtifactMissingError, StaleArtifactError
from sppdet.io.records import (
    Record,
    check_inputs_current,
    input_ref,
    is_up_to_date,
    read_record,
    record_path,
    write_artifact,
)


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
        from sppdet.io.records import Record, write_artifact
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
