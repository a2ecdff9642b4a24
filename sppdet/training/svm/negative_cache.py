"""The cached negatives of one class during hard-negative mining."""

from __future__ import annotations

import numpy as np


class NegativeCache:
    """The cached negatives of one class: a growing feature buffer, their identities and their
    scores under the current model (NaN before the first model).

    Rows keep their insertion order; eviction compacts the buffers in place.
    """

    def __init__(self, dim: int, dtype: np.dtype) -> None:
        self._features = np.empty((0, dim), dtype=dtype)
        self._image_code = np.empty(0, dtype=np.int64)
        self._proposal = np.empty(0, dtype=np.int64)
        self._score = np.empty(0, dtype=np.float64)
        self.size = 0

    @property
    def features(self) -> np.ndarray:
        return self._features[: self.size]

    @property
    def image_code(self) -> np.ndarray:
        return self._image_code[: self.size]

    @property
    def proposal(self) -> np.ndarray:
        return self._proposal[: self.size]

    @property
    def score(self) -> np.ndarray:
        return self._score[: self.size]

    def contains(self, image_code: int, proposal_index: np.ndarray) -> np.ndarray:
        """Mask ``[n]``: which of this image's proposals are cached already."""
        cached = self.proposal[self.image_code == image_code]
        return np.isin(proposal_index, cached)

    def add(
        self,
        image_code: int,
        features: np.ndarray,
        proposal_index: np.ndarray,
        score: np.ndarray,
    ) -> None:
        n = features.shape[0]
        needed = self.size + n
        if needed > self._features.shape[0]:
            capacity = max(needed, int(1.5 * self._features.shape[0]), 1024)
            self._features = _grow(self._features, capacity, self.size)
            self._image_code = _grow(self._image_code, capacity, self.size)
            self._proposal = _grow(self._proposal, capacity, self.size)
            self._score = _grow(self._score, capacity, self.size)
        self._features[self.size:needed] = features
        self._image_code[self.size:needed] = image_code
        self._proposal[self.size:needed] = proposal_index
        self._score[self.size:needed] = score
        self.size = needed

    def set_scores(self, score: np.ndarray) -> None:
        self._score[: self.size] = score

    def keep(self, mask: np.ndarray) -> None:
        """Keep the rows where ``mask`` is True, in their order."""
        index = np.flatnonzero(mask)
        n = index.size
        self._features[:n] = self._features[index]
        self._image_code[:n] = self._image_code[index]
        self._proposal[:n] = self._proposal[index]
        self._score[:n] = self._score[index]
        self.size = n


def _grow(array: np.ndarray, capacity: int, used: int) -> np.ndarray:
    grown = np.empty((capacity,) + array.shape[1:], dtype=array.dtype)
    grown[:used] = array[:used]
    return grown
