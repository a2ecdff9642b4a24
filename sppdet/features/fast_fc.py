"""Faster fc layers at test time: truncated SVD (Fast R-CNN section 3.2) or int8 weights.

At detection time fc6 and fc7 on ~2,000 windows cost more than the conv trunk on a CPU
(REFERENCE section 12). Two approximations of a trained :class:`~sppdet.features.fc_head.FcHead`
trade a little accuracy for time; both leave the trained head untouched and return a new one:

* ``svd``: each of fc6 and fc7, ``y = W x + b`` with ``W`` of ``[out, in]``, becomes two layers
  ``y = U_r (S_r V_r^T x) + b`` (the top ``r`` singular triplets of ``W``): ``r (in + out)``
  multiply-adds instead of ``in * out``. ``r`` is the smallest rank keeping a fraction
  ``energy`` of ``sum(s_i^2)`` (the squared Frobenius norm), or a given rank. fc8 is small and
  stays as is.
* ``int8``: PyTorch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``): int8
  weights per output channel, activations quantized per batch on the fly, int32 accumulation.
  CPU only.

``float`` is the trained head itself. :func:`fast_fc_head` picks one; ``auto``
(:func:`resolve_fc_mode`) is ``int8`` on the CPU and ``float`` elsewhere: on the demo and BCCD
models int8 scored within 0.3 mAP of float32 at 0.57-0.59x its fc time (BENCHMARKS.md), and
quantized linear layers do not run on CUDA.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sppdet.errors import ConfigError
from sppdet.features.fc_head import FcHead

FC_MODES = ("float", "svd", "int8")
#: What a user may ask for: a mode, or ``auto`` (:func:`resolve_fc_mode`).
FC_CHOICES = ("auto", *FC_MODES)
#: Retained squared singular values (fraction of the squared Frobenius norm) by default.
DEFAULT_SVD_ENERGY = 0.99


@dataclass(frozen=True)
class SvdRank:
    """The rank chosen for one layer: ``rank`` of ``full`` and the energy it keeps."""

    rank: int
    full: int
    energy: float


def svd_rank(singular_values: Tensor, energy: float) -> int:
    """Smallest ``r`` with ``sum(s[:r]^2) >= energy * sum(s^2)`` (``s`` sorted descending).

    Args:
        singular_values: ``[k]`` non-negative, descending.
        energy: in ``(0, 1]``; 1 keeps every non-zero singular value.
    """
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"SVD energy must be in (0, 1], got {energy}")
    squares = singular_values.double() ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 1  # a zero matrix: rank 1 of zeros reproduces it
    kept = torch.cumsum(squares, dim=0) / total
    # The last cumulative value is 1 up to rounding; clamp so energy=1 always finds a rank.
    reached = torch.nonzero(kept >= min(energy, float(kept[-1])))
    return int(reached[0, 0]) + 1


def svd_linear(layer: nn.Linear, *, energy: float | None = DEFAULT_SVD_ENERGY,
               rank: int | None = None) -> tuple[nn.Sequential, SvdRank]:
    """Truncated SVD of ``layer`` as two linear layers (Fast R-CNN 3.2).

    ``W = U S V^T`` (float64, then cast back); the first layer has weight ``S_r V_r^T``
    (``[r, in]``, no bias), the second weight ``U_r`` (``[out, r]``) and the original bias.

    Args:
        layer: the trained ``nn.Linear`` (``[out, in]`` weight).
        energy: keep the smallest rank retaining this fraction of ``sum(s^2)``; ignored when
            ``rank`` is given.
        rank: keep exactly this many singular values (clipped to ``min(in, out)``).

    Returns:
        ``(nn.Sequential(first, second), SvdRank)``.
    """
    weight = layer.weight.detach().double()  # [out, in]
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # [out,k], [k], [k,in]
    full = int(s.shape[0])
    if rank is not None:
        if rank < 1:
            raise ConfigError(f"SVD rank must be >= 1, got {rank}")
        r = min(int(rank), full)
    elif energy is not None:
        r = svd_rank(s, energy)
    else:
        raise ConfigError("svd_linear needs an energy or a rank")
    squares = s ** 2
    kept = float(squares[:r].sum() / squares.sum()) if float(squares.sum()) > 0 else 1.0
    dtype = layer.weight.dtype
    first = nn.Linear(weight.shape[1], r, bias=False)
    second = nn.Linear(r, weight.shape[0], bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_((s[:r, None] * vh[:r]).to(dtype))
        second.weight.copy_(u[:, :r].to(dtype))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    device = layer.weight.device
    return nn.Sequential(first, second).to(device), SvdRank(r, full, kept)


def svd_head(head: FcHead, *, energy: float | None = DEFAULT_SVD_ENERGY,
             rank: int | None = None) -> tuple[FcHead, dict[str, SvdRank]]:
    """A copy of ``head`` with fc6 and fc7 replaced by their truncated SVDs; fc8 unchanged."""
    fast = copy.deepcopy(head).eval()
    ranks = {}
    for name in ("fc6", "fc7"):
        replaced, ranks[name] = svd_linear(getattr(head, name), energy=energy, rank=rank)
        setattr(fast, name, replaced)
    return fast, ranks


def int8_head(head: FcHead) -> FcHead:
    """A copy of ``head`` whose fc6, fc7 and fc8 have int8 weights (dynamic quantization, CPU).

    Raises:
        ConfigError: the head is not on the CPU (quantized linear layers run on the CPU only).
    """
    if head.fc6.weight.device.type != "cpu":
        raise ConfigError("int8 fc layers run on the CPU only; move the head to the CPU or use "
                          "the float or svd fc layers")
    fast = copy.deepcopy(head).eval()
    with warnings.catch_warnings():
        # torch >= 2.10 marks torch.ao.quantization deprecated in favour of the torchao package
        # (not a dependency); its eager dynamic quantization still works and is what we need.
        warnings.simplefilter("ignore", DeprecationWarning)
        # ... and its quantized tensors warn the same as a UserWarning (raised from C++).
        warnings.filterwarnings("ignore", message=r"(?s).*quantize.*deprecated",
                                category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(fast, {nn.Linear}, dtype=torch.qint8)


def int8_available() -> bool:
    """Whether this torch build can run int8 linear layers on the CPU: eager dynamic
    quantization present (torch marks it deprecated) and a quantized engine built in."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return any(engine != "none" for engine in _quantized_engines())


def _quantized_engines() -> list[str]:
    """The quantized engines this torch build has (``none`` when it has none)."""
    return list(torch.backends.quantized.supported_engines)


def resolve_fc_mode(mode: str, device: torch.device | str) -> str:
    """The fc mode to score windows with on ``device``: ``auto`` is ``int8`` on the CPU when
    this torch build can (:func:`int8_available`) and ``float`` otherwise; any other mode is
    returned as given.

    Raises:
        ConfigError: ``mode`` is not one of :data:`FC_CHOICES`.
    """
    if mode not in FC_CHOICES:
        raise ConfigError(f"fc mode must be one of {FC_CHOICES}, got {mode!r}")
    if mode != "auto":
        return mode
    return "int8" if torch.device(device).type == "cpu" and int8_available() else "float"


def fast_fc_head(head: FcHead, mode: str, *, energy: float = DEFAULT_SVD_ENERGY,
                 rank: int | None = None) -> tuple[FcHead, str]:
    """The head to score windows with, and a one-line description of it.

    Args:
        head: the trained head (unchanged).
        mode: ``float`` (``head`` itself), ``svd`` or ``int8``.
        energy, rank: for ``svd`` (see :func:`svd_linear`).
    """
    if mode not in FC_MODES:
        raise ConfigError(f"fc mode must be one of {FC_MODES}, got {mode!r}")
    if mode == "float":
        return head, "float32 fc layers"
    if mode == "int8":
        return int8_head(head), "int8 fc layers (dynamic quantization)"
    fast, ranks = svd_head(head, energy=energy, rank=rank)
    described = ", ".join(f"{name} rank {r.rank}/{r.full} ({100 * r.energy:.1f} % energy)"
                          for name, r in ranks.items())
    return fast, f"truncated-SVD fc layers: {described}"
