"""Ranks started by ``torchrun`` (``torch.distributed``): each takes a shard, rank 0 merges.

``torchrun --nproc-per-node=N -m sppdet [global options] cache-features ...`` starts N copies
of the command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set (and a rendezvous, which
also spans machines). Each rank runs the stage on shard ``rank + 1`` of ``world size`` (the
``shard=(i, n)`` contract of every per-image stage), committing one part file per image;
after a barrier, rank 0 merges the parts and writes the record, while the other ranks only
report errors. A rank that dies makes torchrun stop the others and fail; the parts already
written stay, so running the same command again resumes.

The process group only carries a barrier and a few small objects (the ranks' summaries): gloo
on the CPU, NCCL when the ranks run on GPUs.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sppdet.errors import ConfigError
from sppdet.progress import LOGGER_NAME, configure_logging

S = TypeVar("S")

#: How long a rank waits for the others at the barrier: the slowest rank's whole share.
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def shard(self) -> tuple[int, int]:
        """The ``(i, n)`` shard of this rank (1-based)."""
        return self.rank + 1, self.world_size


def rank_from_env(environ: dict[str, str] | None = None) -> RankInfo | None:
    """The torchrun rank of this process, or None when not started by torchrun (or alone).

    Raises:
        ConfigError: torchrun's variables are malformed.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        info = RankInfo(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                        local_rank=int(env.get("LOCAL_RANK", env["RANK"])))
    except ValueError as exc:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK are not integers ({exc})") from exc
    if info.world_size <= 1:
        return None
    if not 0 <= info.rank < info.world_size:
        raise ConfigError(f"RANK {info.rank} is outside WORLD_SIZE {info.world_size}")
    return info


def rank_device(device: str, info: RankInfo) -> str:
    """The device of a rank: ``auto`` and ``cuda`` become ``cuda:<local rank>`` when there
    are GPUs (one rank per GPU); an explicit ``cuda:N`` or ``cpu`` is kept."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank % torch.cuda.device_count()}"
    return device


def quiet_rank() -> None:
    """Ranks other than 0 print errors only: no progress bars, no summaries, no warnings
    (rank 0's summary lists every image's failure)."""
    configure_logging(quiet=True)
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if getattr(handler, "_sppdet_console", False):
            handler.setLevel(logging.ERROR)


def run_ranked(stage: Callable[..., S], info: RankInfo, *, device: str) -> tuple[S, list[Any]]:
    """Run ``stage(shard=..., merge_gate=...)`` as one rank of a torchrun job.

    ``stage`` is a stage's ``run`` with every other argument bound; it must call
    ``merge_gate()`` once its share is committed and merge only when it returns True. The
    gate is the barrier: rank 0 merges once every rank has committed its share.

    Returns:
        The stage's result on this rank, and on rank 0 the results of every rank (rank
        order; an empty list on the other ranks).
    """
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "timeout": BARRIER_TIMEOUT}
    if backend == "nccl":
        import torch

        torch.cuda.set_device(torch.device(device))
        kwargs["device_id"] = torch.device(device)
    if info.rank != 0:
        quiet_rank()
    dist.init_process_group(**kwargs)
    gate_called = False

    def merge_gate() -> bool:
        nonlocal gate_called
        gate_called = True
        dist.barrier()
        return info.rank == 0

    try:
        result = stage(shard=info.shard, merge_gate=merge_gate)
        if not gate_called:  # the stage was up to date: keep the ranks in step all the same
            dist.barrier()
        gathered: list[Any] | None = [None] * info.world_size if info.rank == 0 else None
        dist.gather_object(result, gathered, dst=0)
        return result, list(gathered or [])
    finally:
        dist.destroy_process_group()


def combine_summaries(summaries: list[S], *, sums: tuple[str, ...] = (),
                      maxima: tuple[str, ...] = ("seconds",),
                      unions: tuple[str, ...] = ("failures",)) -> S:
    """Rank 0's summary with the counts of every rank: ``sums`` added, ``maxima`` the
    largest (wall time is the slowest rank's), ``unions`` (dicts or lists) joined."""
    import copy

    total = copy.copy(summaries[0])
    for name in sums:
        setattr(total, name, sum(getattr(s, name) for s in summaries))
    for name in maxima:
        setattr(total, name, max(getattr(s, name) for s in summaries))
    for name in unions:
        first = getattr(total, name)
        if isinstance(first, dict):
            merged: Any = {}
            for s in summaries:
                merged.update(getattr(s, name))
        else:
            merged = [v for s in summaries for v in getattr(s, name)]
        setattr(total, name, merged)
    return total


def describe(info: RankInfo, device: str) -> str:
    """The engine line of a torchrun run."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    return f"torchrun, {info.world_size} ranks ({backend}); rank 0 merged"
