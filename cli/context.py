"""Global CLI settings, shared by every command through Click's context object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click


@dataclass
class Settings:
    """Options of the ``sppdet`` group that every command sees.

    Attributes:
        work_dir: where artifacts go (``proposals/``, ``features/``, ``models/``...).
        quiet: no progress bars, warnings and errors only.
        verbose: 0 normal, 1+ debug logging.
        debug: print tracebacks of errors.
    """

    work_dir: Path = Path("sppdet-work")
    quiet: bool = False
    verbose: int = 0
    debug: bool = False


pass_settings = click.make_pass_decorator(Settings, ensure=True)
