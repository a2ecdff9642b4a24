"""Executors: one small interface that maps a per-item function over items, in this process,
in joblib's worker processes, or on a Dask cluster (:mod:`sppdet.parallel.dask_cluster`).

Stages hand an executor module-level functions and small picklable arguments (paths, ids,
settings), never an open HDF5 handle: a worker opens what it reads itself (see
:func:`process_cache`), returns plain arrays, and the calling process alone writes the
output (one writer per file).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from joblib import Parallel, delayed

T = TypeVar("T")


@dataclass
class RunStats:
    """What the last map of an executor did.

    Attributes:
        tasks: tasks submitted.
        reruns: tasks computed again because the worker running or holding them was lost
            (always 0 for in-process and joblib runs, where a lost worker fails the map).
    """

    tasks: int = 0
    reruns: int = 0


class Executor(Protocol):
    """Maps a function over argument tuples, somewhere.

    Attributes:
        description: names the engine and its size (shown in stage summaries).
        workers: worker processes (1 in this process).
        threads: threads in all (what a stage splits per-class work into).
        last_run: stats of the last map (valid once its iterator is exhausted).
    """

    description: str
    workers: int
    threads: int
    last_run: RunStats

    def imap_unordered(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        """``fn(*args)`` for every tuple, yielded in completion order."""
        ...

    def imap(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        """``fn(*args)`` for every tuple, yielded in the order given (computed ahead)."""
        ...


class SerialExecutor:
    """Runs every task in this process, one after the other (``--jobs 1``)."""

    description = "this process"
    workers = 1
    threads = 1

    def __init__(self) -> None:
        self.last_run = RunStats()

    def imap_unordered(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        return self.imap(fn, arguments)

    def imap(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        self.last_run = RunStats()
        for args in arguments:
            self.last_run.tasks += 1
            yield fn(*args)


class JoblibExecutor:
    """joblib's loky processes on this machine (fresh interpreters, so OpenCV's and PyTorch's
    thread pools are never forked); loky keeps its workers between maps.

    Args:
        jobs: worker processes (at least 2; use :class:`SerialExecutor` for 1).
    """

    def __init__(self, jobs: int) -> None:
        self.workers = self.threads = int(jobs)
        self.description = f"joblib, {self.workers} processes on this machine"
        self.last_run = RunStats()

    def imap_unordered(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        return self._map(fn, arguments, "generator_unordered")

    def imap(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        return self._map(fn, arguments, "generator")

    def _map(self, fn: Callable[..., T], arguments: Iterable[tuple], mode: str) -> Iterator[T]:
        arguments = list(arguments)
        self.last_run = RunStats(tasks=len(arguments))
        if not arguments:
            return iter(())
        return iter(Parallel(n_jobs=self.workers, return_as=mode)(
            delayed(fn)(*args) for args in arguments))


def local_executor(jobs: int) -> SerialExecutor | JoblibExecutor:
    """This process for ``jobs == 1``, joblib's processes otherwise (what ``--jobs`` means)."""
    return SerialExecutor() if jobs <= 1 else JoblibExecutor(jobs)


# ---------------------------------------------------------------------------------------------
# Per-process state of workers

_CACHE: OrderedDict[Hashable, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2


def process_cache(key: Hashable, build: Callable[[], T]) -> T:
    """The value built for ``key`` in this process, built on first use and then kept.

    What a task uses to open its inputs (a model, an HDF5 reader) once per worker process
    rather than once per item. Keys must name everything the value depends on, including the
    identity of the files it reads (a rewritten file gets a new key). The least recently used
    of more than two values is dropped (closed, if it has ``close``).
    """
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        value = build()
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _, old = _CACHE.popitem(last=False)
            close = getattr(old, "close", None)
            if callable(close):
                close()
        return value


def seed_process_cache(key: Hashable, value: Any) -> None:
    """Put an already built value in this process's cache (so in-process tasks reuse it)."""
    with _CACHE_LOCK:
        _CACHE[key] = value
        _CACHE.move_to_end(key)


def forget_process_cache(key: Hashable) -> None:
    """Drop ``key`` from this process's cache without closing it (its owner closes it)."""
    with _CACHE_LOCK:
        _CACHE.pop(key, None)


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive chunks of ``size`` (the last may be shorter)."""
    return [list(items[i:i + size]) for i in range(0, len(items), max(1, size))]
