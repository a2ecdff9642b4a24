"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

import torch

from sppdet.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a device option into a :class:`torch.device`.

    ``auto`` takes the first GPU when CUDA is available, else the CPU. ``cuda`` or ``cuda:N``
    without a usable GPU is an error rather than a silent fall-back.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"--device {spec!r} is not a device; use auto, cpu, cuda or "
                          "cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine; use "
                              "--device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise ConfigError(f"--device {spec}: only cpu and cuda devices are supported")
    return device
