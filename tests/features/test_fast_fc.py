"""Truncated-SVD and int8 fc layers against the float head they approximate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sppdet.errors import ConfigError
from sppdet.features.fast_fc import (FC_MODES, fast_fc_head, int8_available, int8_head,
                                     resolve_fc_mode, svd_head, svd_linear, svd_rank)
from sppdet.features.fc_head import FcHead


def low_rank_head(in_dim=96, hidden=64, classes=3, rank=8, noise=0.01, seed=0) -> FcHead:
    """A head whose fc6/fc7 are rank-``rank`` plus a little noise, as trained fc layers are
    (a dominant low-rank part), so a truncated SVD can be both small and close."""
    generator = torch.Generator().manual_seed(seed)
    head = FcHead(in_dim, classes, hidden=hidden, seed=seed).eval()
    with torch.no_grad():
        for layer in (head.fc6, head.fc7):
            out, inp = layer.weight.shape
            low = torch.randn(out, rank, generator=generator) @ torch.randn(
                rank, inp, generator=generator) / inp ** 0.5
            layer.weight.copy_(low + noise * torch.randn(out, inp, generator=generator))
            layer.bias.copy_(0.1 * torch.randn(out, generator=generator))
    return head


def test_svd_rank_by_energy_hand_computed():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # squares 9, 4, 1, 0 of 14
    assert svd_rank(s, 9 / 14) == 1
    assert svd_rank(s, 9 / 14 + 1e-6) == 2
    assert svd_rank(s, 13 / 14) == 2
    assert svd_rank(s, 0.99) == 3
    assert svd_rank(s, 1.0) == 3  # the zero singular value is never needed
    assert svd_rank(torch.zeros(3), 0.5) == 1
    with pytest.raises(ConfigError, match="energy"):
        svd_rank(s, 0.0)


def test_svd_at_full_rank_equals_the_float_layer():
    torch.manual_seed(0)
    layer = nn.Linear(40, 24)
    two, rank = svd_linear(layer, rank=1000)
    assert rank.rank == rank.full == 24 and rank.energy == pytest.approx(1.0)
    x = torch.randn(50, 40)
    assert torch.allclose(two(x), layer(x), atol=1e-5, rtol=0)
    full_head = FcHead(40, 2, hidden=24, seed=1).eval()
    fast, ranks = svd_head(full_head, energy=1.0)
    assert {r.rank for r in ranks.values()} == {24}
    for name in ("fc6", "fc7"):
        assert torch.allclose(fast.features(x, name), full_head.features(x, name), atol=1e-5)


def test_svd_factors_are_the_layer_shapes_and_keep_the_bias():
    layer = nn.Linear(30, 20)
    two, rank = svd_linear(layer, rank=5)
    assert rank.rank == 5
    assert two[0].weight.shape == (5, 30) and two[0].bias is None
    assert two[1].weight.shape == (20, 5) and torch.equal(two[1].bias, layer.bias.detach())


def test_svd_at_the_chosen_energy_is_close_and_small():
    head = low_rank_head()
    fast, ranks = svd_head(head, energy=0.99)
    assert all(r.rank < r.full // 2 and r.energy >= 0.99 for r in ranks.values())
    x = torch.relu(torch.randn(200, 96, generator=torch.Generator().manual_seed(3)))
    want, got = head.features(x, "fc7"), fast.features(x, "fc7")
    relative = float((got - want).norm() / want.norm())
    assert relative < 0.05
    # the best rank-r approximation error: sqrt of the discarded energy bounds the weight error
    w = head.fc6.weight.detach()
    approx = (fast.fc6[1].weight @ fast.fc6[0].weight).detach()
    discarded = 1.0 - ranks["fc6"].energy
    assert float((approx - w).norm() / w.norm()) == pytest.approx(discarded ** 0.5, rel=1e-3)


def test_int8_head_is_close_to_the_float_head():
    head = low_rank_head(noise=0.05)
    quantized = int8_head(head)
    assert type(quantized.fc6).__module__.startswith("torch.ao.nn.quantized")
    x = torch.relu(torch.randn(300, 96, generator=torch.Generator().manual_seed(4)))
    for layer in ("fc6", "fc7"):
        want, got = head.features(x, layer), quantized.features(x, layer)
        # int8 weights and activations: a few per cent of the output's scale
        assert float((got - want).abs().max() / want.abs().max()) < 0.05
    logits_want, logits_got = head(x), quantized(x)
    assert (logits_want.argmax(1) == logits_got.argmax(1)).float().mean() > 0.95
    assert head.fc6.weight.dtype == torch.float32  # the trained head is untouched


def test_fast_fc_head_modes():
    head = low_rank_head()
    same, text = fast_fc_head(head, "float")
    assert same is head and "float32" in text
    _, text = fast_fc_head(head, "svd", energy=0.99)
    assert "fc6 rank" in text and "fc7 rank" in text
    _, text = fast_fc_head(head, "int8")
    assert "int8" in text
    with pytest.raises(ConfigError, match="fc mode"):
        fast_fc_head(head, "fp16")


def test_auto_is_int8_on_the_cpu_and_float_on_a_gpu():
    assert resolve_fc_mode("auto", "cpu") == "int8"
    assert resolve_fc_mode("auto", torch.device("cpu")) == "int8"
    # torch.device("cuda") needs no GPU to construct, so the rule is checked everywhere
    assert resolve_fc_mode("auto", torch.device("cuda", 0)) == "float"
    assert resolve_fc_mode("auto", "cuda") == "float"
    for mode in FC_MODES:  # an explicit mode is kept on any device
        assert resolve_fc_mode(mode, "cpu") == mode
        assert resolve_fc_mode(mode, "cuda") == mode
    with pytest.raises(ConfigError, match="fc mode"):
        resolve_fc_mode("fp16", "cpu")


def test_auto_falls_back_to_float_where_torch_cannot_run_int8(monkeypatch):
    assert int8_available()  # the pinned torch can: the default above is int8
    import sppdet.features.fast_fc as fast_fc

    monkeypatch.setattr(fast_fc, "_quantized_engines", lambda: ["none"])
    assert not int8_available()
    assert resolve_fc_mode("auto", "cpu") == "float"
    assert resolve_fc_mode("int8", "cpu") == "int8"  # asked for: kept (int8_head then fails)


def test_the_cli_declares_the_library_modes_and_default_energy():
    from sppdet.features.fast_fc import DEFAULT_SVD_ENERGY, FC_CHOICES
    from sppdet.stages import detect, params

    assert params.DETECT_FC_MODES == FC_CHOICES
    assert params.DEFAULT_SVD_ENERGY == DEFAULT_SVD_ENERGY
    assert params.DEFAULT_DETECT_FC == detect.DEFAULT_FC == "auto"


def test_int8_head_is_quiet():
    """int8 is the CPU default: torch's deprecation notices of its eager quantization would
    print at every detect, so making the head must warn nothing."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantized = int8_head(FcHead(10, 2, hidden=8))
        quantized(torch.randn(3, 10))
