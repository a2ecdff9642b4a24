"""The SHA-256 of a file's bytes, read in blocks (weights files run to hundreds of MB)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of the file at ``path``, read ``chunk_bytes`` at a time.

    Raises:
        OSError: the file cannot be read (the caller names what the file is).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
