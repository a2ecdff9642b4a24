"""Tests of sppdet.training.svm.per_class: one stream per class, the classes in parallel."""

from __future__ import annotations

import logging

import numpy as np

from sppdet.training.svm.estimator import HardNegativeSVM
from sppdet.training.svm.per_class import train_class_svms
from tests.training.svm.toy_svm_data import DIM, no_negatives, toy_negatives, toy_positives


def test_train_class_svms_parallel_equals_serial_and_skips_empty_classes(caplog):
    classes = ["cat", "dog", "bird"]
    positives = {"cat": toy_positives("cat"), "dog": np.zeros((0, DIM), np.float32),
                 "bird": toy_positives("bird")}
    estimator = HardNegativeSVM(retrain_every=300)
    with caplog.at_level(logging.WARNING, logger="sppdet.training.svm"):
        serial = train_class_svms(classes, positives, toy_negatives, estimator=estimator,
                                  feature_scale=2.0, n_jobs=1)
    parallel = train_class_svms(classes, positives, toy_negatives, estimator=estimator,
                                feature_scale=2.0, n_jobs=2)
    assert list(serial.models) == ["cat", "bird"] == list(parallel.models)
    assert serial.skipped == {"dog": "no positive examples"} == parallel.skipped
    assert "'dog'" in caplog.text
    for name in ("cat", "bird"):
        np.testing.assert_array_equal(serial.models[name].coef_, parallel.models[name].coef_)
        assert serial.models[name].intercept_ == parallel.models[name].intercept_
    assert not hasattr(estimator, "coef_")  # the prototype is cloned, never fitted
    arrays = serial.to_arrays()
    assert arrays["coef"].shape == (3, DIM) and arrays["trained"].tolist() == [True, False, True]
    assert not arrays["coef"][1].any()
    x = toy_positives("cat")[:5]
    expected = serial.models["cat"].decision_function(x)
    stacked = (x * arrays["feature_scale"]) @ arrays["coef"].T + arrays["intercept"]
    np.testing.assert_allclose(stacked[:, 0], expected, rtol=1e-4, atol=1e-4)


def test_train_class_svms_records_a_class_without_negatives():
    result = train_class_svms(["cat"], {"cat": toy_positives("cat")}, no_negatives)
    assert result.models == {} and "no negative" in result.skipped["cat"]
