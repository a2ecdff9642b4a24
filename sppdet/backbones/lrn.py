"""Across-channel local response normalisation (LRN) with a banded channel sum.

Hand-written because PyTorch's ``nn.LocalResponseNorm`` computes the channel-window sum with
``avg_pool3d`` over a padded 5-D view, which took about half of ZF-5's conv time on a CPU
(REFERENCE 12). The window sum is a banded ``[C, C]`` matrix times the squared input; adding
``size`` shifted channel slices computes exactly that product without the zeros and measured
faster here than both ``avg_pool3d`` and a dense matmul (benchmarks/backbone_speed.py). The
result equals ``nn.LocalResponseNorm`` (tested to 1e-5, forward and gradient).

Semantics (identical in Caffe's ``LRN`` layer with ``norm_region: ACROSS_CHANNELS`` and in
PyTorch's ``LocalResponseNorm`` for odd ``size``)::

    out[c] = x[c] / (k + alpha / size * sum_{c' in window(c)} x[c']^2) ** beta

with ``window(c) = [c - size // 2, c + (size - 1) // 2]`` clipped to the existing channels
(zero padding; the divisor stays ``size`` at the borders). Caffe's ``alpha`` is therefore passed
to PyTorch unchanged (both divide by ``size``); cuda-convnet's ``alpha`` is not divided by the
window size and would have to be multiplied by ``size``.
"""

from __future__ import annotations

from torch import Tensor, nn


def local_response_norm(
    x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> Tensor:
    """Across-channel LRN of ``x`` ``[B, C, H, W]`` (any memory format), same shape and dtype.

    The window sum is the product with the banded ``[C, C]`` matrix that has ones on the
    diagonals ``-(size // 2) .. (size - 1) // 2``; it is evaluated as one shifted slice-add per
    non-zero diagonal (``size`` memory-bound passes instead of a dense ``C x C`` matmul).

    Args:
        x: input activations ``[B, C, H, W]``, float.
        size: number of channels in the window (Caffe ``local_size``).
        alpha: scale, divided by ``size`` as in Caffe and PyTorch.
        beta: exponent.
        k: additive constant (Caffe ``k``, default 1).
    """
    if x.dim() != 4:
        raise ValueError(f"local_response_norm expects [B, C, H, W], got {tuple(x.shape)}")
    if x.numel() == 0:
        return x
    squared = x * x
    window_sum = squared.clone()
    channels = x.shape[1]
    for shift in range(1, min(size // 2, channels - 1) + 1):  # c' = c - shift
        window_sum[:, shift:] += squared[:, :-shift]
    for shift in range(1, min((size - 1) // 2, channels - 1) + 1):  # c' = c + shift
        window_sum[:, :-shift] += squared[:, shift:]
    return window_sum.mul_(alpha / size).add_(k).pow_(-beta).mul_(x)


class CrossChannelLRN(nn.Module):
    """Module wrapper of :func:`local_response_norm` (drop-in for ``nn.LocalResponseNorm``)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
