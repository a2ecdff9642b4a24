"""Choosing the torch device from a device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sppdet.errors import ParameterError

if TYPE_CHECKING:
    import torch

#: The device names :func:`resolve_device` takes (case and surrounding spaces ignored).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(spec: str) -> str:
    """``spec`` normalised (lower case, stripped), without importing torch.

    Raises:
        ParameterError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    name = (spec or "auto").strip().lower()
    if not DEVICE_PATTERN.fullmatch(name):
        raise ParameterError("device", f"{spec!r} is not a device; use auto, cpu, cuda or "
                                       "cuda:N")
    return name


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`.

    ``auto`` takes the first GPU when CUDA is available, else the CPU. ``cuda`` or ``cuda:N``
    without a usable GPU is an error rather than a silent fall-back.

    Raises:
        ParameterError: (``param == "device"``) not a device name, or no such device here.
    """
    import torch  # here, so that checking a name costs nothing

    name = check_device_name(spec)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", f"{name}: CUDA is not available on this machine; "
                                           "use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParameterError("device", f"{name}: only {torch.cuda.device_count()} GPU(s) "
                                           "here")
    return device
