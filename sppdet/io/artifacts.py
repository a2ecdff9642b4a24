"""Artifacts: files that stages write, each with a record of how it was made.

Every artifact ``X`` (an HDF5, ``.npz``, ``.pt`` or ``.json`` file) has a sidecar record
``X.record.json``: the stage that made it, a per-stage format version, the parameters, the
identity (path + digest) of each input artifact, sppdet's version, and a free-form summary.
The artifact's *digest* is a SHA-256 of the canonical JSON of (stage, stage version, params,
input digests), so checking lineage never hashes gigabytes, and a change anywhere upstream
changes every digest downstream. sppdet's own version is recorded but not hashed: upgrading
sppdet does not invalidate caches; a stage bumps its ``stage_version`` when its output changes.

Crash safety: data goes to a temporary name in the same folder and is renamed into place when
complete; the old record is removed before the rename and the new record written after it, so
a file without a record (or with a record whose digest does not match) is never taken as
finished. Writers hold an exclusive ``flock`` on ``X.lock`` so two runs cannot write one
artifact; the kernel drops the lock when a process dies, so a killed run never leaves a stale
lock behind.

Per-image stages write through :class:`ItemStore`: every item (image) is committed as its own
small HDF5 file under ``X.parts/`` (atomic rename), so a killed run loses at most the item in
flight and a rerun resumes; shards of a run share that folder; :meth:`ItemStore.finalize`
merges the parts into ``X`` once every item is present.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sppdet import __version__
from sppdet.errors import (
    ArtifactError,
    ArtifactLockedError,
    ArtifactMissingError,
    ConfigError,
    StaleArtifactError,
)

RECORD_SUFFIX = ".record.json"
PARTS_SUFFIX = ".parts"
LOCK_SUFFIX = ".lock"


def _jsonable(value: Any) -> Any:
    """Turn parameters into plain JSON types (tuples -> lists, Paths -> str, numpy -> python)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(f"parameter value {value!r} of type {type(value).__name__} cannot be recorded")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the text that digests are taken of."""
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


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
        self.params = _jsonable(self.params)

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
            "summary": _jsonable(self.summary),
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
            raise ArtifactError(f"{source}: the record is malformed ({exc}); rerun the stage that "
                                "made it with --force") from exc
        stored = data.get("digest")
        if stored is not None and stored != record.digest:
            raise ArtifactError(f"{source}: the record's digest does not match its content (was "
                                "it edited by hand?); rerun the stage that made it with --force")
        return record


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
                f"{path} was made from an older {name} ({ref.path}); rerun "
                f"`sppdet {record.stage}` (with --force) to rebuild it"
            )


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
    with atomic_path(rpath) as tmp:
        tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=False) + "\n")
    return rpath


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; rename it to ``path`` on success.

    On an exception the temporary file is deleted and ``path`` is left as it was. The rename is
    atomic on POSIX file systems, so readers see either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` through :func:`atomic_path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    return path


@contextlib.contextmanager
def write_artifact(path: str | os.PathLike[str], record: Record) -> Iterator[Path]:
    """Write a single-file artifact: yields a temporary path, then commits it with its record.

    The old record goes first, then the data is renamed into place, then the new record is
    written: a crash at any point leaves no record that vouches for the wrong data.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            record_path(path).unlink()
    write_record(path, record)


class ArtifactLock:
    """An exclusive, non-blocking ``flock`` on ``<path>.lock`` (released when the process dies).

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


# ---------------------------------------------------------------------------------------------
# Per-item (per-image) resumable outputs.

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _part_name(item_id: str) -> str:
    """A file name for an item id: readable, and unique even when ids contain odd characters."""
    safe = _SAFE_NAME.sub("_", item_id)
    if safe != item_id:
        safe += "-" + hashlib.sha1(item_id.encode()).hexdigest()[:8]
    return safe


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"i/n"`` (1-based, ``1 <= i <= n``) into ``(i, n)``; ``None`` passes through."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--shard must look like i/n (e.g. 2/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {text}: need 1 <= i <= n")
    return index, count


def shard_items(item_ids: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The items of shard ``(i, n)``: every n-th item starting at i - 1 (balances image sizes)."""
    if shard is None:
        return list(item_ids)
    index, count = shard
    return list(item_ids[index - 1 :: count])


class ItemStore:
    """Resumable per-item output of a stage, merged into one HDF5 artifact at the end.

    Layout while running: ``<path>.parts/record.json`` (the run's record; a rerun with other
    parameters is refused, or wiped with ``force``), one ``<item>.h5`` per finished item and one
    ``<item>.failed.json`` per failed item. The final artifact ``<path>`` holds a group
    ``items/<item_id>`` per item (datasets + attributes as written), the attribute
    ``sppdet_record`` (the record's JSON) and a dataset ``failures`` (JSON text).

    Args:
        path: the final artifact (``.h5``).
        record: the record the finished artifact will carry.
        force: discard parts written with other parameters instead of refusing them.
        shard: ``(i, n)`` when this process handles one shard; only the lock name changes.
    """

    def __init__(self, path: str | os.PathLike[str], record: Record, *, force: bool = False,
                 shard: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.record = record
        self.parts_dir = self.path.with_name(self.path.name + PARTS_SUFFIX)
        suffix = LOCK_SUFFIX if shard is None else f".shard{shard[0]}of{shard[1]}{LOCK_SUFFIX}"
        self._lock = ArtifactLock(self.path, suffix=suffix)
        self._lock.acquire()
        try:
            # shards starting together (torchrun ranks, job arrays) must not both clear the
            # stale parts of an older run: one of them does it, the other finds it done
            with ArtifactLock(self.path, suffix=".open" + LOCK_SUFFIX, blocking=True):
                self._open_parts(force, clean=shard is None)
        except BaseException:
            self._lock.release()
            raise
        self._done = {p.stem for p in self.parts_dir.glob("*.h5")}

    def _open_parts(self, force: bool, clean: bool) -> None:
        run_record = self.parts_dir / "record.json"
        if self.parts_dir.exists() and run_record.exists():
            existing = json.loads(run_record.read_text()).get("digest")
            if existing != self.record.digest:
                if not force:
                    raise StaleArtifactError(
                        f"{self.parts_dir} holds a partial run made with other parameters or "
                        "inputs; rerun with --force to discard it, or with that run's options "
                        "to resume it"
                    )
                shutil.rmtree(self.parts_dir)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.parts_dir.glob("*.tmp") if clean else ():
            # temporaries of a killed run: never renamed, so never counted as done (a shard
            # leaves them: another shard may be writing them; the merge removes the folder)
            stale.unlink()
        if not run_record.exists():
            with atomic_path(run_record) as tmp:
                tmp.write_text(json.dumps(self.record.to_json(), indent=2) + "\n")

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> "ItemStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def is_done(self, item_id: str) -> bool:
        return _part_name(item_id) in self._done

    def pending(self, item_ids: Iterable[str]) -> list[str]:
        """The items of ``item_ids`` that are not committed yet, in the given order."""
        return [i for i in item_ids if not self.is_done(i)]

    def write(self, item_id: str, arrays: Mapping[str, np.ndarray],
              attrs: Mapping[str, Any] | None = None,
              compression: Mapping[str, Any] | None = None) -> None:
        """Commit one item: its arrays (datasets) and scalar attributes, atomically.

        Args:
            item_id: the image id.
            arrays: dataset name -> array (names may contain '/' for sub-groups).
            attrs: scalar attributes of the item's group (JSON-able values).
            compression: keyword arguments for ``h5py.create_dataset`` (e.g. ``compression``,
                ``chunks``) applied to every non-empty array; without ``chunks`` each array is
                one chunk (readers load whole arrays).
        """
        name = _part_name(item_id)
        final = self.parts_dir / f"{name}.h5"
        with atomic_path(final) as tmp:
            with h5py.File(tmp, "w") as handle:
                handle.attrs["item_id"] = item_id
                for key, value in (attrs or {}).items():
                    handle.attrs[key] = _h5_attr(value)
                for key, value in arrays.items():
                    value = np.asarray(value)
                    options = dict(compression or {}) if value.ndim and value.size else {}
                    if options and "chunks" not in options:
                        options["chunks"] = value.shape  # one chunk per array: read whole
                    handle.create_dataset(key, data=value, **options)
        failed = self.parts_dir / f"{name}.failed.json"
        with contextlib.suppress(FileNotFoundError):
            failed.unlink()
        self._done.add(name)

    def write_failure(self, item_id: str, reason: str) -> None:
        """Record that an item failed (retried on the next run; listed at finalize)."""
        name = _part_name(item_id)
        with atomic_path(self.parts_dir / f"{name}.failed.json") as tmp:
            tmp.write_text(json.dumps({"item_id": item_id, "reason": reason}) + "\n")

    def failures(self) -> dict[str, str]:
        """item id -> reason for every item whose last attempt failed."""
        out: dict[str, str] = {}
        for path in sorted(self.parts_dir.glob("*.failed.json")):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                data = json.loads(path.read_text())
                out[data["item_id"]] = data["reason"]
        return out

    def finalize(self, item_ids: list[str], *, allow_failures: bool = False) -> Path | None:
        """Merge the parts into the final artifact once every item is done (or failed).

        Args:
            item_ids: every item of the whole run (all shards), in output order.
            allow_failures: merge even when some items failed (they are listed in the
                artifact's ``failures`` and in the record's summary).

        Returns:
            The artifact path, or ``None`` while items of other shards are still missing.

        Raises:
            ArtifactError: some items failed and ``allow_failures`` is false.
        """
        with ArtifactLock(self.path, suffix=".merge" + LOCK_SUFFIX):
            if is_up_to_date(self.path, self.record):
                return self.path  # another shard merged while this one finished
            return self._merge(item_ids, allow_failures)

    def _merge(self, item_ids: list[str], allow_failures: bool) -> Path | None:
        # other shards may have committed items since this store was opened
        self._done = {p.stem for p in self.parts_dir.glob("*.h5")}
        wanted = set(item_ids)
        failures = {i: r for i, r in self.failures().items() if i in wanted}
        missing = [i for i in item_ids if not self.is_done(i) and i not in failures]
        if missing:
            return None
        if failures and not allow_failures:
            listed = "; ".join(f"{i}: {r}" for i, r in list(failures.items())[:10])
            raise ArtifactError(
                f"{len(failures)} item(s) failed, so {self.path.name} was not finished "
                f"({listed}). Fix them, or rerun with --on-error skip to finish without them."
            )
        self.record.summary.setdefault("failures", failures)
        with write_artifact(self.path, self.record) as tmp:
            with h5py.File(tmp, "w") as out:
                out.attrs["sppdet_record"] = canonical_json(self.record.to_json())
                out.create_dataset("failures", data=json.dumps(failures))
                items = out.create_group("items")
                for item_id in item_ids:
                    if item_id in failures:
                        continue
                    part = self.parts_dir / f"{_part_name(item_id)}.h5"
                    with h5py.File(part, "r") as src:
                        group = items.create_group(_group_name(item_id))
                        for key, value in src.attrs.items():
                            group.attrs[key] = value
                        for key in src:
                            src.copy(src[key], group, name=key)
        shutil.rmtree(self.parts_dir)
        return self.path


def _group_name(item_id: str) -> str:
    """HDF5 group name for an item id ('/' would make sub-groups)."""
    return item_id.replace("/", "\\")


def _h5_attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_jsonable(value))
    if value is None:
        return "null"
    return value


class ItemReader:
    """Read a finished per-item HDF5 artifact written by :class:`ItemStore`.

    Args:
        path: the artifact.
        made_by: the command that makes it, named in errors.
    """

    def __init__(self, path: str | os.PathLike[str], *, made_by: str | None = None) -> None:
        self.path = Path(path)
        self.record = read_record(self.path, made_by=made_by)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise ArtifactError(f"{self.path}: cannot open ({exc}); rerun "
                                f"`sppdet {made_by or self.record.stage}` with --force") from exc
        if self._file.attrs.get("sppdet_record") is None or json.loads(
            self._file.attrs["sppdet_record"]
        ).get("digest") != self.record.digest:
            self._file.close()
            raise ArtifactError(
                f"{self.path} does not match its record {record_path(self.path).name}; rerun "
                f"`sppdet {made_by or self.record.stage}` with --force"
            )
        self._items = self._file["items"]
        self.failures: dict[str, str] = json.loads(self._file["failures"][()])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ItemReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ids(self) -> list[str]:
        """Item ids in the order they were merged."""
        return [str(self._items[name].attrs["item_id"]) for name in self._items]

    def __contains__(self, item_id: str) -> bool:
        return _group_name(item_id) in self._items

    def group(self, item_id: str) -> h5py.Group:
        """The item's HDF5 group (datasets are read lazily)."""
        try:
            return self._items[_group_name(item_id)]
        except KeyError:
            reason = self.failures.get(item_id)
            why = f" (it failed: {reason})" if reason else ""
            raise ArtifactError(f"{self.path} has no item {item_id!r}{why}") from None

    def read(self, item_id: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """All datasets and attributes of one item, loaded into memory."""
        group = self.group(item_id)
        arrays: dict[str, np.ndarray] = {}
        group.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                         if isinstance(obj, h5py.Dataset) else None)
        attrs = {k: v for k, v in group.attrs.items() if k != "item_id"}
        return arrays, attrs
