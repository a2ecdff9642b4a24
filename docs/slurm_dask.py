"""Run sppdet's CPU stages on a Slurm cluster through dask-jobqueue (an example to adapt).

dask-jobqueue submits Slurm jobs that each start Dask workers; they connect to a scheduler
running here, which writes its address to a scheduler file. Every sppdet command with
``--dask`` then takes that file:

    pip install 'sppdet[dask]' dask-jobqueue
    python docs/slurm_dask.py --jobs 8 --scheduler-file ~/sppdet-scheduler.json &
    sppdet -w /shared/work propose /shared/VOC2007 --split trainval \
        --dask ~/sppdet-scheduler.json
    sppdet -w /shared/work train-svm /shared/VOC2007 --name spp1 \
        --dask ~/sppdet-scheduler.json

The workers must see the dataset and the work dir at the same paths as the machine that runs
``sppdet`` (a shared file system) and have the same sppdet installed (same virtualenv path).
They only read; the ``sppdet`` process writes every artifact. Stop this script (Ctrl-C) to
cancel the Slurm jobs.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="Slurm jobs (one node each)")
    parser.add_argument("--cores", type=int, default=16, help="cores per job")
    parser.add_argument("--memory", default="64GB", help="memory per job")
    parser.add_argument("--processes", type=int, default=None,
                        help="worker processes per job (default: one per core: the stages' "
                             "per-image work is single-threaded Python and OpenCV)")
    parser.add_argument("--walltime", default="12:00:00")
    parser.add_argument("--queue", default=None, help="Slurm partition")
    parser.add_argument("--account", default=None)
    parser.add_argument("--scheduler-file", required=True,
                        help="where the scheduler's address goes (give it to --dask)")
    args = parser.parse_args()

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    processes = args.processes or args.cores
    cluster = SLURMCluster(
        cores=args.cores, processes=processes, memory=args.memory, walltime=args.walltime,
        queue=args.queue, account=args.account,
        # one thread per worker process; torch and OpenCV would otherwise oversubscribe
        job_script_prologue=["export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"],
        scheduler_options={"dashboard_address": ":8787"},
    )
    cluster.scale(jobs=args.jobs)
    client = Client(cluster)
    client.write_scheduler_file(args.scheduler_file)
    print(f"scheduler {cluster.scheduler_address}; file {args.scheduler_file}; "
          f"{args.jobs} Slurm jobs x {processes} workers requested")
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
