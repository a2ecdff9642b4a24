"""Dask (``dask.distributed``) as an executor: a LocalCluster, a running scheduler, or a
scheduler file (what dask-jobqueue on Slurm/PBS and dask-mpi write).

Tasks are submitted in a sliding window (a few per worker thread, so a 450k-image split is
never held by the scheduler at once) and come back in completion order; a task whose worker
dies is computed again elsewhere (the scheduler's ``allowed-failures`` rule) and a task that
raises is retried ``retries`` times. Workers must be able to import sppdet and read the
dataset and input artifacts at the same paths as this process (a shared file system); they
never write: results come back to this process, which is the only writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sppdet.errors import ConfigError, SppdetError

from .executors import RunStats

T = TypeVar("T")

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 10.0
#: Retries of a task that raised (an unexpected error: per-item failures are results).
TASK_RETRIES = 2
EXTRA_HINT = "pip install 'sppdet[dask]'"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class ClusterError(SppdetError):
    """The Dask cluster cannot be reached or started."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("running on Dask needs the dask.distributed package, which is not "
                          f"installed; install the extra: {EXTRA_HINT}") from exc
    return distributed


class DaskExecutor:
    """An executor on a Dask cluster (:func:`connect` makes one).

    Args:
        client: a connected ``distributed.Client``.
        cluster: the LocalCluster this executor started (closed with it), or None.
        address: what the user gave (``local``, an address or a scheduler file).
        retries: retries of a task that raised.
    """

    def __init__(self, client: Any, cluster: Any = None, *, address: str = "",
                 retries: int = TASK_RETRIES) -> None:
        self.client = client
        self.cluster = cluster
        self.address = address
        self.retries = retries
        self.last_run = RunStats()
        self._lost: list[set[str]] = []
        self._lock = threading.Lock()
        client.subscribe_topic("all", self._on_event)

    @property
    def threads(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    @property
    def workers(self) -> int:
        return len(self.client.nthreads())

    @property
    def description(self) -> str:
        nthreads = self.client.nthreads()
        where = "LocalCluster" if self.cluster is not None else "cluster"
        return (f"Dask {where} at {self.client.scheduler.address}: {len(nthreads)} workers, "
                f"{sum(nthreads.values())} threads")

    def _on_event(self, event: Any) -> None:
        """Keys that were running on, or held by, a worker that was lost (not retired)."""
        _, message = event if isinstance(event, tuple) else (None, event)
        if isinstance(message, dict) and message.get("action") == "remove-worker" \
                and not message.get("expected", False):
            keys = set(message.get("processing-tasks", ())) | set(
                message.get("lost-computed-tasks", ()))
            with self._lock:
                self._lost.append({str(k) for k in keys})

    def imap_unordered(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        return self._map(fn, arguments, ordered=False)

    def imap(self, fn: Callable[..., T], arguments: Iterable[tuple]) -> Iterator[T]:
        return self._map(fn, arguments, ordered=True)

    def _map(self, fn: Callable[..., T], arguments: Iterable[tuple], *,
             ordered: bool) -> Iterator[T]:
        distributed = _import_distributed()
        pending = deque(arguments)
        self.last_run = RunStats(tasks=len(pending))
        prefix = f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex[:8]}"
        keys: set[str] = set()
        with self._lock:
            self._lost.clear()
        window = max(8, 4 * self.threads)
        done = distributed.as_completed(loop=self.client.loop, with_results=True,
                                        raise_errors=True)
        order: deque[Any] = deque()  # submitted, not yet yielded, in submission order
        index = 0

        def submit() -> None:
            nonlocal index
            args = pending.popleft()
            key = f"{prefix}-{index}"
            index += 1
            keys.add(key)
            future = self.client.submit(fn, *args, key=key, pure=False, retries=self.retries)
            if not ordered:
                done.add(future)
            order.append(future)

        try:
            while pending and len(order) < window:
                submit()
            while order:
                try:
                    if ordered:
                        future = order.popleft()
                        value = future.result()
                    else:
                        future, value = next(done)
                        order.remove(future)
                except distributed.KilledWorker as exc:
                    raise ClusterError(
                        f"a task was lost with one worker after another ({exc}): it likely "
                        "crashes the process that runs it (out of memory, a crash in a "
                        "library); run that item without Dask to see why") from exc
                future.release()
                if pending:
                    submit()
                yield value
        finally:
            for future in order:
                future.cancel()
            with self._lock:
                self.last_run.reruns = sum(len(lost & keys) for lost in self._lost)

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.unsubscribe_topic("all")
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


#: The nanny setting that :func:`_glibc_trim_as_default` removes.
TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@contextlib.contextmanager
def _glibc_trim_as_default() -> Iterator[None]:
    """Start local workers with glibc's own malloc trim threshold, not Dask's 64 KiB.

    Dask's nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` so that workers hand freed memory back
    to the OS at once; selective search frees and reallocates large buffers per image, and
    with that setting it spent 2.5 times the system time and ran 20 % slower per image than in
    joblib's workers (BENCHMARKS.md, "Dask's overhead on one machine"). A value the user set
    (the environment variable itself) is kept.
    """
    import dask

    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        yield
        return
    with dask.config.set({TRIM_KEY: None}):
        yield


def connect(address: str, *, jobs: int = 1, timeout: float | None = None) -> DaskExecutor:
    """A :class:`DaskExecutor` on the cluster that ``address`` names.

    Args:
        address: ``local`` (a LocalCluster of ``jobs`` single-threaded worker processes on
            this machine), a scheduler address (``tcp://host:8786``, any ``scheme://``), or
            the path of a scheduler file (JSON with the address, as ``dask scheduler
            --scheduler-file``, dask-jobqueue and dask-mpi write).
        jobs: worker processes of a local cluster (ignored otherwise).
        timeout: seconds to wait for the scheduler (default :data:`CONNECT_TIMEOUT`).

    Raises:
        ConfigError: dask.distributed is not installed, or ``address`` is none of the above.
        ClusterError: the scheduler cannot be reached within ``timeout`` seconds.
    """
    distributed = _import_distributed()
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    address = str(address).strip()
    if address == "local":
        with _glibc_trim_as_default():
            cluster = distributed.LocalCluster(
                n_workers=max(1, int(jobs)), threads_per_worker=1, processes=True,
                dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                silence_logs=logging.ERROR,
                # workers inherit this terminal: their progress bars would garble the client's
                env={"SPPDET_QUIET": "1"})
        try:
            client = distributed.Client(cluster, set_as_default=False, timeout=timeout)
        except BaseException:
            cluster.close()
            raise
        return DaskExecutor(client, cluster, address=address)
    if _SCHEME.match(address):
        kwargs: dict[str, Any] = {"address": address}
        where = f"the Dask scheduler at {address}"
    elif Path(address).is_file():
        kwargs = {"scheduler_file": address}
        where = f"the Dask scheduler named in {address}"
    else:
        raise ConfigError(
            f"Dask address {address!r} is neither 'local', a scheduler address such as "
            "tcp://host:8786, nor an existing scheduler file")
    try:
        client = distributed.Client(**kwargs, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach {where} within {timeout:g} s ({exc}); check that "
                           "the scheduler runs and that this machine can reach it") from exc
    return DaskExecutor(client, address=address)


@contextlib.contextmanager
def open_executor(dask: str | None, *, jobs: int = 1,
                  timeout: float | None = None) -> Iterator[DaskExecutor | None]:
    """The Dask executor for ``dask`` while inside, closed after; None when ``dask`` is None
    (the stage then runs as it does without Dask: this process or joblib's ``jobs``)."""
    if dask is None:
        yield None
        return
    executor = connect(dask, jobs=jobs, timeout=timeout)
    try:
        yield executor
    finally:
        executor.close()
