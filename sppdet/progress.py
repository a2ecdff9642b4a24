"""Progress bars and logging shared by the stages (no Click here).

Stages call :func:`progress` around long loops and log through the ``sppdet`` logger; the CLI
decides verbosity once with :func:`configure_logging`, and :func:`log_to_file` adds a log file
next to an artifact for the duration of a stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LOGGER_NAME = "sppdet"
_state = {"quiet": False}


def configure_logging(verbosity: int = 0, quiet: bool = False) -> None:
    """Set up the ``sppdet`` logger on stderr.

    Args:
        verbosity: 0 = warnings and stage summaries (INFO), 1+ = DEBUG.
        quiet: only warnings and errors; progress bars off.
    """
    _state["quiet"] = quiet
    logger = logging.getLogger(LOGGER_NAME)
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        if getattr(handler, "_sppdet_console", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._sppdet_console = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def is_quiet() -> bool:
    return bool(_state["quiet"]) or os.environ.get("SPPDET_QUIET") == "1"


def get_logger(name: str = "") -> logging.Logger:
    """The ``sppdet`` logger or one of its children (``sppdet.<name>``)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             unit: str = "img") -> Iterator[T]:
    """Wrap a loop in a progress bar on stderr (off with ``-q`` or when not a terminal)."""
    disable = is_quiet() or not sys.stderr.isatty()
    from tqdm.auto import tqdm  # here: the CLI configures logging before any --help

    yield from tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                    dynamic_ncols=True, leave=False)


class _LogFileHandler(logging.FileHandler):
    """A log file that gives up quietly when it cannot be written (a full disk): one line on
    stderr instead of a traceback per record; the stage's own writes report the cause."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if not getattr(self, "_failed", False):
            self._failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"sppdet: cannot write the log file {self.baseFilename} ({error}); "
                             "it stops here\n")

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(self, "_failed", False):
            super().emit(record)


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Also write every ``sppdet`` log record (DEBUG and up) to ``path`` while inside.

    Raises:
        StorageError: the log file cannot be created (read-only or full file system).
    """
    from sppdet.io.atomic import storage_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # surrogateescape: a file name that is not UTF-8 is logged as its own bytes
        handler = _LogFileHandler(path, mode="a", encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from exc
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()
