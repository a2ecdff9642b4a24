"""Find and delete what killed runs left in a folder of artifacts.

Every stage cleans its own artifact's leftovers when it next runs; this walks a whole work dir
for the artifacts that no stage will run for again:

- ``temporary``: ``.X.<random>.tmp`` / ``.X.record.json.<random>.tmp`` from a kill while
  ``X`` or its record was written (the merge of a per-image stage writes a full-size one);
- ``merged parts``: ``X.parts/`` whose run was merged into ``X`` already (a kill between the
  merge and the folder's removal);
- ``unfinished parts``: ``X.parts/`` of a run that never finished (it would resume; removed
  only when asked).

Nothing that a running sppdet process is writing is touched: each artifact's writer locks are
taken first (:func:`sppdet.io.locks.all_writer_locks`), and an artifact whose lock is held is
skipped. Files written without a lock (checkpoints, plots, reports) cannot be asked: their
temporaries go only when older than :data:`UNLOCKED_MIN_AGE_S`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sppdet.errors import ArtifactError, ArtifactLockedError
from sppdet.io.item_store import read_run
from sppdet.io.locks import all_writer_locks, writer_lock_files
from sppdet.io.records import PARTS_SUFFIX, read_record

_TEMPORARY = re.compile(r"\.(?P<name>.+?)(\.record\.json)?\.[a-z0-9_]{8}\.tmp")
KINDS = ("temporary", "merged parts", "unfinished parts")
#: A temporary of a file that has no writer lock is deleted only when older than this: no
#: sppdet write of one file takes an hour.
UNLOCKED_MIN_AGE_S = 3600.0


@dataclass(frozen=True)
class Leftover:
    """One thing a killed run left: ``path``, its ``kind`` (:data:`KINDS`), its size in bytes
    and the artifact it belongs to."""

    path: Path
    kind: str
    bytes: int
    artifact: Path


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _parts_kind(parts: Path, artifact: Path) -> str:
    run = read_run(parts)
    try:
        finished = read_record(artifact)
    except ArtifactError:
        return "unfinished parts"
    if run is not None and run.get("run") and finished.digest == run.get("digest") \
            and finished.summary.get("run") == run["run"]:
        return "merged parts"
    return "unfinished parts"


def find_leftovers(root: str | os.PathLike[str]) -> list[Leftover]:
    """Every leftover under ``root`` (see the module docstring), in path order."""
    found: list[Leftover] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here.name.endswith(PARTS_SUFFIX):
            # temporaries inside a parts folder belong to it; the folder is judged whole
            dirs[:] = []
            continue
        for name in files:
            match = _TEMPORARY.fullmatch(name)
            if match:
                found.append(Leftover(here / name, "temporary", _size(here / name),
                                      here / match.group("name")))
        for name in list(dirs):
            if name.endswith(PARTS_SUFFIX):
                parts = here / name
                artifact = here / name[: -len(PARTS_SUFFIX)]
                found.append(Leftover(parts, _parts_kind(parts, artifact), _size(parts),
                                      artifact))
    return sorted(found, key=lambda item: str(item.path))


def clean(root: str | os.PathLike[str], *, unfinished: bool = False, dry_run: bool = False
          ) -> tuple[list[Leftover], list[Leftover]]:
    """Delete the leftovers under ``root``.

    Args:
        root: a work dir (or any folder of artifacts).
        unfinished: also delete unfinished per-image runs (their computed images are lost).
        dry_run: only say what would be deleted.

    Returns:
        ``(deleted, skipped)``; skipped: leftovers of artifacts that a run is writing now,
        and unfinished runs when ``unfinished`` is false.
    """
    deleted: list[Leftover] = []
    skipped: list[Leftover] = []
    for item in find_leftovers(root):
        if item.kind == "unfinished parts" and not unfinished:
            skipped.append(item)
            continue
        if item.kind == "temporary" and not writer_lock_files(item.artifact):
            with contextlib.suppress(OSError):
                if time.time() - item.path.stat().st_mtime < UNLOCKED_MIN_AGE_S:
                    skipped.append(item)  # maybe a write in flight
                    continue
        try:
            with all_writer_locks(item.artifact):
                if not dry_run:
                    if item.path.is_dir():
                        shutil.rmtree(item.path)
                    else:
                        item.path.unlink(missing_ok=True)
        except ArtifactLockedError:
            skipped.append(item)
            continue
        deleted.append(item)
    return deleted, skipped
