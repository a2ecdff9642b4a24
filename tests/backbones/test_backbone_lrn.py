"""The banded LRN equals torch.nn.LocalResponseNorm (and so Caffe's across-channel LRN)."""

from __future__ import annotations

import pytest
import torch

from sppdet.backbones.lrn import CrossChannelLRN, local_response_norm


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("channels", [1, 2, 3, 6, 96])
def test_matches_torch_forward_and_gradient(size, channels):
    generator = torch.Generator().manual_seed(size * 100 + channels)
    x = (torch.randn(2, channels, 5, 7, generator=generator, dtype=torch.float64) * 30)
    x.requires_grad_(True)
    reference = torch.nn.LocalResponseNorm(size, alpha=5e-3, beta=0.75, k=2.0)(x)
    ours = local_response_norm(x, size, alpha=5e-3, beta=0.75, k=2.0)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    (grad_reference,) = torch.autograd.grad(reference, x, upstream)
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_zf5_settings_float32_to_1e5(memory_format):
    # ZF-5's LRN (size 3, alpha 5e-5, beta 0.75) on activations of ZF-5's magnitude.
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 96, 23, 31, generator=generator) * 200).relu()
    x = x.contiguous(memory_format=memory_format)
    reference = torch.nn.LocalResponseNorm(3, alpha=5e-5, beta=0.75, k=1.0)(x)
    ours = CrossChannelLRN(3, alpha=5e-5, beta=0.75, k=1.0)(x)
    assert ours.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # The normalisation must actually act here (so the comparison is not trivial).
    assert (ours - x).abs().max() > 1.0


def test_hand_computed_case():
    # Channels (1, 2, 3) at one pixel, size 3, alpha 3, beta 1, k 1:
    # sums of squares over windows {0,1}, {0,1,2}, {1,2} = 5, 14, 13; divided by size 3.
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    out = local_response_norm(x, size=3, alpha=3.0, beta=1.0, k=1.0).flatten()
    expected = torch.tensor([1 / (1 + 5), 2 / (1 + 14), 3 / (1 + 13)])
    torch.testing.assert_close(out, expected)


def test_empty_and_bad_inputs():
    empty = torch.zeros(0, 96, 4, 4)
    assert local_response_norm(empty, 3).shape == empty.shape
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        local_response_norm(torch.zeros(3, 4, 5), 3)
    with pytest.raises(ValueError, match="size"):
        CrossChannelLRN(0)


def test_zf5_uses_the_banded_lrn_with_caffe_settings(random_backbone):
    norms = [m for m in random_backbone("zf5").modules() if isinstance(m, CrossChannelLRN)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in norms] == [(3, 5e-5, 0.75, 1.0)] * 2
