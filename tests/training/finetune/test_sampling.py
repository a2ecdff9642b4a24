"""The chunk sampler's mini-batches and the pooling of a plan."""

import numpy as np
import pytest
import torch

from sppdet.errors import ConfigError, DataError
from sppdet.ops.boxes import box_iou
from sppdet.training.finetune.sampling import ChunkSampler, pool_plan
from sppdet.training.finetune_windows import SplitWindows
from tests.training.finetune.finetune_inputs import SCALES, hand_windows, split_inputs


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


def test_pool_plan_into_a_buffer_equals_a_fresh_result_and_checks_the_buffer(fake):
    windows, cache = split_inputs(fake, "train")
    rows = np.array([3, 9, 30, 1])
    flip = np.array([False, True, True, False])
    scales = np.array([64, 96, 64, 96])
    fresh = pool_plan(cache, windows, rows, flip, scales)
    buffer = torch.full((10, fresh.shape[1]), float("nan"))
    into = pool_plan(cache, windows, rows, flip, scales, out=buffer)
    assert into.data_ptr() == buffer.data_ptr() and into.shape == fresh.shape
    assert torch.equal(into, fresh)  # every used row overwritten (no NaN left)
    with pytest.raises(ConfigError, match="pooling buffer"):
        pool_plan(cache, windows, rows, flip, scales, out=torch.empty(3, fresh.shape[1]))
    with pytest.raises(ConfigError, match="pooling buffer"):
        pool_plan(cache, windows, rows, flip, scales, out=torch.empty(10, 7))
