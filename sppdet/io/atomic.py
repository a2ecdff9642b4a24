"""Atomic, durable writes: data goes to a temporary name in the same folder, is flushed to the
disk, and is renamed into place when complete, so readers see either the old file or the
complete new one, even after a power cut.

A write that the file system refuses (full, read-only, no permission) raises
:class:`~sppdet.errors.StorageError` naming the file, whatever library did the writing
(h5py, NumPy, PyTorch), and leaves the old file as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from sppdet.errors import DiskFullError, SppdetError, StorageError
from sppdet.io.faults import fault_point

#: Errnos that mean "the disk is full" (a quota counts as full).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Errnos that are the user's environment, never a bug of sppdet.
ENVIRONMENT_ERRNOS = DISK_FULL_ERRNOS | {errno.EROFS, errno.EACCES, errno.EPERM,
                                         errno.ENAMETOOLONG, errno.EMFILE, errno.EIO}
#: A write that failed without an errno (PyTorch's zip writer says "unexpected pos") is
#: taken for a full disk when the folder has less than this left.
NEARLY_FULL_BYTES = 1 << 20
# mkstemp's names: prefix, 8 characters of its alphabet, suffix (see _temporary_pattern)
_MKSTEMP_CHARS = "[a-z0-9_]{8}"


def _errnos(exc: BaseException) -> set[int]:
    """Errnos of ``exc`` and its causes, including those h5py only puts in its message."""
    found: set[int] = set()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            found.add(current.errno)
        for match in re.finditer(r"errno = (\d+)", str(current)):
            found.add(int(match.group(1)))
        current = current.__cause__ or current.__context__
    return found


def _free_bytes(folder: Path) -> int | None:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(folder).free
    return None


def storage_error(exc: BaseException, path: str | os.PathLike[str]) -> StorageError | None:
    """The user-facing error for a failed write of ``path``, or ``None`` when the failure is
    not the file system's doing.

    Call it before deleting the partial file (the space it holds is part of the evidence).
    """
    if isinstance(exc, SppdetError) or not isinstance(exc, Exception):
        return None
    path = Path(path)
    codes = _errnos(exc)
    if codes & DISK_FULL_ERRNOS:
        return DiskFullError(_disk_full_message(path))
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        # the file meant, not the temporary or the folder that the OS named
        return StorageError(f"cannot write {path}: [Errno {exc.errno}] {exc.strerror}")
    if isinstance(exc, (OSError, RuntimeError)):
        free = _free_bytes(path.parent)
        if free is not None and free < NEARLY_FULL_BYTES:
            return DiskFullError(_disk_full_message(path))
    return None


def environment_error(exc: BaseException) -> StorageError | None:
    """An ``OSError`` that is the user's environment (read-only or full file system, no
    permission...) as a :class:`StorageError` naming the file and the errno; else ``None``.

    For errors raised outside :func:`atomic_path` (a folder created, a file opened): they
    name their own file.
    """
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = os.fsdecode(exc.filename) if exc.filename is not None else "a file"
    if exc.errno in DISK_FULL_ERRNOS:
        return DiskFullError(_disk_full_message(Path(where)))
    verb = "write" if exc.errno == errno.EROFS else "access"
    return StorageError(f"cannot {verb} {where}: [Errno {exc.errno}] {exc.strerror}")


def _disk_full_message(path: Path) -> str:
    free = _free_bytes(path.parent)
    left = f"; {free / 1e6:.1f} MB free there" if free is not None else ""
    return (f"disk full writing {path}{left}. Free some space (or move the work dir to a "
            "larger disk) and rerun; the files finished before were kept")


def check_free_space(path: str | os.PathLike[str], needed_bytes: int) -> None:
    """Refuse to start writing ``path`` when its file system has less than ``needed_bytes``.

    Raises:
        DiskFullError: not enough space (says how much is needed and free).
    """
    path = Path(path)
    free = _free_bytes(path.parent)
    if free is not None and free < needed_bytes:
        raise DiskFullError(f"disk full writing {path}: it needs about {needed_bytes / 1e6:.1f} "
                            f"MB and {free / 1e6:.1f} MB are free there. Free some space (or "
                            "move the work dir to a larger disk) and rerun; the files finished "
                            "before were kept")


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True,
                before_rename: Callable[[], None] | None = None,
                stage: str = "", fault: str = "artifact-write") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; rename it to ``path`` on success.

    On an exception the temporary file is deleted and ``path`` is left as it was. The rename is
    atomic on POSIX file systems, so readers see either the old file or the complete new one.

    Args:
        path: the file to write.
        durable: ``fsync`` the data before the rename and the folder after it, so that a power
            cut never leaves a renamed but empty file. Files that are rebuilt anyway when lost
            (a stage's per-image parts) may skip it.
        before_rename: called once the data is written (and flushed), right before the
            rename; not called when the write fails.
        stage: the stage writing it, and ``fault`` the point name, for
            :func:`sppdet.io.faults.fault_point` (tests only).

    Raises:
        StorageError: the file system refused the write (:class:`DiskFullError` when full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        if stage:
            fault_point(fault, stage, tmp)
        if durable:
            _fsync_file(tmp)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        if durable:
            fsync_folder(path.parent)
    except BaseException as exc:
        error = storage_error(exc, path)
        if error is None and isinstance(exc, StorageError) and str(tmp) in str(exc):
            # raised by an atomic write nested in this one: name this file, not our temporary
            error = type(exc)(str(exc).replace(str(tmp), str(path)))
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if error is not None:
            raise error from exc
        raise


def temporary_pattern(path: str | os.PathLike[str]) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives the temporaries of ``path`` and of its record."""
    name = re.escape(Path(path).name)
    return re.compile(rf"\.{name}(\.record\.json)?\.{_MKSTEMP_CHARS}\.tmp")


def remove_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of ``path`` and of its record that a killed writer left behind.

    Only the caller that holds the artifact's writer lock may call this (another writer's
    temporary would be removed under it).

    Returns:
        The files removed.
    """
    path = Path(path)
    pattern = temporary_pattern(path)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if pattern.fullmatch(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` through :func:`atomic_path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    return path
