"""The trained per-class SVMs as the ``svm.npz`` file the detector reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sppdet.errors import ModelError
from sppdet.io.npz import save_npz
from sppdet.training.svm.inputs import check_features

if TYPE_CHECKING:
    from sppdet.training.svm.per_class import ClassSVMs


@dataclass
class SVMWeights:
    """The per-class SVMs of a detector as stored in ``svm.npz`` and used at test time.

    Attributes:
        classes: class names, in the detector's order (``K``).
        weights: float32 ``[K, D]``, weights for *scaled* features (zeros where not trained).
        bias: float32 ``[K]``.
        trained: bool ``[K]``; a class without an SVM gets no detections.
        feature_scale: factor raw features are multiplied by before scoring (mean norm 20).
        layer: the feature layer the SVMs were trained on (``fc7``, ``fc6`` or ``pool5``).
    """

    classes: list[str]
    weights: np.ndarray
    bias: np.ndarray
    trained: np.ndarray
    feature_scale: float
    layer: str

    @classmethod
    def from_class_svms(cls, svms: ClassSVMs, layer: str) -> SVMWeights:
        arrays = svms.to_arrays()
        return cls(classes=list(svms.classes), weights=arrays["coef"],
                   bias=arrays["intercept"], trained=arrays["trained"],
                   feature_scale=float(arrays["feature_scale"]), layer=str(layer))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Scores of raw features for every class.

        Args:
            features: ``[N, D]`` raw (unscaled) features of ``layer``.

        Returns:
            float32 ``[N, K]`` ``(features * feature_scale) @ weights.T + bias``; ``-inf`` in
            the columns of classes without an SVM.
        """
        x = check_features(features, "features to score", self.weights.shape[1])
        scores = (x.astype(np.float32) * np.float32(self.feature_scale)) @ self.weights.T
        scores += self.bias
        scores[:, ~self.trained] = -np.inf
        return scores

    def save(self, path: str | Any) -> None:
        """Write the arrays with ``numpy.savez`` (keys: weights, bias, trained, feature_scale,
        layer, classes) to ``path`` (a path or a binary file object)."""
        arrays = dict(
            weights=np.asarray(self.weights, dtype=np.float32),
            bias=np.asarray(self.bias, dtype=np.float32),
            trained=np.asarray(self.trained, dtype=bool),
            feature_scale=np.float64(self.feature_scale),
            layer=np.str_(self.layer),
            classes=np.asarray(self.classes, dtype=np.str_),
        )
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Any) -> SVMWeights:
        """Read a file written by :meth:`save`.

        Raises:
            ModelError: the file is not an SVM weights file or its arrays do not fit.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                weights = np.asarray(data["weights"], dtype=np.float32)
                model = cls(classes=[str(c) for c in data["classes"].reshape(-1)],
                            weights=weights, bias=np.asarray(data["bias"], dtype=np.float32),
                            trained=np.asarray(data["trained"], dtype=bool),
                            feature_scale=float(data["feature_scale"]),
                            layer=str(data["layer"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not an sppdet SVM weights file ({exc}); rerun "
                             "`sppdet train-svm`") from exc
        k = len(model.classes)
        if (model.weights.ndim != 2 or model.weights.shape[0] != k or model.bias.shape != (k,)
                or model.trained.shape != (k,)):
            raise ModelError(f"{path}: arrays of mismatched shapes (weights "
                             f"{model.weights.shape}, bias {model.bias.shape}, {k} classes)")
        return model
