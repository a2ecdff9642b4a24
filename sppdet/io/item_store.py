"""Per-item (per-image) resumable outputs of a stage, merged into one HDF5 artifact.

Per-image stages write through :class:`ItemStore`: every item (image) is committed as its own
small HDF5 file under ``X.parts/`` (atomic rename), so a killed run loses at most the item in
flight and a rerun resumes; shards of a run share that folder; :meth:`ItemStore.finalize`
merges the parts into ``X`` once every item is present. :class:`ItemReader` reads the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sppdet.errors import (ArtifactError, ArtifactLockedError, ConfigError, Remedy,
                           StaleArtifactError)
from sppdet.io.atomic import atomic_path, check_free_space, remove_temporaries
from sppdet.io.closing import Closing
from sppdet.io.faults import fault_point
from sppdet.io.locks import (LOCK_SUFFIX, MERGE_LOCK_SUFFIX, ArtifactLock, all_writer_locks,
                             shard_lock_suffix)
from sppdet.io.records import (
    PARTS_SUFFIX,
    Record,
    canonical_json,
    jsonable,
    read_record,
    record_path,
    write_artifact,
)

RUN_RECORD = "record.json"

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
        raise ConfigError(f"{text!r} is not a shard: expected i/n (e.g. 2/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"shard {text} does not exist: need 1 <= i <= n")
    return index, count


def shard_items(item_ids: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The items of shard ``(i, n)``: every n-th item starting at i - 1 (balances image sizes)."""
    if shard is None:
        return list(item_ids)
    index, count = shard
    return list(item_ids[index - 1 :: count])


class ItemStore(Closing):
    """Resumable per-item output of a stage, merged into one HDF5 artifact at the end.

    Layout while running: ``<path>.parts/record.json`` (the run's record and a random run id;
    a rerun with other parameters is refused, or wiped with ``force``), one ``<item>.h5`` per
    finished item and one ``<item>.failed.json`` per failed item. The final artifact ``<path>``
    holds a group ``items/<item_id>`` per item (datasets + attributes as written), the
    attribute ``sppdet_record`` (the record's JSON, whose summary names the run) and a dataset
    ``failures`` (JSON text).

    What a killed run leaves behind is cleaned when a store of the same artifact opens and no
    other writer is at work: temporaries of parts, of the merged file and of its record, and a
    parts folder whose run was merged already.

    Args:
        path: the final artifact (``.h5``).
        record: the record the finished artifact will carry.
        force: discard parts written with other parameters instead of refusing them, and merge
            even when a finished artifact with the same record exists (it is rebuilt).
        shard: ``(i, n)`` when this process handles one shard; only the lock name changes.
        durable_parts: ``fsync`` every part (the merged artifact always is). Off by default: a
            part lost to a power cut is found damaged at the merge and computed again.
    """

    def __init__(self, path: str | os.PathLike[str], record: Record, *, force: bool = False,
                 shard: tuple[int, int] | None = None, durable_parts: bool = False) -> None:
        self.path = Path(path)
        self.record = record
        self.force = force
        self.durable_parts = durable_parts
        self.parts_dir = self.path.with_name(self.path.name + PARTS_SUFFIX)
        self.run_id = ""
        self._lock = ArtifactLock(self.path, suffix=shard_lock_suffix(shard))
        self._lock.acquire()
        try:
            # shards starting together (torchrun ranks, job arrays) open one at a time; what
            # killed runs left is cleaned only when no other writer is at work
            with ArtifactLock(self.path, suffix=".open" + LOCK_SUFFIX, blocking=True):
                with contextlib.suppress(ArtifactLockedError):
                    with all_writer_locks(self.path, held=self._lock):
                        # a shard leaves temporaries in the parts: another shard, perhaps on
                        # a machine whose locks this one cannot see, may be writing them
                        clean_orphans(self.path, part_temporaries=shard is None)
                self._open_parts(force)
        except BaseException:
            self._lock.release()
            raise
        self._done = {p.stem for p in self.parts_dir.glob("*.h5")}

    def _open_parts(self, force: bool) -> None:
        run_record = self.parts_dir / RUN_RECORD
        existing = read_run(self.parts_dir)
        if existing is not None and existing.get("digest") != self.record.digest:
            if not force:
                raise StaleArtifactError(
                    f"{self.parts_dir} holds a partial run made with other parameters or "
                    "inputs", remedy=Remedy.rerun(
                        alternative="rerun with that run's settings to resume it",
                        purpose=" to discard it", force=True))
            shutil.rmtree(self.parts_dir)
            existing = None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        if existing is None:
            self.run_id = uuid.uuid4().hex
            with atomic_path(run_record) as tmp:
                tmp.write_text(json.dumps({**self.record.to_json(), "run": self.run_id},
                                          indent=2) + "\n")
        else:
            self.run_id = str(existing.get("run", ""))  # "": parts of an older sppdet

    def close(self) -> None:
        self._lock.release()

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
        # Built in memory (HDF5's core driver), then written by Python: a full disk is then a
        # plain OSError, whereas HDF5 failing to flush a file leaves ids that crash the
        # interpreter at exit (exit code 139).
        with h5py.File(f"{name}.h5", "w", driver="core", backing_store=False) as handle:
            handle.attrs["item_id"] = item_id
            for key, value in (attrs or {}).items():
                handle.attrs[key] = _h5_attr(value)
            for key, value in arrays.items():
                value = np.asarray(value)
                options = dict(compression or {}) if value.ndim and value.size else {}
                if options and "chunks" not in options:
                    options["chunks"] = value.shape  # one chunk per array: read whole
                handle.create_dataset(key, data=value, **options)
            handle.flush()
            image = handle.id.get_file_image()
        with atomic_path(final, durable=self.durable_parts, stage=self.record.stage,
                         fault="item-write") as tmp:
            tmp.write_bytes(image)
        failed = self.parts_dir / f"{name}.failed.json"
        with contextlib.suppress(FileNotFoundError):
            failed.unlink()
        self._done.add(name)
        fault_point("item-committed", self.record.stage, final)

    def write_failure(self, item_id: str, reason: str) -> None:
        """Record that an item failed (retried on the next run; listed at finalize)."""
        name = _part_name(item_id)
        with atomic_path(self.parts_dir / f"{name}.failed.json",
                         durable=self.durable_parts) as tmp:
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
        with ArtifactLock(self.path, suffix=MERGE_LOCK_SUFFIX, clean=True):
            merged = merged_run(self.path, self.record)
            if merged is not None and (merged == self.run_id or (
                    not self.run_id and not self.force)):
                return self.path  # another shard of this run merged while this one finished
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
                f"({listed})", remedy=Remedy.rerun(alternative="fix them",
                                                   purpose=" to finish without them",
                                                   on_error="skip"))
        # the merged file is about as large as its parts: refuse before HDF5 runs out of disk
        # halfway (a failed HDF5 flush can crash the interpreter instead of raising)
        check_free_space(self.path, sum(
            (self.parts_dir / f"{_part_name(i)}.h5").stat().st_size for i in item_ids
            if i not in failures))
        self.record.summary.setdefault("failures", failures)
        self.record.summary["run"] = self.run_id
        with write_artifact(self.path, self.record) as tmp:
            with h5py.File(tmp, "w") as out:
                out.attrs["sppdet_record"] = canonical_json(self.record.to_json())
                out.create_dataset("failures", data=json.dumps(failures))
                items = out.create_group("items")
                for item_id in item_ids:
                    if item_id in failures:
                        continue
                    self._copy_part(item_id, items)
        fault_point("merge-committed", self.record.stage, self.path)
        shutil.rmtree(self.parts_dir)
        return self.path

    def _copy_part(self, item_id: str, items: h5py.Group) -> None:
        part = self.parts_dir / f"{_part_name(item_id)}.h5"
        try:
            src = h5py.File(part, "r")
        except OSError as exc:
            # parts are not fsynced: after a power cut one may be renamed but empty
            part.unlink(missing_ok=True)
            self._done.discard(part.stem)
            raise ArtifactError(
                f"{part} was damaged ({exc}); it was deleted: rerun the same command to "
                f"compute image {item_id} again and finish {self.path.name}") from exc
        with src:
            group = items.create_group(_group_name(item_id))
            for key, value in src.attrs.items():
                group.attrs[key] = value
            for key in src:
                src.copy(src[key], group, name=key)


def read_run(parts_dir: Path) -> dict[str, Any] | None:
    """The run record of a parts folder (``None`` when there is none, or it is unreadable)."""
    try:
        data = json.loads((parts_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def merged_run(path: Path, record: Record) -> str | None:
    """The run id that the finished artifact ``path`` was merged from, when it carries
    ``record``'s digest (``""`` for an artifact of an older sppdet); else ``None``."""
    try:
        existing = read_record(path)
    except ArtifactError:
        return None
    if existing.digest != record.digest:
        return None
    return str(existing.summary.get("run", ""))


def clean_orphans(path: str | os.PathLike[str], *, part_temporaries: bool = True
                  ) -> list[Path]:
    """Delete what killed writers of the per-image artifact ``path`` left behind.

    That is: temporaries of the merged file and of its record (a kill during a merge),
    temporaries inside the parts folder (a kill while writing a part; only with
    ``part_temporaries``), and the parts folder itself when its run was merged into ``path``
    already (a kill before its removal). Unfinished runs are kept (they resume). The caller
    must hold every writer lock of ``path`` (:func:`sppdet.io.locks.all_writer_locks`).

    Returns:
        What was removed.
    """
    path = Path(path)
    removed = remove_temporaries(path)
    parts_dir = path.with_name(path.name + PARTS_SUFFIX)
    if not parts_dir.is_dir():
        return removed
    run = read_run(parts_dir)
    if run is not None and run.get("run"):
        try:
            finished = read_record(path)
        except ArtifactError:
            finished = None
        if finished is not None and finished.digest == run.get("digest") \
                and finished.summary.get("run") == run["run"]:
            shutil.rmtree(parts_dir)
            return [*removed, parts_dir]
    for stale in parts_dir.glob("*.tmp") if part_temporaries else ():
        # temporaries of a killed run: never renamed, so never counted as done
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


def _group_name(item_id: str) -> str:
    """HDF5 group name for an item id ('/' would make sub-groups)."""
    return item_id.replace("/", "\\")


def _h5_attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(jsonable(value))
    if value is None:
        return "null"
    return value


class ItemReader(Closing):
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
            raise ArtifactError(f"{self.path}: cannot open ({exc})",
                                remedy=Remedy.rerun(made_by or self.record.stage,
                                                    force=True)) from exc
        if self._file.attrs.get("sppdet_record") is None or json.loads(
            self._file.attrs["sppdet_record"]
        ).get("digest") != self.record.digest:
            self._file.close()
            raise ArtifactError(
                f"{self.path} does not match its record {record_path(self.path).name}",
                remedy=Remedy.rerun(made_by or self.record.stage, force=True))
        self._items = self._file["items"]
        self.failures: dict[str, str] = json.loads(self._file["failures"][()])

    def close(self) -> None:
        self._file.close()

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


def clean_orphans_if_idle(path: str | os.PathLike[str]) -> list[Path]:
    """:func:`clean_orphans` when no run is writing ``path`` now (else nothing is touched);
    temporaries inside an unfinished run's parts are left to the run that resumes it.

    Stages call it before their up-to-date check, so that a finished artifact's leftovers go
    even when nothing needs rebuilding.
    """
    try:
        with all_writer_locks(path):
            return clean_orphans(path, part_temporaries=False)
    except ArtifactLockedError:
        return []
