"""Library pieces of the SVM / box-regression training (sppdet.training.windows): window
features, negatives, the shared mining stream, the per-class window store and the box
regressor's file (the SVM trainers are tested in tests/training/svm/)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from sppdet.io.item_store import ItemReader
from sppdet.training.bbox_regression import BBoxRegressor
from sppdet.ops.boxes import box_iou
from sppdet.data.voc import VOCDataset
from sppdet.errors import ConfigError, DataError, ModelError
from sppdet.features.fc_head import FcHead
from sppdet.features.cache import FeatureCache
from sppdet.ops.scales import select_scales
from sppdet.training.svm.window_selection import unique_window_indices
from sppdet.training.windows import (
    RegressionWindowStore,
    SharedNegativeStream,
    collect_positives,
    negative_masks,
)
from sppdet.features.window_features import WindowFeaturizer, window_cells

from tests.fake_training_inputs import make_inputs, write_fc


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("windows"), n_images=6, empty=("img002",))


# ----------------------------------------------------------------------------------------------
# negatives and window features
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_negative_masks_match_a_loop(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 80, size=(40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 50, size=(40, 2))], axis=1)
    gt = boxes[rng.choice(40, 4, replace=False)] + rng.uniform(-5, 5, size=(4, 4))
    labels = rng.integers(0, 3, size=4)
    masks = negative_masks(boxes, gt, labels, 4)
    for k in range(4):
        for i, box in enumerate(boxes):
            ious = [box_iou(box[None], g[None])[0, 0] for g, l in zip(gt, labels) if l == k]
            assert masks[k, i] == all(iou < 0.3 for iou in ious)


def test_negative_masks_edge_cases():
    assert negative_masks(np.zeros((0, 4)), np.zeros((1, 4)), [0], 2).shape == (2, 0)
    assert negative_masks(np.ones((3, 4)) * [0, 0, 5, 5], np.zeros((0, 4)), [], 2).all()
    with pytest.raises(DataError):
        negative_masks(np.zeros((1, 4)), np.zeros((1, 4)), [2], 2)


def test_window_cells_follow_the_pooling(inputs):
    data = VOCDataset(inputs.dataset, "trainval")
    with FeatureCache(inputs.features) as cache, ItemReader(inputs.proposals) as proposals:
        image_id = "img001"
        boxes = proposals.group(image_id)["boxes"][()]
        # add exact duplicates on the map: the same box moved by a fraction of a pixel
        boxes = np.concatenate([boxes, boxes[:5] + 0.01])
        cells, scale = window_cells(cache, image_id, boxes)
        ann = data[image_id]
        np.testing.assert_array_equal(
            scale, select_scales(boxes, (ann.height, ann.width), sorted(cache.scales)))
        pooled = cache.pool(image_id, boxes).numpy()
        kept = unique_window_indices(cells, scale)
        assert kept.size < boxes.shape[0]
        # every window's features equal those of the kept window with its footprint
        key = {tuple(cells[i]) + (scale[i],): i for i in kept}
        for i in range(boxes.shape[0]):
            np.testing.assert_array_equal(pooled[i], pooled[key[tuple(cells[i]) + (scale[i],)]])
        empty_cells, empty_scale = window_cells(cache, image_id, np.zeros((0, 4)))
        assert empty_cells.shape == (0, 4) and empty_scale.shape == (0,)


def test_featurizer_matches_pool_and_fc(inputs, tmp_path):
    fc = write_fc(tmp_path / "fc.pt", inputs.classes, inputs.channels, hidden=32)
    head, _ = FcHead.load(fc)
    with FeatureCache(inputs.features) as cache, ItemReader(inputs.proposals) as proposals:
        boxes = proposals.group("img000")["boxes"][()]
        boxes = np.concatenate([boxes, boxes[:5]])  # repeated windows: one footprint each
        pooled = cache.pool("img000", boxes)
        for layer, expected in (("pool5", pooled), ("fc6", head.features(pooled, "fc6")),
                                ("fc7", head.features(pooled, "fc7"))):
            featurize = WindowFeaturizer(cache, head, layer, batch_size=7)
            got = featurize("img000", boxes)
            assert got.dtype == np.float32 and got.shape == (boxes.shape[0], featurize.dim)
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
            assert featurize("img000", np.zeros((0, 4))).shape == (0, featurize.dim)
        assert featurize.times.windows == boxes.shape[0] and featurize.times.images == 2
        # each distinct footprint went through pooling and the fc layers once
        cells, scale = window_cells(cache, "img000", boxes)
        distinct = unique_window_indices(cells, scale).size
        assert featurize.times.distinct == distinct < boxes.shape[0]
        with pytest.raises(ConfigError):
            WindowFeaturizer(cache, None, "fc7")
        narrow = FcHead(inputs.channels * 50 + 1, len(inputs.classes), hidden=8)
        with pytest.raises(ModelError, match="another backbone"):
            WindowFeaturizer(cache, narrow, "fc7")


def test_shared_stream_yields_deduplicated_negatives_with_masks(inputs):
    data = VOCDataset(inputs.dataset, "trainval")
    truth = {a.image_id: (a.boxes, a.labels, a.difficult) for a in data}
    from sppdet.training.windows import ImageTruth

    truth = {k: ImageTruth(*v) for k, v in truth.items()}
    stream = SharedNegativeStream(str(inputs.features), str(inputs.proposals), None, "pool5",
                                  data.classes, truth)
    passes = stream(["circle", "star"])
    items = list(passes)
    assert [item.image_id for item in items] == data.image_ids
    with FeatureCache(inputs.features) as cache, ItemReader(inputs.proposals) as proposals:
        for item in items:
            ann = data[item.image_id]
            boxes = proposals.group(item.image_id)["boxes"][()]
            if item.image_id == "img002":  # no proposals at all
                assert item.features.shape == (0, inputs.channels * 50)
                continue
            cells, scale = window_cells(cache, item.image_id, boxes)
            kept = unique_window_indices(cells, scale)
            masks = negative_masks(boxes[kept], ann.boxes, ann.labels, 3)
            expected_rows = kept[masks[[0, 2]].any(axis=0)]
            np.testing.assert_array_equal(item.proposal_index, expected_rows)
            np.testing.assert_array_equal(item.negative_masks["circle"],
                                          masks[0][masks[[0, 2]].any(axis=0)])
            assert item.negative_masks["star"].all()  # no star anywhere: all are negatives
            np.testing.assert_array_equal(
                item.features, cache.pool(item.image_id, boxes[expected_rows]).numpy())
    assert passes.stats["images"] == 6 and passes.stats["featurized_windows"] > 0
    assert len(list(passes)) == 6 and passes.stats["images"] == 12  # re-iterable


def test_collect_positives_groups_by_class(inputs):
    data = VOCDataset(inputs.dataset, "trainval")
    from sppdet.training.windows import ImageTruth

    truth = {a.image_id: ImageTruth(a.boxes, a.labels, a.difficult) for a in data}
    with FeatureCache(inputs.features) as cache:
        featurize = WindowFeaturizer(cache, None, "pool5")
        extra = {"img001": np.array([[0, 0, 30, 30]], np.float32)}
        positives, difficult, norms = collect_positives(featurize, truth, data.classes,
                                                        scale_windows=extra)
        n = {name: sum(int((a.labels == k).sum()) for a in data)
             for k, name in enumerate(data.classes)}
        assert {k: v.shape[0] for k, v in positives.items()} == n
        assert positives["star"].shape == (0, featurize.dim)
        assert sum(int(d.sum()) for d in difficult.values()) == sum(int(a.difficult.sum())
                                                                    for a in data)
        np.testing.assert_allclose(norms["img001"],
                                   np.linalg.norm(featurize("img001", extra["img001"]), axis=1),
                                   rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# The per-class window store of box regression
# ----------------------------------------------------------------------------------------------


def _regression_windows(rng, n, dim):
    gt = np.array([[20.0, 30.0, 80.0, 90.0]])
    shift = rng.uniform(-8, 8, size=(n, 4))
    proposals = gt + shift
    features = np.concatenate([shift / 8.0, rng.normal(size=(n, dim - 4))], axis=1)
    return features.astype(np.float32), proposals, np.repeat(gt, n, axis=0)


def test_store_round_trip_and_chunked_fit_equals_ridge(tmp_path):
    rng = np.random.default_rng(0)
    dim = 12
    features, proposals, gt = _regression_windows(rng, 300, dim)
    with RegressionWindowStore(tmp_path / "w.h5", dim) as store:
        for first in range(0, 300, 70):
            store.append("cat", features[first:first + 70], proposals[first:first + 70],
                         gt[first:first + 70])
        assert store.counts() == {"cat": 300}
        loaded = store.load("cat")
        np.testing.assert_array_equal(loaded[0], features)
        np.testing.assert_array_equal(loaded[1], proposals)
        assert sum(c[0].shape[0] for c in store.chunks("cat", rows=64)) == 300
        for whiten in (True, False):
            reference = BBoxRegressor(lambda_=50.0, whiten=whiten).fit(
                {"cat": features}, {"cat": proposals}, {"cat": gt}, feature_scale=1.7)
            in_memory = BBoxRegressor(lambda_=50.0, whiten=whiten).fit_windows(
                store, ["cat", "dog"], feature_scale=1.7)
            chunked = BBoxRegressor(lambda_=50.0, whiten=whiten).fit_windows(
                store, ["cat", "dog"], feature_scale=1.7, max_bytes_in_memory=0)
            assert chunked.skipped_ == {"dog": "no training window with IoU > 0.5"}
            for model in (in_memory, chunked):
                np.testing.assert_allclose(model.coef_["cat"], reference.coef_["cat"],
                                           rtol=1e-6, atol=1e-9)
                np.testing.assert_allclose(model.intercept_["cat"],
                                           reference.intercept_["cat"], rtol=1e-6, atol=1e-9)
                np.testing.assert_allclose(model.target_std_["cat"],
                                           reference.target_std_["cat"])
                assert model.num_windows_["cat"] == reference.num_windows_["cat"]
    assert not (tmp_path / "w.h5").exists()


def test_store_keeps_float16_features_exactly(tmp_path):
    values = np.float16([[0.1, 3.5, 65504.0]]).astype(np.float32)
    with RegressionWindowStore(tmp_path / "h.h5", 3, feature_dtype=np.float16) as store:
        store.append("a", values, np.zeros((1, 4)), np.ones((1, 4)))
        np.testing.assert_array_equal(store.load("a")[0], values)
        with pytest.raises(DataError):
            store.append("a", values, np.zeros((2, 4)), np.ones((1, 4)))


            store.append("a", values, np.zeros((2, 4)), np.ones((1, 4)))


def test_bbox_regressor_save_load_round_trip():
    rng = np.random.default_rng(1)
    features, proposals, gt = _regression_windows(rng, 200, 8)
    model = BBoxRegressor(lambda_=10.0).fit({"cat": features}, {"cat": proposals},
                                            {"cat": gt}, feature_scale=2.0)
    buffer = io.BytesIO()
    model.save(buffer, ["cat", "dog"])
    buffer.seek(0)
    loaded, classes = BBoxRegressor.load(buffer)
    assert classes == ["cat", "dog"] and loaded.classes_ == ["cat"] and "dog" in loaded.skipped_
    np.testing.assert_array_equal(loaded.predict("cat", features, proposals),
                                  model.predict("cat", features, proposals))
    np.testing.assert_array_equal(loaded.predict("dog", features, proposals), proposals)
    moved = model.predict("cat", features, proposals)
    assert np.abs(moved - gt).mean() < 0.5 * np.abs(proposals - gt).mean()
    with pytest.raises(ConfigError):
        model.save(io.BytesIO(), ["dog"])
