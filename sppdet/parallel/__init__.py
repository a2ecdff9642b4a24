"""Running per-item and per-class work on more than one process or machine.

Three engines, one contract underneath: items (images) are independent, so a worker computes
its share, the outputs come back as per-item part files, and one process merges them
(:class:`sppdet.io.item_store.ItemStore`).

- :mod:`.executors`: this process or joblib's processes (``jobs``), the default;
- :mod:`.dask_cluster`: a Dask cluster (a LocalCluster, a scheduler address or a scheduler
  file) for the CPU stages;
- :mod:`.torchrun`: ranks started by ``torchrun`` (``torch.distributed``) for the GPU stages,
  each taking shard ``rank + 1`` of ``world size``.

Nothing here imports dask or torch.distributed at import time.
"""

from .executors import (Executor, JoblibExecutor, RunStats, SerialExecutor, local_executor,
                        process_cache)

__all__ = ["Executor", "JoblibExecutor", "RunStats", "SerialExecutor", "local_executor",
           "process_cache"]
