"""The one place that sets up Dask: a LocalCluster on this machine, or a client of an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster

from pipeline.config import DaskConfig
from pipeline.errors import ClusterError


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def dask_client(cfg: DaskConfig) -> Iterator[Client]:
    """Yield a Dask client; a local cluster is closed on exit, a remote scheduler is left running.

    Local workers are processes with one thread each: DICOM parsing holds the GIL, so threads would not
    run in parallel. They are forked from this process, which has already imported the stage's modules, so
    a worker is ready in milliseconds instead of re-importing pydicom, nibabel and friends (about a second).
    Their built-in sampling profiler (for the dashboard's profile page) is off: it walks the task thread's
    stack every 10 ms under the GIL, which made the header pass 10-15% slower.
    """
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {cfg.scheduler} ({type(exc).__name__})") from exc
        with client:
            yield client
        return
    with (
        dask.config.set(
            {"distributed.worker.multiprocessing-method": "fork", "distributed.worker.profile.enabled": False}
        ),
        LocalCluster(
            n_workers=cfg.workers or default_workers(),
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=":0",  # no fixed port: runs side by side never collide
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
