"""One writer per artifact: an exclusive ``flock`` on ``X.lock``.

The kernel drops the lock when a process dies, so a killed run never leaves a stale lock
behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

from sppdet.errors import ArtifactLockedError

LOCK_SUFFIX = ".lock"


class ArtifactLock:
    """An exclusive ``flock`` on ``<path>.lock`` (released when the process dies).

    Non-blocking by default (a second writer is refused); ``blocking=True`` waits for the
    holder instead.

    Use as a context manager around everything that writes the artifact.
    """

    def __init__(self, path: str | os.PathLike[str], suffix: str = LOCK_SUFFIX, *,
                 blocking: bool = False) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + suffix)
        self.blocking = blocking  # wait for the holder instead of refusing
        self._fd: int | None = None

    def acquire(self) -> "ArtifactLock":
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
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
