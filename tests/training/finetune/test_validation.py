"""The fixed validation sample of fine-tuning."""

import numpy as np

from sppdet.training.finetune.validation import sample_validation_windows
from tests.training.finetune.finetune_inputs import hand_windows


def test_validation_sample_ratio_and_image_cap():
    _, windows = hand_windows()
    rows = sample_validation_windows(windows, n_windows=40, fg_fraction=0.25, seed=0)
    assert (windows.labels[rows] > 0).sum() == 10 and len(rows) == 40
    assert len(set(rows.tolist())) == 40
    rows = sample_validation_windows(windows, n_windows=1000, fg_fraction=0.25, max_images=2)
    assert len(np.unique(windows.image_index[rows])) == 2 and len(rows) == 52
