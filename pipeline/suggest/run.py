"""The suggest stage: which unlabeled scans a radiologist should label next.

Labels help most where the labelled set does not yet reach: scans far, in the SSL embedding space, from
every scan already labelled or already picked (greedy k-centre, the core-set rule of Sener & Savarese
2018). With a detector, the candidates are first narrowed to the scans it is least sure about (logit
nearest 0), so the picks are both uncertain and unlike each other. The output is a CSV the radiologist
fills in (``path,label`` with the label empty) and ``medssl finetune --labels`` reads as it is.

Paths: the manifest keeps no full paths (folders can name a patient), so the unlabeled images are found
again in their ``source_dir`` by their keyed ``series_key``; a DICOM series is named by its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from models.detectors import Classifier
from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.data.items import items
from pipeline.data.labelled import labelled_scans
from pipeline.data.manifest import read_manifest
from pipeline.data.screen import screen
from pipeline.device import resolve
from pipeline.errors import SuggestError
from pipeline.inference import load_encoder, scan_embeddings, score
from pipeline.pseudonym import image_key, read_key
from pipeline.registry.store import load_model


@dataclass(frozen=True)
class SuggestResult:
    out: Path
    suggested: int
    pool: int
    labelled: int
    used_detector: bool


def k_centre(candidates: np.ndarray, anchors: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` candidates, each in turn the one farthest (cosine) from the anchors and the picks.
    With no anchors (nothing labelled yet) the candidates' mean direction is the anchor."""
    if not len(anchors):
        anchors = candidates.mean(axis=0, keepdims=True)
    nearest = 1 - (candidates @ anchors.T).max(axis=1)
    picks: list[int] = []
    for _ in range(min(n, len(candidates))):
        best = int(np.argmax(nearest))
        picks.append(best)
        nearest = np.minimum(nearest, 1 - candidates @ candidates[best])
        nearest[picks] = -np.inf
    return picks


def select(embeddings: pd.DataFrame, labelled: set[str], n: int, doubt: dict[str, float] | None = None) -> list[str]:
    """``n`` unlabelled scans (rows of ``embeddings``) by greedy k-centre from the labelled ones; with
    ``doubt`` (|logit| per unlabelled scan), only among the ``3n`` the detector is least sure about."""
    pool = [s for s in embeddings.index if s not in labelled]
    anchors = embeddings.loc[[s for s in embeddings.index if s in labelled]].to_numpy()
    if doubt is not None:
        pool = sorted(pool, key=lambda scan: doubt[scan])[: 3 * n]
    return [pool[i] for i in k_centre(embeddings.loc[pool].to_numpy(), anchors, n)]


def _where(manifest: pd.DataFrame, scans: list[str], key: bytes | None) -> dict[str, str]:
    """Each scan's original file (an image found again by its key in ``source_dir``) or its series folder."""
    rows = manifest.set_index("series_key").loc[scans]
    found: dict[str, str] = {}
    for folder in set(rows.source_dir[rows.kind == "image"]) if key else ():
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            found.setdefault(image_key(key, os.path.join(folder, name)), os.path.join(folder, name))
    return {scan: found.get(scan, str(rows.source_dir[scan])) for scan in scans}


def run_suggest(config: Config, console: Console) -> SuggestResult:
    cfg, fine = config.suggest, config.finetune
    if cfg.manifest is None:
        raise SuggestError("no manifest given: pass --manifest")
    device = resolve(fine.device).device
    encoder, spec = load_encoder(cfg.encoder, config.pretrain, config.tracking, 0)
    manifest = read_manifest(cfg.manifest)
    key = read_key(config.ingest.secret(), cfg.manifest.parent)
    labelled = set(manifest.series_key[manifest.label.notna()]) if "label" in manifest else set()
    if cfg.labels is not None:  # path,label or series_key,label (medssl review export)
        labelled |= labelled_scans(cfg.manifest, cfg.labels, config.ingest.secret())
    found = items(manifest, cfg.manifest.parent, spec.spatial_dims, config.pretrain.slices_per_volume)
    rows, _ = screen(found, cfg.manifest.parent)
    if not rows:
        raise SuggestError(f"{cfg.manifest}: no usable scans")
    embeddings = scan_embeddings(encoder, rows, spec, device)
    doubt = None
    if cfg.detector is not None:
        detector, _ = load_model(cfg.detector, config.tracking)
        if not isinstance(detector, Classifier):
            raise SuggestError("suggest --detector needs a linear or full detector (a one-class one has no doubt)")
        first = {it["scan"]: it for it in rows}
        pool = [s for s in embeddings.index if s not in labelled]
        images = spec.load([first[s] for s in pool])
        doubt = dict(zip(pool, np.abs(score(detector, images, device)), strict=True))
    picks = select(embeddings, labelled, cfg.n, doubt)
    out = cfg.out or cfg.manifest.parent / "suggested.csv"
    where = _where(manifest, picks, key)
    write_text(out, pd.DataFrame({"path": [where[s] for s in picks], "label": ""}).to_csv(index=False))
    unlabelled = sum(1 for scan in embeddings.index if scan not in labelled)
    return SuggestResult(out, len(picks), unlabelled, len(embeddings) - unlabelled, cfg.detector is not None)
