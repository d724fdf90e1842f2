"""The scans pretraining trains on: the manifest's accepted rows, less those ``pretrain.exclude`` names,
less the files that fail the screen.

The rule "no encoder sees the scans models are judged on" is a setting of this stage, not of whoever calls
it: ``medssl run`` and the weekly DAG fill ``pretrain.exclude`` with the evaluation label CSVs and the
validation part of fine-tuning, and ``medssl pretrain`` with the same settings trains on the same scans.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pipeline.config import PretrainConfig
from pipeline.data.items import Item, items
from pipeline.data.labelled import excluded_scans
from pipeline.data.manifest import read_manifest
from pipeline.data.screen import SkippedFile, screen_and_report


def usable_items(
    manifest: Path, cfg: PretrainConfig, console: Console, role: str, exclude: set[str] = frozenset()
) -> tuple[list[Item], list[SkippedFile]]:
    """The manifest's items for this run but those of ``exclude``'s scans, less the files that fail the
    screen (each named, with its reason)."""
    rows = read_manifest(manifest)
    rows = rows[~rows.series_key.isin(exclude)]
    candidates = items(rows, manifest.parent, cfg.spatial_dims, cfg.slices_per_volume)
    return screen_and_report(candidates, manifest.parent, console, role, cfg.cache_workers)


def training_items(
    manifest: Path, cfg: PretrainConfig, pseudonym_key: str | None, console: Console
) -> tuple[list[Item], list[SkippedFile]]:
    """The items pretraining trains on (see the module docstring)."""
    held = excluded_scans(manifest, cfg.exclude, pseudonym_key, console)
    return usable_items(manifest, cfg, console, "pretrain", held)
