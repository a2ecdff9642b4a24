"""The detect stage's reliability: kill/resume, its VOC result files, which data its inputs
were made on, the features it is given, left-out images, a full disk, and image mode."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sppdet.cli import cli
from sppdet.errors import ArtifactMissingError, DataError
from sppdet.io.item_store import ItemReader
from sppdet.io.records import Record, read_record, write_artifact
from sppdet.stages import detect
from sppdet.stages.layout import dataset_tag, detections_path, model_dir
from sppdet.training.svm.weights import SVMWeights
from tests.fake_artifacts import make_fake_pipeline_inputs
from tests.fake_training_inputs import write_fc
from tests.fault_injection import assert_same_items, inject, kill_at, leftovers

CLASSES = ("circle", "square", "triangle")
HIDDEN = 32


def write_model(folder: Path, *, backbone: str = "fake", channels: int = 8,
                seed: int = 0) -> Path:
    """fc.pt (random fc layers) and svm.npz (random SVMs) of a model named by ``folder``."""
    write_fc(folder / "fc.pt", CLASSES, channels, backbone=backbone, hidden=HIDDEN)
    rng = np.random.default_rng(seed)
    svm = SVMWeights(classes=list(CLASSES), weights=rng.normal(size=(3, HIDDEN)).astype(
        np.float32), bias=np.zeros(3, np.float32), trained=np.ones(3, bool), feature_scale=1.0,
        layer="fc7")
    with write_artifact(folder / "svm.npz", Record("train-svm", {"seed": 0})) as tmp:
        svm.save(tmp)
    return folder


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    inputs = make_fake_pipeline_inputs(root / "a", splits={"test": 4}, flip=False)
    # another dataset with the same image ids (other images, other boxes)
    other = make_fake_pipeline_inputs(root / "b", splits={"test": 4}, flip=False, seed=7)
    write_model(root / "work" / "models" / "m")
    return inputs, other, root / "work" / "models" / "m"


def _run(inputs, out, model, **kwargs):
    kwargs.setdefault("proposals", inputs.proposals["test"])
    kwargs.setdefault("features", inputs.features["test"])
    return detect.run(inputs.dataset, "test", out, model_dir=model, use_bbox_reg=False,
                      device="cpu", score_threshold=-10.0, **kwargs)


KILLED_DETECT = """
    from pathlib import Path
    from sppdet.stages import detect
    detect.run({dataset!r}, "test", Path({out!r}), model_dir=Path({model!r}),
               proposals=Path({proposals!r}), features=Path({features!r}), use_bbox_reg=False,
               device="cpu", score_threshold=-10.0)
"""


def _kill(fake, out, point):
    inputs, _, model = fake
    kill_at(f"detect:{point}", KILLED_DETECT.format(
        dataset=str(inputs.dataset), out=str(out), model=str(model),
        proposals=str(inputs.proposals["test"]), features=str(inputs.features["test"])))


def test_killed_detect_resumes_bit_for_bit(fake, tmp_path):
    """Kill/resume equality of detect."""
    inputs, _, model = fake
    out = tmp_path / "killed" / "test.h5"
    _kill(fake, out, "item-committed:2")
    resumed = _run(inputs, out, model)
    assert resumed.resumed == 2 and resumed.finished
    _run(inputs, tmp_path / "ref" / "test.h5", model)
    assert_same_items(out, tmp_path / "ref" / "test.h5")
    assert leftovers(out.parent) == []


def test_killed_combine_resumes_bit_for_bit(fake, tmp_path):
    """Kill/resume equality of combine (the other per-image stage)."""
    from sppdet.stages import combine

    inputs, _, model = fake
    other = write_model(tmp_path / "models" / "m2", seed=1)
    first = _run(inputs, tmp_path / "m" / "test.h5", model).path
    second = _run(inputs, tmp_path / "m2" / "test.h5", other).path
    out = tmp_path / "killed" / "test.h5"
    kill_at("combine:item-committed:2", f"""
        from sppdet.stages import combine
        combine.run([{str(first)!r}, {str(second)!r}], {str(out)!r}, name="c")
    """)
    resumed = combine.run([first, second], out, name="c")
    assert resumed.resumed == 2
    combine.run([first, second], tmp_path / "ref" / "test.h5", name="c")
    assert_same_items(out, tmp_path / "ref" / "test.h5")
    assert leftovers(out.parent) == []


def test_comp4_files_are_written_by_the_rerun_after_a_kill_and_after_rm(fake, tmp_path):
    """Case 2."""
    inputs, _, model = fake
    out = tmp_path / "killed" / "test.h5"
    _kill(fake, out, "outputs-pending")
    comp4 = out.with_name("test.comp4")
    assert out.exists() and not comp4.exists()
    rerun = _run(inputs, out, model)
    assert rerun.up_to_date and rerun.comp4_dir == comp4
    assert "VOC result files were missing or stale; written" in rerun.to_text()
    reference = _run(inputs, tmp_path / "ref" / "test.h5", model).comp4_dir

    def texts(folder):
        return {p.name: p.read_text() for p in sorted(folder.glob("comp4_det_*.txt"))}

    assert len(texts(comp4)) == 3 and texts(comp4) == texts(reference)
    shutil.rmtree(comp4)
    again = _run(inputs, out, model)
    assert again.up_to_date and texts(comp4) == texts(reference)
    assert not _run(inputs, out, model).comp4_rewritten  # complete now: left alone


def test_inputs_made_on_another_dataset_are_refused(fake, tmp_path):
    """Case 4: same image ids, other images."""
    inputs, other, model = fake
    with pytest.raises(DataError, match=f"{other.proposals['test']} was made on split 'test' "
                       f"of {other.dataset.resolve()}, not on split 'test' of "
                       f"{inputs.dataset.resolve()}"):
        _run(inputs, tmp_path / "x.h5", model, proposals=other.proposals["test"])
    with pytest.raises(DataError, match=f"{other.features['test']} was made on split 'test'"):
        _run(inputs, tmp_path / "x.h5", model, features=other.features["test"])
    assert not (tmp_path / "x.h5").exists()


def test_a_features_file_that_does_not_exist_or_is_unfinished_is_an_error(fake, tmp_path):
    """Case 5 (library)."""
    inputs, _, model = fake
    missing = tmp_path / "nowhere" / "test.h5"
    with pytest.raises(ArtifactMissingError, match=f"the feature cache {missing} does not "
                       "exist"):
        _run(inputs, tmp_path / "x.h5", model, features=missing)
    missing.with_name("test.h5.parts").mkdir(parents=True)
    with pytest.raises(ArtifactMissingError, match=f"the feature cache {missing} is "
                       "unfinished"):
        _run(inputs, tmp_path / "x.h5", model, features=missing)


def test_cli_refuses_an_unfinished_default_cache(fake, tmp_path):
    """Case 5 (CLI): an unfinished cache is not silently replaced by conv5 on the fly."""
    inputs, _, model = fake
    work = tmp_path / "work"
    shutil.copytree(model, model_dir(work, "m"))
    variant = work / "features" / dataset_tag(inputs.dataset) / "fake" / "s64-96"
    (variant / "test.h5.parts").mkdir(parents=True)
    args = ["-w", str(work), "detect", str(inputs.dataset), "--name", "m", "--proposals",
            str(inputs.proposals["test"]), "--no-bbox-reg", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "unfinished: s64-96" in result.output and "computed on the fly" not in result.output
    result = CliRunner().invoke(cli, [*args, "--features", str(variant / "missing.h5")])
    assert result.exit_code == 1 and "missing.h5 does not exist" in result.output


def test_left_out_images_are_reported_and_disk_full(fake, tmp_path, monkeypatch):
    """Cases 6 and 8 (detect)."""
    inputs, _, model = fake
    split = inputs.dataset / "ImageSets" / "Main" / "test.txt"
    original = split.read_text()
    split.write_text(original + "ghost\n")  # listed, no annotation, no image
    try:
        work = tmp_path / "work"
        shutil.copytree(model, model_dir(work, "m"))
        args = ["-w", str(work), "detect", str(inputs.dataset), "--name", "m", "--proposals",
                str(inputs.proposals["test"]), "--features", str(inputs.features["test"]),
                "--no-bbox-reg", "--device", "cpu"]
        with inject(monkeypatch, "detect:item-write:2:enospc"):
            full = CliRunner().invoke(cli, args)
        assert full.exit_code == 1 and "Error: disk full writing " in full.output
        assert "internal error" not in full.output
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "left out: 1 image(s) of split 'test'" in result.output
        assert "ghost: " in result.output
        out = detections_path(work, "m", inputs.dataset, "test")
        assert "left out of split 'test': ghost" in out.with_name("test.h5.log").read_text()
    finally:
        split.write_text(original)


# --- image mode ---

@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """A model on the zf5 trunk (random init), for detection on image files."""
    folder = tmp_path_factory.mktemp("image_model") / "models" / "z"
    write_model(folder, backbone="zf5", channels=256)
    return folder


def _picture(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (*size[::-1], 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_image_mode_goes_on_after_a_bad_file_and_keeps_every_drawing(image_model, tmp_path):
    """Case 11."""
    good_a = _picture(tmp_path / "a" / "x.jpg")
    good_b = _picture(tmp_path / "b" / "x.jpg")  # same stem: its drawing must not replace a's
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    tiny = _picture(tmp_path / "tiny.png", size=(1, 1))
    out = tmp_path / "drawn"
    args = ["-w", str(tmp_path / "work"), "detect", str(good_a), str(broken), str(tiny),
            str(good_b), "--name", "z", "--out", str(out), "--scales", "64", "--device", "cpu",
            "--no-bbox-reg"]
    shutil.copytree(image_model, tmp_path / "work" / "models" / "z")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1  # failures are an error by default, after the others
    assert "Not detected: 2 of 4 image(s)" in result.output
    assert f"{broken}: cannot read the image" in result.output
    assert f"{tiny}: image of 1x1 pixels is too small" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "x-2.detections.png",
                                                     "x.detections.png"]
    import json

    listing = json.loads((out / "detections.json").read_text())
    assert list(listing) == [str(good_a), str(good_b)]
    skipped = CliRunner().invoke(cli, [*args, "--on-error", "skip"])
    assert skipped.exit_code == 0 and "Not detected: 2 of 4" in skipped.output


def test_image_mode_with_a_file_name_that_is_not_utf8(image_model, tmp_path):
    """Case 7 (image files): cv2.imwrite crashed on such names; now they work."""
    folder = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    name = _picture(Path(folder) / "pic\udce9.jpg")
    out = tmp_path / "drawn"
    summary = detect.run_images([name], model_dir=image_model, out_dir=out, scales=(64,),
                                device="cpu", use_bbox_reg=False, max_boxes=50)
    assert not summary.failures and len(summary.results) == 1
    drawn = summary.results[0].drawn
    assert drawn.name == "pic\udce9.detections.png" and drawn.exists()
    assert os.fsencode(drawn.name) == b"pic\xe9.detections.png"
    assert Image.open(drawn).size == (64, 48)


def test_detect_on_the_cpu_scores_with_int8_fc_layers_by_default(fake, tmp_path):
    """``fc="auto"`` (the default) is int8 on the CPU: the same record as asking for int8, so
    one artifact serves both, and another than float32's."""
    inputs, _, model = fake
    summary = _run(inputs, tmp_path / "auto.h5", model)
    assert "int8" in summary.fc
    # every proposal is counted once; repeats of a footprint are scored once
    with ItemReader(inputs.proposals["test"]) as proposals:
        total = sum(proposals.group(i)["boxes"].shape[0] for i in proposals.ids())
    assert summary.windows == total and 0 < summary.distinct <= total
    assert f"windows: {total:,} scored, {summary.distinct:,} distinct" in summary.to_text()
    assert read_record(tmp_path / "auto.h5").params["fc"] == {"mode": "int8"}
    again = _run(inputs, tmp_path / "auto.h5", model, fc="int8")
    assert again.up_to_date
    floated = _run(inputs, tmp_path / "auto.h5", model, fc="float")
    assert not floated.up_to_date and "float32" in floated.fc


def _candidates(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from sppdet.detector.detections_io import DetectionsReader

    with DetectionsReader(path) as reader:
        return {i: (c.boxes, c.scores, c.labels)
                for i in reader.image_ids() for c in [reader.candidates(i)]}


@pytest.mark.parametrize("fc", ["svd", "int8"])
def test_detect_with_fast_fc_layers_scores_like_the_float_layers(fake, tmp_path, fc):
    """``fc="svd"`` at full energy is the float model up to rounding; ``int8`` scores every
    window within the quantization's error; the record and the summary name the mode, so a
    float artifact is not taken for a fast one."""
    inputs, _, model = fake
    reference = _run(inputs, tmp_path / "float.h5", model, fc="float")
    options = {"svd_energy": 1.0} if fc == "svd" else {}
    summary = _run(inputs, tmp_path / f"{fc}.h5", model, fc=fc, **options)
    assert fc in summary.fc.lower() and summary.fc in summary.to_text()
    assert reference.fc != summary.fc
    expected, got = _candidates(tmp_path / "float.h5"), _candidates(tmp_path / f"{fc}.h5")
    assert expected.keys() == got.keys() and expected
    scores_a, scores_b = [], []
    for image_id, (boxes, scores, labels) in expected.items():
        boxes_b, scores_b_i, labels_b = got[image_id]
        # the same windows score for the same classes (the threshold is far below every score)
        order_a = np.lexsort((labels, *boxes.T[::-1]))
        order_b = np.lexsort((labels_b, *boxes_b.T[::-1]))
        np.testing.assert_array_equal(boxes[order_a], boxes_b[order_b])
        np.testing.assert_array_equal(labels[order_a], labels_b[order_b])
        scores_a.append(scores[order_a])
        scores_b.append(scores_b_i[order_b])
    scores_a, scores_b = np.concatenate(scores_a), np.concatenate(scores_b)
    spread = float(scores_a.std())
    error = np.abs(scores_a - scores_b).max()
    if fc == "svd":
        assert error <= 1e-4 * max(1.0, float(np.abs(scores_a).max()))
    else:
        assert 0 < error < 0.1 * spread  # quantized (not the float path), and close to it
    assert read_record(tmp_path / f"{fc}.h5").params != read_record(
        tmp_path / "float.h5").params
