"""Tests of sppdet.training.svm.weights: the svm.npz file and scoring from it."""

from __future__ import annotations

import io

import numpy as np
import pytest

from sppdet.errors import ModelError
from sppdet.training.svm.per_class import train_class_svms
from sppdet.training.svm.weights import SVMWeights
from tests.training.svm.toy_shared_svm_data import per_class_negatives
from tests.training.svm.toy_svm_data import toy_positives


def test_svm_weights_round_trip_and_scores():
    svms = train_class_svms(["cat", "dog"], {"cat": toy_positives("cat")}, per_class_negatives,
                            feature_scale=0.5)
    weights = SVMWeights.from_class_svms(svms, "fc7")
    buffer = io.BytesIO()
    weights.save(buffer)
    buffer.seek(0)
    loaded = SVMWeights.load(buffer)
    assert loaded.classes == ["cat", "dog"] and loaded.layer == "fc7"
    assert loaded.trained.tolist() == [True, False] and loaded.feature_scale == 0.5
    x = toy_positives("cat")[:4]
    scores = loaded.scores(x)
    np.testing.assert_allclose(scores[:, 0], svms.models["cat"].decision_function(x),
                               rtol=1e-4, atol=1e-4)
    assert np.isneginf(scores[:, 1]).all()
    with pytest.raises(ModelError):
        SVMWeights.load(io.BytesIO(b"not a file"))
