"""matplotlib for writing figures to files: the Agg backend, chosen in this one place.

Import this inside the functions that draw, never at module level: matplotlib takes about a
second to import, and most commands draw nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sppdet.io.atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (renders to files; needs no
    display, so it works on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Any, path: str | os.PathLike[str], *, dpi: float | None = None) -> Path:
    """Write ``figure`` to ``path`` as a PNG atomically, then close it.

    Args:
        figure: a ``matplotlib.figure.Figure``.
        path: the PNG file; its folder is created.
        dpi: resolution; None for the figure's own.

    Returns:
        ``path``.
    """
    path = Path(path)
    options = {} if dpi is None else {"dpi": dpi}
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", **options)
    finally:
        pyplot().close(figure)
    return path
