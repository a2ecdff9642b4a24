"""Fine-tuning config: validation of the settings and the learning-rate schedule."""

import math

import pytest

from sppdet.errors import ConfigError
from sppdet.training.finetune.config import FinetuneConfig, learning_rate


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
