"""Fine-tuning library: the mini-batch sampler, the schedule, resuming and learning."""

import math

import numpy as np
import pytest
import torch

from tests.fake_artifacts import make_fake_pipeline_inputs
from sppdet.ops.boxes import box_iou
from sppdet.data.voc import ImageAnnotation, VOCDataset
from sppdet.errors import ConfigError, DataError, ModelError, StaleArtifactError
from sppdet.features.cache import FeatureCache
from sppdet.training.finetune import (
    ChunkSampler,
    FcFinetuner,
    FinetuneConfig,
    ValidationSet,
    check_features_match,
    estimate_input_scale,
    evaluate,
    learning_rate,
    model_meta,
    pool_plan,
    sample_validation_windows,
)
from sppdet.training.finetune_windows import SplitWindows, build_split_windows

SCALES = (480, 688, 1200)


def hand_windows(n_images=10, fg_per_image=6, bg_per_image=20):
    """Images with one 100x100 object each, proposals at known IoUs."""
    anns, proposals = [], {}
    rng = np.random.default_rng(0)
    for k in range(n_images):
        gt = np.array([[100, 100, 200, 200]], np.float32)
        anns.append(ImageAnnotation(f"im{k}", None, 500, 400, gt, np.array([k % 3]),
                                    np.zeros(1, bool), np.zeros(1, bool)))
        # heights 55..100 of a 100-wide box at the object's top: IoU 0.55..1 (positives);
        # heights 12..45: IoU 0.12..0.45 (negatives); far boxes: unused
        fg_h = rng.uniform(55, 100, fg_per_image - 1)  # the ground truth is the last positive
        bg_h = rng.uniform(12, 45, bg_per_image)
        boxes = [[100, 100, 200, 100 + h] for h in np.concatenate([fg_h, bg_h])]
        boxes += [[300, 300, 350, 350]] * 5
        proposals[f"im{k}"] = np.asarray(boxes, np.float32)
    return anns, build_split_windows(anns, proposals.get, 3)


def test_batches_hold_the_asked_ratio_from_the_chunk_images_and_iou_bands():
    anns, windows = hand_windows()
    assert windows.n_positive == 60 and windows.n_negative == 200
    sampler = ChunkSampler(windows, SCALES, batch_size=16, fg_fraction=0.25,
                           images_per_chunk=4, iterations_per_chunk=5, seed=1)
    gt = {a.image_id: a.boxes for a in anns}
    for chunk in range(6):
        plan = sampler.sample_chunk(chunk)
        assert plan.windows.shape == (5, 16) and plan.first_iteration == 5 * chunk
        labels = windows.labels[plan.windows]
        assert ((labels > 0).sum(axis=1) == 4).all() and plan.n_fg.tolist() == [4] * 5
        images = windows.image_index[plan.windows]
        assert set(images.ravel()) <= set(plan.images.tolist()) and len(plan.images) == 4
        for t in range(5):
            fg = plan.windows[t][labels[t] > 0]
            assert len(set(fg.tolist())) == len(fg)  # positives without replacement
            for row in plan.windows[t]:
                image_id = windows.image_ids[windows.image_index[row]]
                iou = box_iou(windows.boxes[row][None], gt[image_id])[0, 0]
                if windows.labels[row] > 0:
                    assert iou >= 0.5
                else:
                    assert 0.1 <= iou < 0.5
        assert set(plan.scales.ravel()) <= set(SCALES)
        # one mirroring decision per image within a chunk
        for image in plan.images:
            assert len(set(plan.flip[images == image].tolist())) <= 1


def test_images_are_visited_once_per_pass_and_half_are_mirrored():
    _, windows = hand_windows(n_images=12)
    sampler = ChunkSampler(windows, SCALES, batch_size=8, images_per_chunk=4,
                           iterations_per_chunk=2, seed=5)
    first_pass = np.concatenate([sampler.chunk_images(k) for k in range(3)])
    assert sorted(first_pass.tolist()) == list(range(12))
    flips, scales = [], []
    for chunk in range(300):
        plan = sampler.sample_chunk(chunk)
        flips.append(plan.flip.mean())
        scales.append(plan.scales.ravel())
    assert 0.45 < np.mean(flips) < 0.55
    counts = np.bincount(np.searchsorted(SCALES, np.concatenate(scales)))
    assert counts.min() / counts.max() > 0.9  # uniform over the cached scales
    no_flip = ChunkSampler(windows, SCALES, flip=False, seed=5)
    assert not no_flip.sample_chunk(0).flip.any()


def test_sampler_is_deterministic_and_a_short_plan_is_a_prefix():
    _, windows = hand_windows()
    make = lambda seed: ChunkSampler(windows, SCALES, batch_size=16, images_per_chunk=3,
                                     iterations_per_chunk=6, seed=seed)
    a, b, c = make(7).sample_chunk(4), make(7).sample_chunk(4), make(8).sample_chunk(4)
    for field in ("windows", "flip", "scales", "images"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.windows, c.windows)
    short = make(7).sample_chunk(4, 2)
    np.testing.assert_array_equal(short.windows, a.windows[:2])
    np.testing.assert_array_equal(short.scales, a.scales[:2])
    with pytest.raises(ConfigError):
        make(7).sample_chunk(0, 7)


def test_too_few_positives_fill_with_negatives():
    _, windows = hand_windows(n_images=2, fg_per_image=2, bg_per_image=30)
    sampler = ChunkSampler(windows, SCALES, batch_size=32, fg_fraction=0.25,
                           images_per_chunk=2, iterations_per_chunk=3)
    plan = sampler.sample_chunk(0)
    assert plan.n_fg.tolist() == [4, 4, 4]  # every positive, no repeats
    assert ((windows.labels[plan.windows] > 0).sum(axis=1) == 4).all()
    assert plan.windows.shape == (3, 32)
    # no positives at all: a batch of negatives
    only_bg = SplitWindows(["x"], np.zeros(5, np.int32), np.tile([[0, 0, 5, 5]], (5, 1)),
                           np.zeros(5), 2)
    plan = ChunkSampler(only_bg, SCALES, batch_size=8, iterations_per_chunk=16).sample_chunk(0)
    assert plan.n_fg.tolist() == [0] * 16 and (only_bg.labels[plan.windows] == 0).all()
    with pytest.raises(DataError, match="no training windows"):
        ChunkSampler(SplitWindows([], np.zeros(0), np.zeros((0, 4)), np.zeros(0), 2), SCALES)


def test_validation_sample_ratio_and_image_cap():
    _, windows = hand_windows()
    rows = sample_validation_windows(windows, n_windows=40, fg_fraction=0.25, seed=0)
    assert (windows.labels[rows] > 0).sum() == 10 and len(rows) == 40
    assert len(set(rows.tolist())) == 40
    rows = sample_validation_windows(windows, n_windows=1000, fg_fraction=0.25, max_images=2)
    assert len(np.unique(windows.image_index[rows])) == 2 and len(rows) == 52


def test_learning_rate_steps_in_equal_thirds():
    config = FinetuneConfig(iterations=90)
    rates = [learning_rate(i, config) for i in range(90)]
    assert rates[0] == rates[29] == 1e-3
    assert math.isclose(rates[30], 1e-4) and math.isclose(rates[59], 1e-4)
    assert math.isclose(rates[60], 1e-5) and math.isclose(rates[89], 1e-5)
    assert learning_rate(5, FinetuneConfig(iterations=10, lr_steps=1)) == 1e-3


def test_config_validation():
    with pytest.raises(ConfigError, match="iterations"):
        FinetuneConfig(iterations=0)
    with pytest.raises(ConfigError, match="select_by"):
        FinetuneConfig(select_by="best")
    with pytest.raises(ConfigError, match="fg_fraction"):
        FinetuneConfig(fg_fraction=1.5)
    assert FinetuneConfig().fg_per_batch == 32


# ------------------------------------------------------------------------- on fake artifacts


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_pipeline_inputs(tmp_path_factory.mktemp("fake"),
                                     splits={"train": 24, "val": 10})


def split_inputs(fake, split):
    data = VOCDataset(fake.dataset, split)
    cache = FeatureCache(fake.features[split])
    from sppdet.io.artifacts import ItemReader

    with ItemReader(fake.proposals[split]) as reader:
        proposals = {i: reader.group(i)["boxes"][()] for i in reader.ids()}
    windows = build_split_windows(data, proposals.get, len(data.classes))
    return windows, cache


SMALL = dict(hidden=64, lr=1e-2, images_per_chunk=8, iterations_per_chunk=4, log_every=5,
             val_every=10, val_windows=256)


def test_pool_plan_equals_pooling_window_by_window(fake):
    windows, cache = split_inputs(fake, "train")
    rows = np.array([[0, 5, 17], [40, 3, 0]])
    flip = np.array([[False, True, False], [True, False, False]])
    scales = np.array([[64, 96, 96], [64, 64, 96]])
    pooled = pool_plan(cache, windows, rows, flip, scales)
    for k, (row, f, s) in enumerate(zip(rows.ravel(), flip.ravel(), scales.ravel())):
        image_id = windows.image_ids[windows.image_index[row]]
        one = cache.pool(image_id, windows.boxes[row][None], scale=int(s), flip=bool(f))
        torch.testing.assert_close(pooled[k], one[0], rtol=0, atol=0)
    assert pool_plan(cache, windows, np.zeros(0, int), np.zeros(0, bool), None).shape == (0, 400)


def test_training_lowers_the_loss_and_beats_chance(fake):
    train, train_cache = split_inputs(fake, "train")
    val, val_cache = split_inputs(fake, "val")
    config = FinetuneConfig(iterations=200, **SMALL)
    trainer = FcFinetuner(config).fit(train, train_cache, val_windows=val, val_cache=val_cache)
    first, last = trainer.history_[0]["loss"], trainer.history_[-1]["loss"]
    assert last < 0.6 * first
    best = trainer.best_val_
    background_share = float((trainer.val_set_.labels == 0).float().mean())
    assert best["accuracy"] > background_share + 0.05  # better than always "background"
    assert best["fg_accuracy"] > 0.5  # chance among K + 1 = 4 labels is 0.25
    assert best["loss"] == min(v["loss"] for v in trainer.val_history_)  # select_by="loss"
    assert trainer.head_.training is False and trainer.timing_.iterations == 200


def test_same_seed_same_weights_other_seed_other_weights(fake):
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=12, **SMALL)
    a = FcFinetuner(config).fit(train, cache).head_.state_dict()
    b = FcFinetuner(config).fit(train, cache).head_.state_dict()
    c = FcFinetuner(FinetuneConfig(iterations=12, seed=1, **SMALL)).fit(train, cache)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc8.weight"], c.head_.state_dict()["fc8.weight"])


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(fake, tmp_path):
    train, train_cache = split_inputs(fake, "train")
    val, val_cache = split_inputs(fake, "val")
    # checkpoint at 6 falls inside a chunk of 4 iterations; validation at 10 and 20
    config = FinetuneConfig(iterations=20, checkpoint_every=6, **SMALL)
    straight = FcFinetuner(config).fit(train, train_cache, val_windows=val, val_cache=val_cache)

    checkpoint = tmp_path / "state.pt"

    def kill_at_15(iteration):
        if iteration == 15:
            raise Killed

    with pytest.raises(Killed):
        FcFinetuner(config, checkpoint_path=checkpoint, callback=kill_at_15).fit(
            train, train_cache, val_windows=val, val_cache=val_cache)
    assert checkpoint.exists()  # last written at iteration 12
    resumed = FcFinetuner(config, checkpoint_path=checkpoint).fit(
        train, train_cache, val_windows=val, val_cache=val_cache)
    assert resumed.resumed_from_ == 12 and resumed.timing_.iterations == 8
    a, b = straight.head_.state_dict(), resumed.head_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.history_ == resumed.history_
    assert straight.val_history_ == resumed.val_history_
    assert straight.best_iteration_ == resumed.best_iteration_

    other = FinetuneConfig(iterations=20, checkpoint_every=6, **{**SMALL, "lr": 0.5})
    with pytest.raises(StaleArtifactError, match="other settings"):
        FcFinetuner(other, checkpoint_path=checkpoint).fit(train, train_cache)


def test_nan_in_features_names_the_image(tmp_path):
    fake = make_fake_pipeline_inputs(tmp_path, splits={"train": 4}, trainval=False,
                                     nan_features=["train_002"])
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=2, **{**SMALL, "images_per_chunk": 4})
    with pytest.raises(DataError, match="train_002.*NaN"):
        FcFinetuner(config).fit(train, cache)


def test_features_of_another_backbone_are_refused(tmp_path, fake):
    other = make_fake_pipeline_inputs(tmp_path, splits={"val": 2}, trainval=False,
                                      backbone="other")
    train_cache = FeatureCache(fake.features["train"])
    meta = model_meta(train_cache, fake.classes, (6, 3, 2, 1))
    check_features_match(meta, FeatureCache(fake.features["val"]))
    with pytest.raises(ConfigError, match="backbone 'other'.*cache-features --backbone fake"):
        check_features_match(meta, FeatureCache(other.features["val"]), model_path="fc.pt")
    train, _ = split_inputs(fake, "train")
    val, val_cache = split_inputs(other, "val")
    with pytest.raises(ConfigError, match="backbone 'other'"):
        FcFinetuner(FinetuneConfig(iterations=2, **SMALL)).fit(
            train, train_cache, val_windows=val, val_cache=val_cache)


def test_input_scale_is_folded_into_fc6(fake):
    train, train_cache = split_inputs(fake, "train")
    val, val_cache = split_inputs(fake, "val")
    scale = estimate_input_scale(train_cache, train, seed=0)
    rows = sample_validation_windows(train, n_windows=2048, fg_fraction=0.25, max_images=100)
    raw = pool_plan(train_cache, train, rows, np.zeros(len(rows), bool), None)
    assert math.isclose(scale, 1 / float(raw.double().pow(2).mean().sqrt()), rel_tol=1e-9)
    assert scale != 1.0
    trainer = FcFinetuner(FinetuneConfig(iterations=20, **SMALL)).fit(
        train, train_cache, val_windows=val, val_cache=val_cache)
    assert trainer.input_scale_ == scale
    # the saved head on raw features = the trained head on scaled features
    raw_val = ValidationSet(trainer.val_set_.features / scale, trainer.val_set_.labels, 0)
    metrics = evaluate(trainer.head_, raw_val)
    assert math.isclose(metrics["loss"], trainer.best_val_["loss"], rel_tol=1e-4)
    assert metrics["accuracy"] == pytest.approx(trainer.best_val_["accuracy"], abs=0.005)
    plain = FcFinetuner(FinetuneConfig(iterations=2, scale_inputs=False, **SMALL)).fit(
        train, train_cache)
    assert plain.input_scale_ == 1.0


def test_divergence_is_an_error_that_says_what_to_do(fake):
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=40, **{**SMALL, "lr": 1e6})
    with pytest.raises(ModelError, match="diverged at iteration .*lower the learning rate"):
        FcFinetuner(config).fit(train, cache)
