"""Tests of sppdet.training.svm.shared: every class of a worker mined over one shared stream."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sppdet.errors import DataError
from sppdet.training.svm.estimator import HardNegativeSVM
from sppdet.training.svm.per_class import train_class_svms
from sppdet.training.svm.shared import train_class_svms_shared
from tests.training.svm.toy_shared_svm_data import CLASSES, per_class_negatives, shared_negatives
from tests.training.svm.toy_svm_data import DIM, toy_positives


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_shared_training_equals_per_class_training(n_jobs, caplog):
    positives = {"cat": toy_positives("cat"), "dog": np.zeros((0, DIM), np.float32),
                 "bird": toy_positives("bird")}
    estimator = HardNegativeSVM(retrain_every=300)
    reference = train_class_svms(CLASSES, positives, per_class_negatives, estimator=estimator,
                                 feature_scale=2.0)
    with caplog.at_level(logging.WARNING, logger="sppdet.training.svm"):
        shared = train_class_svms_shared(CLASSES, positives, shared_negatives,
                                         estimator=estimator, feature_scale=2.0, n_jobs=n_jobs)
    assert list(shared.models) == ["cat", "bird"]
    assert shared.skipped == {"dog": "no positive examples"} and "'dog'" in caplog.text
    for name in ("cat", "bird"):
        np.testing.assert_array_equal(shared.models[name].coef_, reference.models[name].coef_)
        assert shared.models[name].intercept_ == reference.models[name].intercept_
        assert shared.models[name].cached_negative_keys_ == \
            reference.models[name].cached_negative_keys_
    assert len(shared.worker_seconds) == n_jobs


def test_shared_training_validates_the_stream():
    positives = {"cat": toy_positives("cat")}

    def bad_mask(group):
        yield from (item._replace(negative_masks={"cat": np.ones(3, bool)})
                    for item in shared_negatives(group))

    with pytest.raises(DataError, match="mask"):
        train_class_svms_shared(["cat"], positives, bad_mask)

    def nan_features(group):
        for item in shared_negatives(group):
            features = item.features.copy()
            features[1, 0] = np.nan
            yield item._replace(features=features)

    with pytest.raises(DataError, match="img000"):
        train_class_svms_shared(["cat"], positives, nan_features)


def test_shared_training_records_a_class_without_negatives():
    def nothing(group):
        yield from (item._replace(negative_masks={}) for item in shared_negatives(group))

    result = train_class_svms_shared(["cat"], {"cat": toy_positives("cat")}, nothing)
    assert result.models == {} and "no negative" in result.skipped["cat"]
