"""Shared fixtures: the data roots, one real Dask cluster for the session, and an ingest runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from distributed import LocalCluster
from rich.console import Console

from pipeline.config import Config, load_config
from pipeline.ingest import IngestResult, run_ingest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
PNEUMONIA = SAMPLE / "pneumoniamnist"  # 28x28 pediatric chest X-rays, train and val, with labels.csv each
TINY_ENCODER = {"widths": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}
# MEDSSL_SHARED_DATA=/nonexistent runs the suite as a checkout without ../shared would.
SHARED = Path(os.environ.get("MEDSSL_SHARED_DATA", ROOT.parent / "shared" / "data"))
HAS_SHARED = SHARED.is_dir()
TEST_KEY = "medssl-test-key"

# A tiny MAE ViT for CPU tests; sizes divisible by 4 and 6, as MONAI's sin-cos position embedding needs in 2D/3D.
TINY_VIT = {
    "hidden_size": 48,
    "mlp_dim": 96,
    "num_layers": 2,
    "num_heads": 4,
    "decoder_hidden_size": 24,
    "decoder_mlp_dim": 48,
    "decoder_num_layers": 1,
    "decoder_num_heads": 4,
}

needs_shared = pytest.mark.skipif(not HAS_SHARED, reason="../shared/data is absent")


def data_root() -> Path:
    """The full shared data when present (CI), else the bundled sample."""
    return SHARED if HAS_SHARED else SAMPLE


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """One real two-process Dask cluster for the whole session; tests reach it by address (--scheduler)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


Ingest = Callable[..., tuple[IngestResult, pd.DataFrame]]


def make_config(
    sources: list[Path], out: Path, scheduler: str | None, tracking_uri: str | None = None, **ingest: Any
) -> Config:
    overrides: dict[str, Any] = {
        "ingest.sources": [str(s) for s in sources],
        "ingest.out": str(out),
        "ingest.pseudonym_key": TEST_KEY,
        "dask.scheduler": scheduler,
        "tracking.enabled": tracking_uri is not None,
        "tracking.uri": tracking_uri,
    }
    overrides.update({f"ingest.{k}": v for k, v in ingest.items()})
    return load_config(None, overrides)


@pytest.fixture
def ingest(tmp_path: Path, dask_scheduler: str) -> Ingest:
    """Run the ingest stage on the session cluster; returns (result, manifest)."""

    def run(*sources: Path, out: Path | None = None, tracking_uri: str | None = None, **options: Any):
        out = out or tmp_path / "out"
        cfg = make_config(list(sources), out, dask_scheduler, tracking_uri, **options)
        result = run_ingest(cfg, Console(file=open(os.devnull, "w")))  # noqa: SIM115
        return result, pd.read_parquet(result.manifest)

    return run


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory, dask_scheduler):
    """The bundled sample, with its chest X-ray labels, ingested once per session: (output folder, accepted rows)."""
    out = tmp_path_factory.mktemp("ingested")
    # The PneumoniaMNIST images (and their archive) have their own fixture: 2,160 more would only slow this one.
    sources = sorted(p for p in SAMPLE.iterdir() if p.is_dir() and not p.name.startswith("pneumoniamnist"))
    cfg = make_config(sources, out, dask_scheduler, labels=[str(SAMPLE / "cxr_nih1000" / "labels.csv")])
    result = run_ingest(cfg, Console(file=open(os.devnull, "w")))  # noqa: SIM115
    manifest = pd.read_parquet(result.manifest)
    return out, manifest[manifest.status == "accepted"]


@pytest.fixture(scope="session")
def pneumonia_manifest(tmp_path_factory, dask_scheduler) -> Path:
    """The sample's PneumoniaMNIST train and val images, ingested without labels (label CSVs come later)."""
    out = tmp_path_factory.mktemp("pneumonia")
    run_ingest(make_config([PNEUMONIA], out, dask_scheduler), Console(file=open(os.devnull, "w")))  # noqa: SIM115
    return out / "manifest.parquet"


@pytest.fixture(scope="session")
def adult_manifest(tmp_path_factory, dask_scheduler) -> Path:
    """The sample's 24 adult chest X-rays (NIH), ingested as site 'nih': another site than PneumoniaMNIST's."""
    out = tmp_path_factory.mktemp("adult")
    with open(os.devnull, "w") as quiet:
        run_ingest(make_config([SAMPLE / "cxr_nih1000"], out, dask_scheduler, site="nih"), Console(file=quiet))
    return out / "manifest.parquet"


def pneumonia_images(folder: Path, per_class: int) -> pd.DataFrame:
    """The first ``per_class`` normal and pneumonia X-rays of the sample's train split, copied into ``folder``;
    their rows of its labels.csv (path, label)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(PNEUMONIA / "train" / "labels.csv")
    chosen = pd.concat([table[table.label == 0].head(per_class), table[table.label == 1].head(per_class)])
    for name in chosen.path:
        shutil.copyfile(PNEUMONIA / "train" / name, folder / name)
    return chosen


def finetune_config(ingested: Path, out: Path, store: str | None = None, **finetune: Any) -> Config:
    """Finetune settings for the tiny encoder on the PneumoniaMNIST sample (train labels), 2 repeats."""
    overrides = {
        "finetune.manifest": str(ingested),
        "finetune.labels": str(PNEUMONIA / "train" / "labels.csv"),
        "finetune.out": str(out),
        "finetune.val_fraction": 0.3,
        "finetune.seeds": 2,
        "finetune.epochs": 3,
        "ingest.pseudonym_key": TEST_KEY,
        "pretrain.size": 28,
        "pretrain.encoder": TINY_ENCODER,
        "tracking.enabled": store is not None,
        "tracking.uri": store,
    }
    overrides.update({f"finetune.{k}": v for k, v in finetune.items()})
    return load_config(None, overrides)
