"""``.npz`` files written to exactly the name given, or to an open binary file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np


def save_npz(target: str | os.PathLike[str] | BinaryIO, arrays: Mapping[str, Any]) -> None:
    """``numpy.savez(target, **arrays)``, keeping a path's name as given.

    ``numpy.savez`` appends ``.npz`` to a path that lacks it, which would break writing to the
    temporary name of an atomic write; an open file keeps its name, so paths are opened here.

    Args:
        target: a path, or a binary file object (e.g. ``io.BytesIO``).
        arrays: name -> array (or numpy scalar).
    """
    if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__"):
        with open(target, "wb") as handle:
            np.savez(handle, **arrays)
    else:
        np.savez(target, **arrays)
