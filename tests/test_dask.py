"""The same archive gives the same volumes on a fresh local cluster and on an existing scheduler."""

from __future__ import annotations

from conftest import SAMPLE, make_config
from rich.console import Console

from pipeline.ingest import run_ingest


def test_local_cluster_and_remote_scheduler_agree(ingest, tmp_path):
    _, remote = ingest(SAMPLE)
    cfg = make_config([SAMPLE], tmp_path / "local", scheduler=None)
    cfg.dask.workers = 1
    result = run_ingest(cfg, Console(quiet=True))
    import pandas as pd

    local = pd.read_parquet(result.manifest)
    cols = ["series_key", "status", "reason", "voxel_sha256"]
    assert (
        local[cols]
        .sort_values("series_key")
        .reset_index(drop=True)
        .equals(remote[cols].sort_values("series_key").reset_index(drop=True))
    )
