"""Checkpoints: a dict saved with ``torch.save``, tagged with a format name, a version and,
for the training state of a run, the identity of that run.

Every ``.pt`` file sppdet writes for itself goes through here (the fc head, the classifier,
the training states of ``finetune`` and ``pretrain``), so each is written atomically (a crash
leaves the old file or none, never half a file) and each is refused on loading with a message
that says what the file is and what came instead: another kind of file, a newer version than
this sppdet reads, a truncated or foreign file, or the state of a run with other settings.
(Weights files of the backbones are plain state dicts, read by
:func:`sppdet.backbones.base.read_state_dict`.)

Only tensors and plain Python containers are unpickled (``weights_only=True``), so a file
cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sppdet.errors import ModelError, Remedy, StaleArtifactError
from sppdet.io.atomic import atomic_path

#: Keys the helper adds to every checkpoint; a payload may not use them.
RESERVED_KEYS = ("format", "version", "identity")


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any], *, format: str,
                    version: int, identity: str | None = None) -> Path:
    """Write ``payload`` plus the tags to ``path`` atomically with ``torch.save``.

    Args:
        path: the ``.pt`` file; its folder is created.
        payload: tensors, numbers, strings and containers of them.
        format: the kind of file (e.g. ``"sppdet-finetune-checkpoint"``).
        version: the version of that kind that this code writes.
        identity: text naming the run's settings and inputs (for resumable training states);
            None for files that are not tied to one run.

    Returns:
        ``path``.
    """
    clash = sorted(set(payload) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"checkpoint payload keys {clash} are reserved for the tags")
    blob: dict[str, Any] = {"format": format, "version": int(version)}
    if identity is not None:
        blob["identity"] = identity
    blob.update(payload)
    path = Path(path)
    # through a Python file: a full disk then raises OSError(ENOSPC), which names the cause,
    # where torch's own file writer only says "unexpected pos"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(blob, handle)
    return path


def read_checkpoint(path: str | os.PathLike[str], *, what: str,
                    map_location: str | torch.device = "cpu", missing_hint: str = "",
                    hint: str = "", remedy: Remedy | None = None) -> dict[str, Any]:
    """Read a ``torch.save``d dict without checking its tags (see :func:`check_checkpoint`).

    Args:
        path: the file.
        what: what the file is, for messages (e.g. ``"fine-tuning checkpoint"``).
        map_location: where tensors are loaded.
        missing_hint: appended to the message when the file is missing (what makes it).
        hint: appended to the message when the file cannot be read (what it should be).
        remedy: what fixes a file that cannot be read.

    Raises:
        ModelError: the file is missing, truncated, not a torch file, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: {what} not found{missing_hint}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ModelError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})"
                         f"{hint}", remedy=remedy) from exc
    if not isinstance(blob, dict):
        raise ModelError(f"{path} is not an sppdet {what} (it holds a "
                         f"{type(blob).__name__}, not a dict){hint}", remedy=remedy)
    return blob


def check_checkpoint(blob: Mapping[str, Any], path: str | os.PathLike[str], *, format: str,
                     version: int, what: str, identity: str | None = None,
                     hint: str = "", remedy: Remedy | None = None,
                     identity_remedy: Remedy | None = None) -> None:
    """Refuse a checkpoint of another format, of a newer version, or of another run.

    Older versions are accepted (a file without a version counts as version 0); the caller
    reads what they hold.

    Args:
        blob: the checkpoint's dict (:func:`read_checkpoint`).
        path: the file, for messages.
        format: the expected format name.
        version: the newest version this code reads.
        what: what the file is, for messages.
        identity: the identity the checkpoint must carry; None accepts any.
        hint: appended to the message for another format (what the file should be).
        remedy: what fixes a file of another format.
        identity_remedy: what fixes a checkpoint of another identity.

    Raises:
        ModelError: another format, or a newer version.
        StaleArtifactError: another identity.
    """
    found = blob.get("format")
    if found != format:
        got = "no format tag" if found is None else f"format {found!r}"
        raise ModelError(f"{path} is not an sppdet {what} ({got}, expected {format!r}){hint}",
                         remedy=remedy)
    stored = blob.get("version", 0)
    if isinstance(stored, bool) or not isinstance(stored, int):
        raise ModelError(f"{path}: the {what} has a malformed version {stored!r}{hint}",
                         remedy=remedy)
    if stored > version:
        raise ModelError(f"{path}: {what} version {stored} is newer than this sppdet reads "
                         f"({version}); upgrade sppdet")
    if identity is not None and blob.get("identity") != identity:
        raise StaleArtifactError(f"{path} is a {what} of a run with other settings or inputs",
                                 remedy=identity_remedy)


def load_checkpoint(path: str | os.PathLike[str], *, format: str, version: int, what: str,
                    identity: str | None = None, map_location: str | torch.device = "cpu",
                    missing_hint: str = "", hint: str = "", remedy: Remedy | None = None,
                    identity_remedy: Remedy | None = None) -> dict[str, Any]:
    """:func:`read_checkpoint` then :func:`check_checkpoint`; returns the whole dict (tags
    included).

    Raises:
        ModelError: missing, unreadable, another format or a newer version.
        StaleArtifactError: another identity.
    """
    blob = read_checkpoint(path, what=what, map_location=map_location,
                           missing_hint=missing_hint, hint=hint, remedy=remedy)
    check_checkpoint(blob, path, format=format, version=version, what=what, identity=identity,
                     hint=hint, remedy=remedy, identity_remedy=identity_remedy)
    return blob


def load_training_state(path: str | os.PathLike[str], *, format: str, version: int, what: str,
                        identity: str, map_location: str | torch.device = "cpu"
                        ) -> dict[str, Any]:
    """:func:`load_checkpoint` for the resumable state of a training run.

    The state is refused (never silently resumed) when it belongs to a run with other settings
    or inputs; the messages say how to resume it or start over.
    """
    return load_checkpoint(
        path, format=format, version=version, what=what, identity=identity,
        map_location=map_location,
        remedy=Remedy.rerun(alternative="delete it", purpose=" to start over", force=True),
        identity_remedy=Remedy.rerun(alternative="rerun with those settings to resume it",
                                     purpose=" to start over", force=True))
