"""The propose stage: determinism across jobs, resume after a kill, shards, import, failures."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from sppdet.io.item_store import ItemReader
from sppdet.io.records import read_record
from sppdet.cli import cli
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.errors import ArtifactError, ConfigError
from sppdet.stages import propose

OPTIONS = {"max_boxes": 300, "max_size": 160, "min_size": 4.0}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_data(root, DemoDataConfig(n_trainval=4, n_test=2, image_width=160,
                                        image_height=120, max_object_size=80))
    return root


def boxes_of(path):
    with ItemReader(path) as reader:
        return {i: reader.read(i)[0]["boxes"] for i in reader.ids()}


def test_deterministic_across_runs_and_jobs(demo, tmp_path):
    one = propose.run(demo, "trainval", tmp_path / "a.h5", method_options=OPTIONS, jobs=1)
    two = propose.run(demo, "trainval", tmp_path / "b.h5", method_options=OPTIONS, jobs=2)
    assert one.images == two.images == 4 and 0 < one.boxes_max <= 300
    a, b = boxes_of(tmp_path / "a.h5"), boxes_of(tmp_path / "b.h5")
    assert list(a) == list(b)
    for image_id in a:
        np.testing.assert_array_equal(a[image_id], b[image_id])
    record = read_record(tmp_path / "a.h5")
    assert record.params["method"] == "ss-fast"
    assert record.params["method_params"]["max_boxes"] == 300
    again = propose.run(demo, "trainval", tmp_path / "a.h5", method_options=OPTIONS)
    assert again.up_to_date


def test_killed_run_resumes_to_the_same_artifact(demo, tmp_path):
    out = tmp_path / "killed.h5"
    script = textwrap.dedent(f"""
        import os, signal
        import sppdet.io.item_store as art
        from sppdet.stages import propose
        real_write = art.ItemStore.write
        def write_then_die(self, *args, **kwargs):
            real_write(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)  # killed after the first image
        art.ItemStore.write = write_then_die
        propose.run({str(demo)!r}, "trainval", {str(out)!r}, method_options={OPTIONS!r})
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    assert not out.exists()
    resumed = propose.run(demo, "trainval", out, method_options=OPTIONS)
    assert resumed.resumed == 1 and resumed.finished
    clean = propose.run(demo, "trainval", tmp_path / "clean.h5", method_options=OPTIONS)
    assert clean.resumed == 0
    a, b = boxes_of(out), boxes_of(tmp_path / "clean.h5")
    assert list(a) == list(b) and all(np.array_equal(a[i], b[i]) for i in a)


def test_shards_merge_to_the_full_result(demo, tmp_path):
    out = tmp_path / "sharded.h5"
    first = propose.run(demo, "trainval", out, method_options=OPTIONS, shard=(1, 2))
    assert not first.finished and not out.exists()
    second = propose.run(demo, "trainval", out, method_options=OPTIONS, shard=(2, 2))
    assert second.finished
    full = propose.run(demo, "trainval", tmp_path / "full.h5", method_options=OPTIONS)
    a, b = boxes_of(out), boxes_of(tmp_path / "full.h5")
    assert list(a) == list(b) and all(np.array_equal(a[i], b[i]) for i in a)
    assert full.images == 4


def test_unreadable_image_is_recorded(demo, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo, copy)
    (copy / "JPEGImages" / "000002.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ArtifactError, match="000002.*fix them, or rerun with on_error='skip'"):
        propose.run(copy, "trainval", tmp_path / "p.h5", method_options=OPTIONS)
    summary = propose.run(copy, "trainval", tmp_path / "p.h5", method_options=OPTIONS,
                          on_error="skip")
    assert list(summary.failures) == ["000002"] and "cannot read" in summary.failures["000002"]
    assert "000002" in summary.to_text()
    with ItemReader(tmp_path / "p.h5") as reader:
        assert "000002" not in reader and "000002" in reader.failures


def test_import_rcnn_mat(demo, tmp_path):
    ids = (demo / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    cells_ids = np.empty((1, len(ids) + 1), dtype=object)
    cells_boxes = np.empty((1, len(ids) + 1), dtype=object)
    for k, image_id in enumerate(ids):
        cells_ids[0, k] = image_id
        # R-CNN: y1 x1 y2 x2, 1-based inclusive
        cells_boxes[0, k] = np.array([[11, 21, 40, 60], [1, 1, 120, 160]], dtype=np.float64)
    cells_ids[0, -1] = "not-in-dataset"
    cells_boxes[0, -1] = np.array([[1, 1, 5, 5]], dtype=np.float64)
    mat = tmp_path / "ss.mat"
    scipy.io.savemat(mat, {"images": cells_ids, "boxes": cells_boxes})
    summary = propose.run(demo, "trainval", tmp_path / "imp.h5", method="import",
                          import_path=mat)
    assert any("not in the dataset" in p for p in summary.problems)
    boxes = boxes_of(tmp_path / "imp.h5")[ids[0]]
    # x1 = x1_1based - 1, x2 = x2_1based; the second box is clipped to the image
    np.testing.assert_array_equal(boxes[0], [20, 10, 60, 40])
    assert boxes[1, 0] == 0 and boxes[1, 1] == 0


def test_bad_options(demo, tmp_path):
    with pytest.raises(ConfigError, match="import_path is needed with method 'import'"):
        propose.run(demo, "trainval", tmp_path / "x.h5", method="import")
    with pytest.raises(ConfigError, match="unknown proposal method"):
        propose.run(demo, "trainval", tmp_path / "x.h5", method="magic")


def test_cli_propose_and_eval_proposals(demo, tmp_path):
    work = tmp_path / "work"
    result = CliRunner().invoke(cli, ["-w", str(work), "propose", str(demo), "--split", "test",
                                      "--max-boxes", "200", "--max-size", "160"])
    assert result.exit_code == 0, result.output
    assert "boxes per image" in result.output
    path = next(work.rglob("test.ss-fast.h5"))
    result = CliRunner().invoke(cli, ["eval-proposals", str(demo), str(path), "--split", "test",
                                      "--num-boxes", "10,all"])
    assert result.exit_code == 0, result.output
    assert "recall@0.5" in result.output
    assert path.with_name("test.ss-fast.recall.json").exists()
    assert path.with_name("test.ss-fast.recall.png").exists()
    result = CliRunner().invoke(cli, ["eval-proposals", str(demo), str(path), "--split",
                                      "trainval"])
    assert result.exit_code == 1 and "not 'trainval'" in result.output
    result = CliRunner().invoke(cli, ["propose", str(demo), "--edge-model", "x.yml.gz"])
    assert result.exit_code == 2


# --- reliability: --force, kills, leftovers, left-out images, full and read-only disks ---

def test_force_rebuilds_a_corrupt_artifact_whose_record_is_unchanged(demo, tmp_path):
    """Case 1."""
    from tests.fault_injection import assert_same_items

    out = tmp_path / "p.h5"
    propose.run(demo, "test", out, method_options=OPTIONS)
    propose.run(demo, "test", tmp_path / "ref.h5", method_options=OPTIONS)
    out.write_bytes(out.read_bytes()[:2000])  # truncated; the record is unchanged
    with pytest.raises(ArtifactError, match="force=True"):
        ItemReader(out)
    assert propose.run(demo, "test", out, method_options=OPTIONS).up_to_date
    rebuilt = propose.run(demo, "test", out, method_options=OPTIONS, force=True)
    assert not rebuilt.up_to_date and rebuilt.finished
    assert_same_items(out, tmp_path / "ref.h5")


KILLED_PROPOSE = """
    from sppdet.stages import propose
    propose.run({demo!r}, "trainval", {out!r}, method_options={options!r})
"""


@pytest.mark.parametrize("point", ["item-committed:2", "merge-committed", "artifact-write"])
def test_killed_propose_resumes_bit_for_bit_and_leaves_nothing(demo, tmp_path, point):
    """Kill/resume equality (per image and in the merge step); case 3 (orphans)."""
    from tests.fault_injection import assert_same_items, kill_at, leftovers

    out = tmp_path / "killed" / "p.h5"
    kill_at(f"propose:{point}", KILLED_PROPOSE.format(demo=str(demo), out=str(out),
                                                      options=OPTIONS))
    assert leftovers(out.parent)  # the kill left a temporary or a parts folder
    propose.run(demo, "trainval", out, method_options=OPTIONS)
    assert leftovers(out.parent) == []
    propose.run(demo, "trainval", tmp_path / "ref.h5", method_options=OPTIONS)
    assert_same_items(out, tmp_path / "ref.h5")


def _broken_copy(demo, tmp_path):
    """The demo data with one annotation missing and one split id without any file."""
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(demo, copy)
    (copy / "Annotations" / "000001.xml").unlink()
    split = copy / "ImageSets" / "Main" / "trainval.txt"
    split.write_text(split.read_text() + "ghost\n")
    return copy


def test_images_left_out_of_the_split_are_reported(demo, tmp_path):
    """Case 6 (propose)."""
    copy = _broken_copy(demo, tmp_path)
    work = tmp_path / "work"
    result = CliRunner().invoke(cli, ["-w", str(work), "propose", str(copy), "--max-boxes",
                                      "50", "--max-size", "100"])
    assert result.exit_code == 0, result.output
    assert "Proposals (ss-fast) for 3 images" in result.output
    assert "left out: 2 image(s) of split 'trainval'" in result.output
    assert "000001: " in result.output and "annotation file not found" in result.output
    assert "ghost: " in result.output
    log = next(work.rglob("trainval.ss-fast.h5.log")).read_text()
    assert "left out of split 'trainval': 000001" in log and "ghost" in log
    again = CliRunner().invoke(cli, ["-w", str(work), "propose", str(copy), "--max-boxes",
                                     "50", "--max-size", "100"])
    assert "up to date" in again.output and "left out: 2 image(s)" in again.output


def test_disk_full_says_so_keeps_earlier_artifacts_and_resumes(demo, tmp_path, monkeypatch):
    """Case 8 (propose)."""
    from tests.fault_injection import inject

    work = tmp_path / "work"
    args = ["-w", str(work), "propose", str(demo), "--max-boxes", "50", "--max-size", "100"]
    assert CliRunner().invoke(cli, [*args, "--split", "test"]).exit_code == 0
    earlier = next(work.rglob("test.ss-fast.h5"))
    before = earlier.read_bytes()
    with inject(monkeypatch, "propose:item-write:2:enospc"):
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "Error: disk full writing " in result.output and ".parts/" in result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert earlier.read_bytes() == before and read_record(earlier)
    resumed = CliRunner().invoke(cli, args)
    assert resumed.exit_code == 0 and "1 already done" in resumed.output


def test_disk_full_from_real_writes(demo, tmp_path, monkeypatch):
    """Case 8 with the write failing inside h5py: every temporary is /dev/full."""
    import os
    import tempfile

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) to make real writes fail with ENOSPC")
    real_mkstemp = tempfile.mkstemp

    def full_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.close(fd)
        os.unlink(name)
        os.symlink("/dev/full", name)  # every byte written to it fails: ENOSPC
        return os.open(name, os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", full_mkstemp)
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "work"), "propose", str(demo),
                                      "--max-boxes", "50", "--max-size", "100"])
    assert result.exit_code == 1
    assert "Error: disk full writing " in result.output, result.output


def test_read_only_work_dir_names_the_path_and_errno(demo, tmp_path, monkeypatch):
    """Case 9."""
    from tests.fault_injection import inject

    with inject(monkeypatch, "propose:item-write:erofs"):
        result = CliRunner().invoke(cli, ["-w", str(tmp_path / "work"), "propose", str(demo),
                                          "--max-boxes", "50", "--max-size", "100"])
    assert result.exit_code == 1
    assert "Error: cannot write " in result.output
    assert ": [Errno 30] Read-only file system" in result.output
    assert "internal error" not in result.output and "bug" not in result.output
