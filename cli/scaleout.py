"""What the commands share to run under torchrun (one rank per process, rank 0 merges).

torch.distributed is imported only when a command runs under torchrun, never when the CLI
is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def run_maybe_ranked(run: Callable[..., Any], *, shard: tuple[int, int] | None, device: str,
                     sums: tuple[str, ...] = ("resumed",),
                     unions: tuple[str, ...] = ("failures",)) -> Any | None:
    """``run(shard=..., device=...)``, or, under torchrun, this rank's share of it.

    Under torchrun each rank takes shard ``rank + 1`` of ``WORLD_SIZE`` and runs on its own
    GPU (``auto``/``cuda`` becomes ``cuda:<LOCAL_RANK>``); rank 0 merges after a barrier and
    returns a summary of every rank (``sums`` added, the slowest rank's ``seconds``,
    ``unions`` joined); the other ranks return None and print nothing but errors.
    """
    from sppdet.parallel.torchrun import rank_from_env

    info = rank_from_env()
    if info is None:
        return run(shard=shard, device=device)
    if shard is not None:
        raise click.UsageError("--shard cannot be combined with torchrun: each rank takes "
                               "its own shard (RANK + 1 of WORLD_SIZE)")
    from sppdet.parallel.torchrun import combine_summaries, describe, rank_device, run_ranked

    rank_dev = rank_device(device, info)
    summary, summaries = run_ranked(lambda **kw: run(device=rank_dev, **kw), info,
                                    device=rank_dev)
    if info.rank != 0:
        return None
    summary = combine_summaries(summaries, sums=sums, unions=unions)
    if hasattr(summary, "engine") and not getattr(summary, "up_to_date", False):
        summary.engine = describe(info, rank_dev)
    return summary
