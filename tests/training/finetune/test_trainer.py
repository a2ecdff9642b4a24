"""The fine-tuning loop on fake artifacts: learning, seeds, resuming, the input scale, errors."""

import math

import numpy as np
import pytest
import torch

from sppdet.errors import DataError, ModelError, StaleArtifactError
from sppdet.training.finetune.config import FinetuneConfig
from sppdet.training.finetune.head_init import estimate_input_scale
from sppdet.training.finetune.sampling import pool_plan
from sppdet.training.finetune.trainer import FcFinetuner
from sppdet.training.finetune.validation import ValidationSet, evaluate, sample_validation_windows
from tests.fake_artifacts import make_fake_pipeline_inputs
from tests.training.finetune.finetune_inputs import SMALL, split_inputs


def test_training_lowers_the_loss_and_beats_chance(fake):
    train, train_cache = split_inputs(fake, "train")
    val, val_cache = split_inputs(fake, "val")
    config = FinetuneConfig(iterations=200, **SMALL)
    trainer = FcFinetuner(config).fit(train, train_cache, val_windows=val, val_cache=val_cache)
    first, last = trainer.history_[0]["loss"], trainer.history_[-1]["loss"]
    assert last < 0.6 * first
    best = trainer.best_val_
    background_share = float((trainer.val_set_.labels == 0).float().mean())
    assert best["accuracy"] > background_share + 0.05  # better than always "background"
    assert best["fg_accuracy"] > 0.5  # chance among K + 1 = 4 labels is 0.25
    assert best["loss"] == min(v["loss"] for v in trainer.val_history_)  # select_by="loss"
    assert trainer.head_.training is False and trainer.timing_.iterations == 200


def test_same_seed_same_weights_other_seed_other_weights(fake):
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=12, **SMALL)
    a = FcFinetuner(config).fit(train, cache).head_.state_dict()
    b = FcFinetuner(config).fit(train, cache).head_.state_dict()
    c = FcFinetuner(FinetuneConfig(iterations=12, seed=1, **SMALL)).fit(train, cache)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc8.weight"], c.head_.state_dict()["fc8.weight"])


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(fake, tmp_path):
    train, train_cache = split_inputs(fake, "train")
    val, val_cache = split_inputs(fake, "val")
    # checkpoint at 6 falls inside a chunk of 4 iterations; validation at 10 and 20
    config = FinetuneConfig(iterations=20, checkpoint_every=6, **SMALL)
    straight = FcFinetuner(config).fit(train, train_cache, val_windows=val, val_cache=val_cache)

    checkpoint = tmp_path / "state.pt"

    def kill_at_15(iteration):
        if iteration == 15:
            raise Killed

    with pytest.raises(Killed):
        FcFinetuner(config, checkpoint_path=checkpoint, callback=kill_at_15).fit(
            train, train_cache, val_windows=val, val_cache=val_cache)
    assert checkpoint.exists()  # last written at iteration 12
    resumed = FcFinetuner(config, checkpoint_path=checkpoint).fit(
        train, train_cache, val_windows=val, val_cache=val_cache)
    assert resumed.resumed_from_ == 12 and resumed.timing_.iterations == 8
    a, b = straight.head_.state_dict(), resumed.head_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.history_ == resumed.history_
    assert straight.val_history_ == resumed.val_history_
    assert straight.best_iteration_ == resumed.best_iteration_

    other = FinetuneConfig(iterations=20, checkpoint_every=6, **{**SMALL, "lr": 0.5})
    with pytest.raises(StaleArtifactError, match="other settings"):
        FcFinetuner(other, checkpoint_path=checkpoint).fit(train, train_cache)


def test_nan_in_features_names_the_image(tmp_path):
    fake = make_fake_pipeline_inputs(tmp_path, splits={"train": 4}, trainval=False,
                                     nan_features=["train_002"])
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=2, **{**SMALL, "images_per_chunk": 4})
    with pytest.raises(DataError, match="train_002.*NaN"):
        FcFinetuner(config).fit(train, cache)


def test_input_scale_is_folded_into_fc6(fake):
    train, train_cache = split_inputs(fake, "train")
    val, val_cache = split_inputs(fake, "val")
    scale = estimate_input_scale(train_cache, train, seed=0)
    rows = sample_validation_windows(train, n_windows=2048, fg_fraction=0.25, max_images=100)
    raw = pool_plan(train_cache, train, rows, np.zeros(len(rows), bool), None)
    assert math.isclose(scale, 1 / float(raw.double().pow(2).mean().sqrt()), rel_tol=1e-9)
    assert scale != 1.0
    trainer = FcFinetuner(FinetuneConfig(iterations=20, **SMALL)).fit(
        train, train_cache, val_windows=val, val_cache=val_cache)
    assert trainer.input_scale_ == scale
    # the saved head on raw features = the trained head on scaled features
    raw_val = ValidationSet(trainer.val_set_.features / scale, trainer.val_set_.labels, 0)
    metrics = evaluate(trainer.head_, raw_val)
    assert math.isclose(metrics["loss"], trainer.best_val_["loss"], rel_tol=1e-4)
    assert metrics["accuracy"] == pytest.approx(trainer.best_val_["accuracy"], abs=0.005)
    plain = FcFinetuner(FinetuneConfig(iterations=2, scale_inputs=False, **SMALL)).fit(
        train, train_cache)
    assert plain.input_scale_ == 1.0


def test_divergence_is_an_error_that_says_what_to_do(fake):
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=40, **{**SMALL, "lr": 1e6})
    with pytest.raises(ModelError, match="diverged at iteration .*lower the learning rate"):
        FcFinetuner(config).fit(train, cache)


def test_every_chunk_is_pooled_into_one_buffer(fake, monkeypatch):
    """Memory stays bounded: the trainer pools all chunks into one reused buffer."""
    import sppdet.training.finetune.trainer as trainer_module

    buffers = []
    real = trainer_module.pool_plan

    def spy(*args, **kwargs):
        buffers.append(kwargs["out"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "pool_plan", spy)
    train, cache = split_inputs(fake, "train")
    config = FinetuneConfig(iterations=10, **{**SMALL, "iterations_per_chunk": 3})
    FcFinetuner(config).fit(train, cache)
    assert len(buffers) == 4  # chunks of 3, 3, 3 and 1 iterations
    assert all(b is buffers[0] for b in buffers)
    assert buffers[0].shape[0] == 3 * config.batch_size
