"""One writer per artifact: an exclusive ``flock`` on ``X.lock``.

The kernel drops the lock when a process dies, so a killed run never leaves a stale lock
behind. Per-image stages run in shards take ``X.shard<i>of<n>.lock`` and merge under
``X.merge.lock``; :func:`all_writer_locks` takes every one of them, for clean-ups that must
be sure nobody is writing ``X``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

from sppdet.errors import ArtifactLockedError
from sppdet.io.atomic import remove_temporaries, storage_error

LOCK_SUFFIX = ".lock"
MERGE_LOCK_SUFFIX = ".merge" + LOCK_SUFFIX


def shard_lock_suffix(shard: tuple[int, int] | None) -> str:
    """The lock suffix of a shard ``(i, n)`` (``.lock`` without shards)."""
    return LOCK_SUFFIX if shard is None else f".shard{shard[0]}of{shard[1]}{LOCK_SUFFIX}"


class ArtifactLock:
    """An exclusive ``flock`` on ``<path>.lock`` (released when the process dies).

    Non-blocking by default (a second writer is refused); ``blocking=True`` waits for the
    holder instead.

    Use as a context manager around everything that writes the artifact.

    Args:
        path: the artifact.
        suffix: the lock file's suffix.
        clean: once locked, delete the temporaries of ``path`` (and of its record) that a
            killed writer left (only right for locks that every writer of ``path`` takes).
    """

    def __init__(self, path: str | os.PathLike[str], suffix: str = LOCK_SUFFIX, *,
                 blocking: bool = False, clean: bool = False) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + suffix)
        self.blocking = blocking  # wait for the holder instead of refusing
        self.clean = clean
        self._fd: int | None = None

    def acquire(self) -> "ArtifactLock":
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            error = storage_error(exc, self.lock_path)
            if error is None:
                raise
            raise error from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f" ({holder})" if holder else ""
                raise ArtifactLockedError(
                    f"{self.path} is being written by another sppdet run{who}; wait for it to "
                    f"finish (the lock {self.lock_path.name} is released when that run ends)"
                ) from exc
            raise
        # who holds it, for the message above; best effort (a full disk must not stop a run)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        if self.clean:
            remove_temporaries(self.path)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ArtifactLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def writer_lock_files(path: str | os.PathLike[str]) -> list[Path]:
    """The lock files of every kind of writer of ``path`` that exist now (plain, shards,
    merge)."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"(\.shard\d+of\d+|\.merge)?" +
                         re.escape(LOCK_SUFFIX))
    with contextlib.suppress(FileNotFoundError):
        return sorted(Path(e.path) for e in os.scandir(path.parent) if pattern.fullmatch(e.name))
    return []


@contextlib.contextmanager
def all_writer_locks(path: str | os.PathLike[str], *, held: ArtifactLock | None = None
                     ) -> Iterator[None]:
    """Hold every writer lock of ``path`` (besides ``held``, which the caller holds already).

    Raises:
        ArtifactLockedError: another run holds one of them (a writer is at work).
    """
    path = Path(path)
    skip = held.lock_path if held is not None else None
    with contextlib.ExitStack() as stack:
        for lock_file in writer_lock_files(path):
            if lock_file == skip:
                continue
            suffix = lock_file.name[len(path.name):]
            stack.enter_context(ArtifactLock(path, suffix=suffix))
        yield
