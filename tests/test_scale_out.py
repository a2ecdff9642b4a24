"""Scale-out: Dask runs (a 2-worker LocalCluster) and torchrun ranks (gloo on the CPU) give
the artifacts of a one-process run; a worker or rank that dies costs nothing but time; a bad
cluster address fails fast and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sppdet.cli import cli
from sppdet.data.synthetic.config import DemoDataConfig
from sppdet.data.synthetic.dataset import make_demo_data
from sppdet.errors import ConfigError
from sppdet.io.item_store import ItemReader
from sppdet.parallel import dask_cluster
from sppdet.parallel.dask_cluster import ClusterError, connect
from sppdet.stages import detect, eval_proposals, propose, train_svm
from sppdet.training.svm.weights import SVMWeights

from tests.fake_training_inputs import make_inputs, write_fc

distributed = pytest.importorskip("distributed", reason="dask.distributed (the dask extra, "
                                                        "part of the test extra) is needed")

OPTIONS = {"max_boxes": 200, "max_size": 120, "min_size": 4.0}
ROOT = Path(__file__).resolve().parents[1]


def items_of(path: Path) -> dict:
    """Every item's arrays and attributes, and the failures, of a per-item artifact."""
    with ItemReader(path) as reader:
        return {"ids": reader.ids(), "failures": reader.failures,
                "items": {i: reader.read(i) for i in reader.ids()}}


def assert_same_items(a: Path, b: Path) -> None:
    left, right = items_of(a), items_of(b)
    assert left["ids"] == right["ids"] and left["failures"] == right["failures"]
    for image_id in left["ids"]:
        (arrays_a, attrs_a), (arrays_b, attrs_b) = left["items"][image_id], right["items"][image_id]
        assert {k: str(v) for k, v in attrs_a.items()} == {k: str(v) for k, v in attrs_b.items()}
        assert sorted(arrays_a) == sorted(arrays_b)
        for name in arrays_a:
            assert arrays_a[name].dtype == arrays_b[name].dtype, (image_id, name)
            np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=image_id)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_data(root, DemoDataConfig(n_trainval=6, n_test=2, image_width=120,
                                        image_height=90, max_object_size=60))
    return root


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster shared by the Dask tests; they reach it by its address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40,
                                  scheduler_kwargs={"dashboard_address": ":0"}) as local, \
            distributed.Client(local, set_as_default=False) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Fabricated proposals, conv5 cache and fc layers, and SVMs trained in one process."""
    root = tmp_path_factory.mktemp("model")
    inputs = make_inputs(root / "in", n_images=8)
    models = root / "work" / "models" / "m"
    write_fc(models / "fc.pt", inputs.classes, inputs.channels)
    train_svm.run(inputs.dataset, "trainval", models / "svm.npz", proposals=inputs.proposals,
                  features=inputs.features, fc=models / "fc.pt", device="cpu")
    return inputs, models


class KillOnce(distributed.WorkerPlugin):
    """Kills the worker process that starts the first task, once (a marker file says so)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(key))
            os._exit(1)


# ---------------------------------------------------------------------------------------------
# Dask


def test_propose_on_dask_equals_one_process(demo, cluster, tmp_path):
    address, _ = cluster
    one = propose.run(demo, "trainval", tmp_path / "one.h5", method_options=OPTIONS)
    with connect(address) as executor:
        many = propose.run(demo, "trainval", tmp_path / "dask.h5", method_options=OPTIONS,
                           executor=executor)
    assert one.images == many.images == 6 and many.finished
    assert_same_items(tmp_path / "one.h5", tmp_path / "dask.h5")
    assert "Dask cluster" in many.to_text() and "2 workers, 2 threads" in many.to_text()


def test_a_worker_killed_mid_stage_costs_only_a_rerun(demo, cluster, tmp_path):
    address, client = cluster
    marker = tmp_path / "killed"
    client.register_plugin(KillOnce(str(marker)), name="kill-once")
    try:
        with connect(address) as executor:
            summary = propose.run(demo, "trainval", tmp_path / "dask.h5",
                                  method_options=OPTIONS, executor=executor)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert marker.exists()  # a worker did die with a task of the stage
    assert summary.finished and summary.reruns >= 1
    assert "computed again after their worker was lost" in summary.to_text()
    propose.run(demo, "trainval", tmp_path / "one.h5", method_options=OPTIONS)
    assert_same_items(tmp_path / "one.h5", tmp_path / "dask.h5")


def test_detect_on_dask_equals_one_process(model, cluster, tmp_path):
    inputs, models = model
    address, _ = cluster
    common = {"model_dir": models, "proposals": inputs.proposals, "features": inputs.features,
              "use_bbox_reg": False, "device": "cpu"}
    detect.run(inputs.dataset, "trainval", tmp_path / "one.h5", **common)
    with connect(address) as executor:
        summary = detect.run(inputs.dataset, "trainval", tmp_path / "dask.h5", **common,
                             executor=executor)
    assert summary.finished and summary.computed == 8 and summary.detections > 0
    assert_same_items(tmp_path / "one.h5", tmp_path / "dask.h5")
    one_files = sorted((tmp_path / "one.comp4").iterdir())
    assert [p.read_text() for p in one_files] == [
        (tmp_path / "dask.comp4" / p.name).read_text() for p in one_files]


@pytest.mark.parametrize("mining", ["images", "classes"])
def test_train_svm_on_dask_equals_one_process(model, cluster, tmp_path, mining):
    inputs, models = model
    address, _ = cluster
    with connect(address) as executor:
        summary = train_svm.run(inputs.dataset, "trainval", tmp_path / "svm.npz",
                                proposals=inputs.proposals, features=inputs.features,
                                fc=models / "fc.pt", device="cpu", executor=executor,
                                mining=mining)
    assert f"mining split by {mining}" in summary.to_text()
    one, many = SVMWeights.load(models / "svm.npz"), SVMWeights.load(tmp_path / "svm.npz")
    assert one.trained.any() and one.classes == many.classes
    np.testing.assert_array_equal(one.trained, many.trained)
    np.testing.assert_array_equal(one.weights, many.weights)
    np.testing.assert_array_equal(one.bias, many.bias)
    assert one.feature_scale == many.feature_scale


def test_eval_proposals_on_dask_equals_one_process(demo, cluster, tmp_path):
    address, _ = cluster
    path = tmp_path / "p.h5"
    propose.run(demo, "trainval", path, method_options=OPTIONS)
    one = eval_proposals.run(path, demo, "trainval", out_prefix=tmp_path / "one")
    with connect(address) as executor:
        many = eval_proposals.run(path, demo, "trainval", out_prefix=tmp_path / "dask",
                                  executor=executor)
    assert one.report.to_dict() == many.report.to_dict()
    assert one.report.num_images == 6


def test_cli_propose_dask_local(demo, tmp_path):
    work = tmp_path / "work"
    result = CliRunner().invoke(cli, ["-w", str(work), "propose", str(demo), "--split", "test",
                                      "--max-boxes", "200", "--max-size", "120", "--jobs", "2",
                                      "--dask", "local"])
    assert result.exit_code == 0, result.output
    assert "Dask LocalCluster" in result.output and "2 workers" in result.output
    reference = propose.run(demo, "test", tmp_path / "one.h5",
                            method_options={"max_boxes": 200, "max_size": 120})
    assert reference.finished
    assert_same_items(tmp_path / "one.h5", next(work.rglob("test.ss-fast.h5")))


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_keep_glibcs_malloc_trim_threshold(monkeypatch):
    """Dask's nanny default (65536) made selective search 20 % slower; a user's own value
    is passed on."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect("local", jobs=1) as executor:
        assert list(executor.imap(_trim_threshold, [()])) == [None]
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    with connect("local", jobs=1) as executor:
        assert list(executor.imap(_trim_threshold, [()])) == ["1048576"]


@pytest.mark.parametrize("address, message", [
    ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 2 s"),
    ("not-a-file.json", "neither 'local', a scheduler address"),
])
def test_bad_or_unreachable_scheduler_fails_fast_and_writes_nothing(demo, tmp_path,
                                                                    monkeypatch, address,
                                                                    message):
    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT", 2.0)
    work = tmp_path / "work"
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["-w", str(work), "propose", str(demo), "--split", "test",
                                      "--dask", address])
    elapsed = time.monotonic() - start
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not work.exists()
    assert elapsed < 60  # not a speed bound: it proves the connect timeout, not a hang


def test_scheduler_file_is_read(cluster, tmp_path):
    import json

    address, _ = cluster
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": address}))
    executor = connect(str(scheduler_file))
    try:
        assert executor.workers == 2 and address in executor.description
    finally:
        executor.close()


def test_without_dask_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'sppdet\[dask\]'"):
        connect("local")


def test_importing_the_cli_imports_neither_dask_nor_torch_distributed():
    code = ("import sys, sppdet.cli; bad = [m for m in ('distributed', 'dask', "
            "'torch.distributed.run') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# torchrun


def _torchrun(args: list[str], *, script: str | None = None, check: bool = True
              ) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node=2 -m sppdet ARGS`` (or a script), on the CPU."""
    target = [script] if script else ["-m", "sppdet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node=2", *target, *args],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _one_thread_reference(call):
    """A one-process run with torchrun's threads per rank (oneDNN's convolutions round
    differently with another thread count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return call()
    finally:
        torch.set_num_threads(threads)


def test_torchrun_cache_features_after_a_rank_died_equals_one_process(demo, tmp_path):
    """A rank killed mid-run fails the run; the rerun resumes from the parts written, and
    its merged cache equals a one-process run."""
    from sppdet.stages import cache_features

    out = tmp_path / "ranks.h5"
    args = ["-w", str(tmp_path / "w"), "cache-features", str(demo), "--split", "trainval",
            "--scales", "96", "--device", "cpu", "--out", str(out)]
    killer = tmp_path / "kill_rank1.py"
    killer.write_text(textwrap.dedent("""
        import os, signal, sys
        import sppdet.io.item_store as art
        from sppdet.cli import main
        real_write = art.ItemStore.write
        def write_then_die(self, *args, **kwargs):
            real_write(self, *args, **kwargs)
            if os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGKILL)  # rank 1 dies after its first image
        art.ItemStore.write = write_then_die
        if __name__ == "__main__":
            main(sys.argv[1:], prog_name="sppdet")
    """))
    failed = _torchrun(args, script=str(killer), check=False)
    assert failed.returncode != 0
    assert not out.exists()
    parts = out.with_name(out.name + ".parts")
    assert len(list(parts.glob("*.h5"))) >= 1  # what was committed stays for the rerun
    rerun = _torchrun(args)
    assert "torchrun, 2 ranks (gloo); rank 0 merged" in rerun.stdout
    assert rerun.stdout.count("conv5 features") == 1  # rank 1 prints nothing
    assert "already done" in rerun.stdout and "; 0 already done" not in rerun.stdout
    _one_thread_reference(lambda: cache_features.run(
        demo, "trainval", tmp_path / "one.h5", backbone_name="efficientnet_lite0",
        scales=(96,), device="cpu"))
    assert_same_items(tmp_path / "one.h5", out)


def test_torchrun_detect_equals_one_process(model, tmp_path):
    inputs, models = model
    out = tmp_path / "ranks.h5"
    work = models.parents[1]
    result = _torchrun(["-w", str(work), "detect", str(inputs.dataset), "--name", "m",
                        "--split", "trainval", "--proposals", str(inputs.proposals),
                        "--features", str(inputs.features), "--no-bbox-reg", "--device", "cpu",
                        "--out", str(out)])
    assert "torchrun, 2 ranks (gloo)" in result.stdout
    assert result.stdout.count("Detections of model m") == 1
    detect.run(inputs.dataset, "trainval", tmp_path / "one.h5", model_dir=models,
               proposals=inputs.proposals, features=inputs.features, use_bbox_reg=False,
               device="cpu")
    assert_same_items(tmp_path / "one.h5", out)
