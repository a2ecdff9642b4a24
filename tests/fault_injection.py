"""Fault injection for tests: crash a stage at a named point, rerun it, compare bit for bit.

The library marks named points (:mod:`sppdet.io.faults`); ``SPPDET_FAULT=STAGE:POINT[:N]``
makes the N-th passage SIGKILL the process. :func:`kill_at` runs code in a fresh interpreter
with that set and checks it died there; :func:`item_contents` and :func:`assert_same_items`
compare two per-image artifacts array by array, byte for byte; :func:`leftovers` lists what a
killed run may leave behind. :func:`inject` sets a fault in this process (``enospc`` /
``erofs`` raise; they do not kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sppdet.io import faults
from sppdet.io.item_store import ItemReader

REPO = Path(__file__).resolve().parents[1]


def kill_at(fault: str, code: str, *, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` (Python, dedented) in a fresh interpreter with ``SPPDET_FAULT=fault``.

    Raises:
        AssertionError: the process was not killed by SIGKILL (the point was never reached,
            or the code failed first); the message holds its stderr.
    """
    env = {**os.environ, faults.ENV: fault}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == -signal.SIGKILL, (
        f"expected a kill at {fault}, got exit code {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@contextlib.contextmanager
def inject(monkeypatch: Any, fault: str) -> Iterator[None]:
    """Set ``SPPDET_FAULT=fault`` in this process (pass counts start from zero)."""
    faults.reset()
    monkeypatch.setenv(faults.ENV, fault)
    try:
        yield
    finally:
        monkeypatch.delenv(faults.ENV, raising=False)
        faults.reset()


def _dataset_bytes(obj: h5py.Dataset) -> tuple[str, tuple[int, ...], bytes]:
    value = np.asarray(obj[()])
    return str(value.dtype), value.shape, value.tobytes()


def item_contents(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """``(record digest, {item id: (arrays, attrs)})`` of a per-image artifact, each array as
    ``(dtype, shape, raw bytes)`` so that equality is bit for bit (NaNs included)."""
    out: dict[str, Any] = {}
    with ItemReader(path) as reader:
        for item_id in reader.ids():
            group = reader.group(item_id)
            arrays: dict[str, Any] = {}
            group.visititems(lambda name, obj: arrays.__setitem__(name, _dataset_bytes(obj))
                             if isinstance(obj, h5py.Dataset) else None)
            attrs = {k: (v.tobytes() if isinstance(v, np.ndarray) else v)
                     for k, v in group.attrs.items()}
            out[item_id] = (arrays, attrs)
        return reader.record.digest, out


def assert_same_items(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
    """Two per-image artifacts hold the same record digest, ids (in order), arrays (bit for
    bit) and attributes."""
    digest_a, items_a = item_contents(a)
    digest_b, items_b = item_contents(b)
    assert digest_a == digest_b, f"{a} and {b} were made with other parameters"
    assert list(items_a) == list(items_b), f"{a} and {b} hold other images"
    for item_id in items_a:
        assert items_a[item_id] == items_b[item_id], f"image {item_id} differs"


def leftovers(folder: str | os.PathLike[str]) -> list[str]:
    """Names of temporaries (``*.tmp``) and parts folders under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")
                  if p.name.endswith(".tmp") or p.name.endswith(".parts"))
