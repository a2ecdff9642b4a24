"""The SPP pyramid's default levels, apart from the pooling code so that configurations
(and the command line's option defaults) can name them without importing torch."""

from __future__ import annotations

#: The paper's 4-level pyramid {6x6, 3x3, 2x2, 1x1} = 50 bins.
DEFAULT_LEVELS: tuple[int, ...] = (6, 3, 2, 1)
