"""An fc model refuses features of another backbone."""

import pytest

from sppdet.errors import ConfigError
from sppdet.features.cache import FeatureCache
from sppdet.training.finetune.compatibility import check_features_match, model_meta
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.trainer import FcFinetuner
from tests.fake_artifacts import make_fake_pipeline_inputs
from tests.training.finetune.finetune_inputs import SMALL, split_inputs


def test_features_of_another_backbone_are_refused(tmp_path, fake):
    other = make_fake_pipeline_inputs(tmp_path, splits={"val": 2}, trainval=False,
                                      backbone="other")
    train_cache = FeatureCache(fake.features["train"])
    meta = model_meta(train_cache, fake.classes, (6, 3, 2, 1))
    check_features_match(meta, FeatureCache(fake.features["val"]))
    with pytest.raises(ConfigError,
                       match="backbone 'other'.*stage 'cache-features' with backbone='fake'"):
        check_features_match(meta, FeatureCache(other.features["val"]), model_path="fc.pt")
    train, _ = split_inputs(fake, "train")
    val, val_cache = split_inputs(other, "val")
    with pytest.raises(ConfigError, match="backbone 'other'"):
        FcFinetuner(FinetuneConfig(iterations=2, **SMALL)).fit(
            train, train_cache, val_windows=val, val_cache=val_cache)
