"""Classifier training: size schedules, shared weights, determinism and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sppdet.backbones import build_backbone
from sppdet.classification.model import SPPClassifier
from sppdet.classification.training import ClassifierTrainer, PretrainConfig
from sppdet.errors import ConfigError, DataError, ModelError, StaleArtifactError

SMALL = dict(crop_size=64, small_size=48, image_size=72, batch_size=4, hidden=16, lr=0.01,
             val_fraction=0.0)


def _data(n: int = 10, classes: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (72, 72 + 8 * (i % 3), 3), dtype=np.uint8) for i in range(n)]
    return images, np.arange(n) % classes


def _model(seed: int = 0) -> SPPClassifier:
    return SPPClassifier(build_backbone("zf5", seed=seed), 3, hidden=16, seed=seed)


def test_input_size_schedules() -> None:
    assert [PretrainConfig(**SMALL, epochs=4).input_size(e) for e in range(4)] == [64] * 4
    alternate = PretrainConfig(**SMALL, multi_size="alternate")
    assert [alternate.input_size(e) for e in range(4)] == [64, 48, 64, 48]
    random = PretrainConfig(**SMALL, multi_size="random", seed=3)
    sizes = [random.input_size(e) for e in range(12)]
    assert all(48 <= s <= 64 for s in sizes) and len(set(sizes)) > 3
    assert sizes == [PretrainConfig(**SMALL, multi_size="random", seed=3).input_size(e)
                     for e in range(12)]
    with pytest.raises(ConfigError):
        PretrainConfig(**{**SMALL, "small_size": 64}, multi_size="alternate")
    with pytest.raises(ConfigError):
        PretrainConfig(**{**SMALL, "image_size": 60})


def test_fixed_learning_rate_schedule() -> None:
    images, labels = _data()
    config = PretrainConfig(**SMALL, epochs=3, lr_drop_epochs=(1,))
    result = ClassifierTrainer(config).train(_model(), images, labels)
    assert [round(stats.lr, 6) for stats in result.history] == [0.01, 0.001, 0.001]
    with pytest.raises(ConfigError):
        PretrainConfig(**SMALL, lr_drop_epochs=(3, 2))
    with pytest.raises(ConfigError):
        PretrainConfig(**SMALL, lr_drop_epochs=(0,))


def test_multi_size_alternates_inputs_and_shares_every_weight() -> None:
    images, labels = _data()
    config = PretrainConfig(**SMALL, epochs=2, multi_size="alternate")
    model = _model()
    seen: list[tuple[int, int]] = []
    hook = model.backbone.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape[2:]) if module.training else None))
    snapshots = []
    trainer = ClassifierTrainer(config)
    trainer.train(model, images, labels, on_epoch=lambda stats: snapshots.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}))
    hook.remove()
    batches = (len(images) + 3) // 4
    assert [s for s in seen if s is not None] == [(64, 64)] * batches + [(48, 48)] * batches
    # one set of weights: the epoch at 48 moved every parameter that the epoch at 64 trained
    changed = [key for key in snapshots[0]
               if not torch.equal(snapshots[0][key], snapshots[1][key])]
    assert set(changed) == {name for name, _ in model.named_parameters()}
    assert model.fc6.in_features == 256 * 50


def test_batches_are_deterministic_and_differ_by_epoch() -> None:
    images, _ = _data()
    trainer = ClassifierTrainer(PretrainConfig(**SMALL, epochs=2))
    first = list(trainer.batches(images, 0))
    again = list(trainer.batches(images, 0))
    other = list(trainer.batches(images, 1))
    assert all(np.array_equal(a, b) for (ra, va), (rb, vb) in zip(first, again)
               for a, b in zip(va, vb))
    assert not np.array_equal(np.concatenate([r for r, _ in first]),
                              np.concatenate([r for r, _ in other]))
    assert sorted(np.concatenate([r for r, _ in first]).tolist()) == list(range(len(images)))


def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path) -> None:
    images, labels = _data()
    config = PretrainConfig(**SMALL, epochs=3, multi_size="alternate")
    straight = _model()
    ClassifierTrainer(config).train(straight, images, labels)

    state = tmp_path / "state.pt"
    killed = _model()

    def kill_after_second(stats) -> None:
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ClassifierTrainer(config, checkpoint_path=state, identity="run").train(
            killed, images, labels, on_epoch=kill_after_second)
    resumed = _model()
    result = ClassifierTrainer(config, checkpoint_path=state, identity="run").train(
        resumed, images, labels)
    assert result.resumed_from_epoch == 2
    assert [s.epoch for s in result.history] == [0, 1, 2]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    with pytest.raises(StaleArtifactError):
        ClassifierTrainer(config, checkpoint_path=state, identity="other").train(
            _model(), images, labels)
    state.write_bytes(b"truncated")
    with pytest.raises(ModelError, match="cannot read"):
        ClassifierTrainer(config, checkpoint_path=state, identity="run").train(
            _model(), images, labels)


def test_training_learns_an_easy_task() -> None:
    """Two colours, two classes: the held-out error falls to 0."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(24):
        label = i % 2
        image = np.full((72, 72, 3), (200, 40, 40) if label else (40, 40, 200), dtype=np.uint8)
        image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        images.append(image)
        labels.append(label)
    labels = np.array(labels)
    model = SPPClassifier(build_backbone("zf5"), 2, hidden=16)
    config = PretrainConfig(**{**SMALL, "lr": 0.01}, epochs=5, jitter=0.0)
    result = ClassifierTrainer(config).train(model, images[:16], labels[:16], images[16:],
                                             labels[16:])
    assert result.history[-1].val_error == 0.0
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_bad_examples_are_refused() -> None:
    images, labels = _data()
    trainer = ClassifierTrainer(PretrainConfig(**SMALL, epochs=1))
    with pytest.raises(DataError, match="shorter than the crop"):
        trainer.train(_model(), [np.zeros((40, 80, 3), np.uint8)], np.array([0]))
    with pytest.raises(DataError, match="labels must lie"):
        trainer.train(_model(), images, labels + 5)
    with pytest.raises(DataError, match="no training"):
        trainer.train(_model(), [], np.zeros(0))
