"""Atomic writes: durable (fsync of the data and the folder), and a write that the file
system refuses is a StorageError naming the file, with the old file and record kept."""

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from sppdet.errors import DiskFullError, StorageError
from sppdet.io import atomic
from sppdet.io.atomic import atomic_path, environment_error, remove_temporaries, storage_error
from sppdet.io.records import Record, read_record, write_artifact
from tests.fault_injection import inject


def test_commit_fsyncs_the_data_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"data")
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".a.bin.")  # the data, before the rename
    assert Path(synced[1]) == tmp_path  # the folder, after it
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    synced.clear()
    with atomic_path(tmp_path / "b.bin", durable=False) as tmp:
        tmp.write_bytes(b"data")
    assert synced == []


def test_disk_full_names_the_file_and_keeps_the_old_artifact(tmp_path, monkeypatch):
    path = tmp_path / "svm.npz"
    with write_artifact(path, Record("train-svm", {"C": 1})) as tmp, open(tmp, "wb") as out:
        np.savez(out, w=np.ones(3))
    with inject(monkeypatch, "train-svm:artifact-write:enospc"):
        with pytest.raises(DiskFullError, match=f"disk full writing {path}"):
            with write_artifact(path, Record("train-svm", {"C": 2})) as tmp, \
                    open(tmp, "wb") as out:
                np.savez(out, w=np.zeros(3))
    assert read_record(path).params == {"C": 1}  # the old record still vouches...
    with np.load(path) as old:  # ...for the old data
        assert old["w"].tolist() == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["svm.npz", "svm.npz.record.json"]


def test_read_only_names_the_file_and_the_errno(tmp_path, monkeypatch):
    with inject(monkeypatch, "propose:artifact-write:erofs"):
        with pytest.raises(StorageError) as caught:
            with atomic_path(tmp_path / "x.h5", stage="propose") as tmp:
                tmp.write_bytes(b"1")
    assert str(caught.value) == f"cannot write {tmp_path / 'x.h5'}: [Errno 30] Read-only file system"
    assert not isinstance(caught.value, DiskFullError)
    assert list(tmp_path.iterdir()) == []


def test_errors_without_an_errno_count_as_disk_full_only_on_a_nearly_full_disk(tmp_path,
                                                                                 monkeypatch):
    # what torch.save raises on a full disk (the zip writer's check, no errno)
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "704 vs 598")
    assert storage_error(torch_error, tmp_path / "fc.pt") is None  # plenty of space here
    usage = type("usage", (), {"free": 4096, "total": 1 << 20, "used": 0})
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda folder: usage)
    error = storage_error(torch_error, tmp_path / "fc.pt")
    assert isinstance(error, DiskFullError) and f"disk full writing {tmp_path / 'fc.pt'}" in str(
        error)
    assert storage_error(ValueError("a bug"), tmp_path / "fc.pt") is None


def test_h5py_errno_in_the_message_is_disk_full(tmp_path):
    h5_error = OSError("Can't synchronously write data (file write failed: time = ..., "
                       "errno = 28, error message = 'No space left on device')")
    assert isinstance(storage_error(h5_error, tmp_path / "x.h5"), DiskFullError)


def test_environment_error_for_the_cli():
    error = environment_error(OSError(errno.EROFS, "Read-only file system", "/ro/work"))
    assert str(error) == "cannot write /ro/work: [Errno 30] Read-only file system"
    assert environment_error(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert environment_error(ValueError("x")) is None


def test_remove_temporaries_takes_only_those_of_the_artifact(tmp_path):
    names = [".test.h5.abcd_123.tmp", ".test.h5.record.json.zz9yx8w7.tmp",  # ours
             ".test.h5.recall.json.abcdefgh.tmp", ".test.h5.toolongname.tmp",  # others
             ".other.h5.abcdefgh.tmp", "test.h5"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_temporaries(tmp_path / "test.h5")
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
