"""Records: how each artifact was made, and whether it is finished and up to date.

Every artifact ``X`` (an HDF5, ``.npz``, ``.pt`` or ``.json`` file) has a sidecar record
``X.record.json``: the stage that made it, a per-stage format version, the parameters, the
identity (path + digest) of each input artifact, sppdet's version, and a free-form summary.
The artifact's *digest* is a SHA-256 of the canonical JSON of (stage, stage version, params,
input digests), so checking lineage never hashes gigabytes, and a change anywhere upstream
changes every digest downstream. sppdet's own version is recorded but not hashed: upgrading
sppdet does not invalidate caches; a stage bumps its ``stage_version`` when its output changes.

Crash safety: data goes to a temporary name in the same folder and is renamed into place when
complete (:mod:`sppdet.io.atomic`); the old record is removed before the rename and the new
record written after it (:func:`write_artifact`), so a file without a record (or with a record
whose digest does not match) is never taken as finished.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sppdet import __version__
from sppdet.errors import (ArtifactError, ArtifactMissingError, ConfigError, Remedy,
                           StaleArtifactError)
from sppdet.io.atomic import atomic_path
from sppdet.io.faults import fault_point

RECORD_SUFFIX = ".record.json"
PARTS_SUFFIX = ".parts"


def jsonable(value: Any) -> Any:
    """Turn parameters into plain JSON types (tuples -> lists, Paths -> str, numpy -> python)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(
        f"parameter value {value!r} of type {type(value).__name__} cannot be recorded")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the text that digests are taken of."""
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


@dataclass(frozen=True)
class InputRef:
    """An input artifact as a record refers to it."""

    path: str
    digest: str
    stage: str


@dataclass
class Record:
    """How an artifact was made.

    Attributes:
        stage: name of the stage that wrote it (``"propose"``, ``"cache-features"``...).
        params: the stage's parameters (JSON types only).
        inputs: name -> :class:`InputRef` of each input artifact.
        stage_version: bumped by a stage when its output format or algorithm changes.
        summary: free-form facts about the result (counts, timings); not part of the digest.
        sppdet_version: the version that wrote it; not part of the digest.
        created_utc: ISO time of writing; not part of the digest.
    """

    stage: str
    params: dict[str, Any]
    inputs: dict[str, InputRef] = field(default_factory=dict)
    stage_version: int = 1
    summary: dict[str, Any] = field(default_factory=dict)
    sppdet_version: str = __version__
    created_utc: str = ""

    def __post_init__(self) -> None:
        self.params = jsonable(self.params)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the stage, its version, the params and the input digests."""
        identity = {
            "stage": self.stage,
            "stage_version": self.stage_version,
            "params": self.params,
            "inputs": {name: ref.digest for name, ref in sorted(self.inputs.items())},
        }
        return hashlib.sha256(canonical_json(identity).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "stage_version": self.stage_version,
            "digest": self.digest,
            "params": self.params,
            "inputs": {
                name: {"path": ref.path, "digest": ref.digest, "stage": ref.stage}
                for name, ref in sorted(self.inputs.items())
            },
            "sppdet_version": self.sppdet_version,
            "created_utc": self.created_utc,
            "summary": jsonable(self.summary),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: Path) -> "Record":
        try:
            record = cls(
                stage=str(data["stage"]),
                params=dict(data["params"]),
                inputs={
                    name: InputRef(path=str(ref["path"]), digest=str(ref["digest"]),
                                   stage=str(ref.get("stage", "")))
                    for name, ref in dict(data.get("inputs", {})).items()
                },
                stage_version=int(data.get("stage_version", 1)),
                summary=dict(data.get("summary", {})),
                sppdet_version=str(data.get("sppdet_version", "")),
                created_utc=str(data.get("created_utc", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: the record is malformed ({exc})",
                                remedy=_rebuild_by_maker(data)) from exc
        stored = data.get("digest")
        if stored is not None and stored != record.digest:
            raise ArtifactError(f"{source}: the record's digest does not match its content (was "
                                "it edited by hand?)", remedy=_rebuild_by_maker(data))
        return record


def _rebuild_by_maker(data: Any) -> Remedy:
    """Rebuild the artifact of a damaged record: its stage, if the record still names it."""
    stage = data.get("stage") if isinstance(data, dict) else None
    if isinstance(stage, str) and stage:
        return Remedy.rerun(stage, force=True)
    return Remedy.rerun(purpose=" in the stage that made it", force=True)


def record_path(path: str | os.PathLike[str]) -> Path:
    """Where the record of artifact ``path`` lives (``path + '.record.json'``)."""
    path = Path(path)
    return path.with_name(path.name + RECORD_SUFFIX)


def read_record(path: str | os.PathLike[str], *, made_by: str | None = None) -> Record:
    """Read the record of a finished artifact.

    Args:
        path: the artifact file.
        made_by: the command that makes this artifact, named in the error messages.

    Raises:
        ArtifactMissingError: the artifact or its record is missing (it never finished).
        ArtifactError: the record is unreadable.
    """
    path = Path(path)
    hint = f" Run `sppdet {made_by}` to make it." if made_by else ""
    rpath = record_path(path)
    if not path.exists():
        raise ArtifactMissingError(f"{path} does not exist.{hint}")
    if not rpath.exists():
        raise ArtifactMissingError(
            f"{path} has no record ({rpath.name}): it was never finished or was written by "
            f"something else.{hint}"
        )
    try:
        data = json.loads(rpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{rpath}: cannot read the record ({exc}).{hint}") from exc
    return Record.from_json(data, rpath)


def input_ref(path: str | os.PathLike[str], *, made_by: str | None = None) -> InputRef:
    """An :class:`InputRef` for a finished input artifact (raises if it is not finished)."""
    record = read_record(path, made_by=made_by)
    return InputRef(path=str(Path(path).resolve()), digest=record.digest, stage=record.stage)


def is_up_to_date(path: str | os.PathLike[str], record: Record) -> bool:
    """True when ``path`` is a finished artifact whose record has ``record``'s digest."""
    try:
        existing = read_record(path)
    except ArtifactError:
        return False
    return existing.digest == record.digest


def check_inputs_current(record: Record, path: str | os.PathLike[str]) -> None:
    """Refuse an artifact whose recorded inputs have changed since it was made.

    Raises:
        StaleArtifactError: an input's current digest differs from the recorded one; the
            message names the input and the artifact to rebuild.
    """
    for name, ref in record.inputs.items():
        try:
            current = read_record(ref.path)
        except ArtifactMissingError:
            continue  # an input that moved away is not a reason to refuse its product
        if current.digest != ref.digest:
            raise StaleArtifactError(
                f"{path} was made from an older {name} ({ref.path})",
                remedy=Remedy.rerun(record.stage, purpose=" to rebuild it", force=True))


def remove_artifact(path: str | os.PathLike[str]) -> None:
    """Delete an artifact, its record and its parts folder, if present."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        record_path(path).unlink()
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    parts = path.with_name(path.name + PARTS_SUFFIX)
    if parts.exists():
        shutil.rmtree(parts)


def write_record(path: str | os.PathLike[str], record: Record) -> Path:
    """Write ``record`` beside ``path`` atomically and return the record's path."""
    rpath = record_path(path)
    record.created_utc = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    with atomic_path(rpath, stage=record.stage, fault="record-write") as tmp:
        tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=False) + "\n")
    return rpath


@contextlib.contextmanager
def write_artifact(path: str | os.PathLike[str], record: Record) -> Iterator[Path]:
    """Write a single-file artifact: yields a temporary path, then commits it with its record.

    The data is written and flushed, then the old record goes, the data is renamed into place
    and the new record is written: a crash at any point leaves no record that vouches for the
    wrong data, and a failed write leaves the old artifact and its record as they were.
    """
    path = Path(path)

    def drop_old_record() -> None:
        with contextlib.suppress(FileNotFoundError):
            record_path(path).unlink()

    # the old record goes only once the new data is safely written: a failed write (a full
    # disk) leaves the old artifact as it was, record included
    with atomic_path(path, before_rename=drop_old_record, stage=record.stage,
                     fault="artifact-write") as tmp:
        yield tmp
    fault_point("artifact-renamed", record.stage, path)
    write_record(path, record)
    fault_point("artifact-committed", record.stage, path)
