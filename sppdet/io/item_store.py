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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sppdet.errors import ArtifactError, ConfigError, StaleArtifactError
from sppdet.io.atomic import atomic_path
from sppdet.io.closing import Closing
from sppdet.io.locks import LOCK_SUFFIX, ArtifactLock
from sppdet.io.records import (
    PARTS_SUFFIX,
    Record,
    canonical_json,
    is_up_to_date,
    jsonable,
    read_record,
    record_path,
    write_artifact,
)

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
