"""The shift stage: how far a target site's scans are from a reference site's, before a model meets them.

The recipe of "Failing Loudly" (Rabanser et al. 2019), on the SSL encoder's embeddings, one per scan:
a kernel two-sample test (MMD, RBF kernel at the median distance, permutation p-value) says whether the
two sides differ at all; a domain classifier's cross-validated AUROC says how far (0.5: cannot tell the
sites apart, 1: always can); per-feature Kolmogorov-Smirnov tests with a Bonferroni correction say whether
single features moved. Beside them, what the manifest and the pixels say: modality, manufacturer, pixel
spacing, image size and intensity statistics on each side.

A side is ``MANIFEST[:SITE]``. Comparing a side with itself compares two random halves of it: the null
case, which must not be flagged, and a check any user can run on their own archive.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.data.items import Item, digest, items
from pipeline.data.manifest import read_manifest
from pipeline.data.screen import screen
from pipeline.data.volumes import load_volume
from pipeline.device import resolve
from pipeline.errors import DataError, ShiftError
from pipeline.inference import load_encoder, scan_embeddings
from pipeline.report import embedding_png
from pipeline.tracking import log_artifact, log_metrics, stage_run

META_COLUMNS = ("modality", "manufacturer", "kind")


@dataclass(frozen=True)
class Side:
    """One side of the comparison: the manifest, the site kept (None: every row), its scans' items."""

    manifest: Path
    site: str | None
    rows: list[Item]
    table: pd.DataFrame

    @property
    def name(self) -> str:
        return f"{self.manifest}" + (f":{self.site}" if self.site else "")


@dataclass
class ShiftResult:
    out: Path
    reference: str
    target: str
    target_digest: str
    scans: tuple[int, int]
    mmd: float
    mmd_p: float
    domain_auroc: float
    ks_features: int
    ks_significant: int
    ks_min_p_adjusted: float
    shifted: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_side(spec: str) -> tuple[Path, str | None]:
    """``path/manifest.parquet[:SITE]`` -> (path, site); a colon inside the path (C:\\...) is not a site."""
    head, sep, site = spec.rpartition(":")
    if sep and head.endswith(".parquet") and site:
        return Path(head), site
    return Path(spec), None


def read_side(spec: str, spatial_dims: int, slices: int) -> Side:
    """The accepted, readable scans of one side; a missing site names the sites the manifest has."""
    path, site = parse_side(spec)
    table = read_manifest(path)
    if site is not None:
        sites = sorted({str(s) for s in table.get("site", pd.Series(dtype=str)).fillna("") if s})
        table = table[table.get("site", pd.Series("", index=table.index)).fillna("") == site]
        if table.empty:
            raise DataError(f"{path}: no accepted scans of site {site!r} (sites: {', '.join(sites) or 'none'})")
    rows, _ = screen(items(table, path.parent, spatial_dims, slices), path.parent)
    if not rows:
        raise DataError(f"{spec}: no usable scans")
    return Side(path, site, rows, table.reset_index(drop=True))


def halves(side: Side, seed: int) -> tuple[Side, Side]:
    """Two random halves of one side's scans (the null comparison)."""
    scans = sorted({it["scan"] for it in side.rows})
    rng = np.random.default_rng(seed)
    first = set(rng.permutation(scans)[: len(scans) // 2].tolist())
    parts = []
    for keep in (lambda s: s in first, lambda s: s not in first):
        table = side.table[side.table.series_key.map(keep)].reset_index(drop=True)
        parts.append(Side(side.manifest, side.site, [it for it in side.rows if keep(it["scan"])], table))
    return parts[0], parts[1]


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """(MMD², permutation p-value) with an RBF kernel at the median pairwise distance of the pooled sample.

    Every permutation is one weight vector (1/n on one side, -1/m on the other), so all of them cost one
    matrix product with the kernel: MMD² = wᵀ K w (the biased estimate, which a permutation test may use).
    """
    pooled = np.concatenate([x, y]).astype(np.float64)
    sq = np.maximum(((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1), 0)
    bandwidth = np.median(sq[np.triu_indices(len(pooled), 1)]) or 1.0
    kernel = np.exp(-sq / bandwidth)
    n = len(x)
    rng = np.random.default_rng(seed)
    labels = np.stack([np.arange(len(pooled))] + [rng.permutation(len(pooled)) for _ in range(permutations)], axis=1)
    weights = np.where(labels < n, 1.0 / n, -1.0 / len(y))
    stats = ((kernel @ weights) * weights).sum(axis=0)
    return float(stats[0]), float((1 + (stats[1:] >= stats[0]).sum()) / (1 + permutations))


def domain_auroc(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Cross-validated AUROC of a logistic regression telling the target (1) from the reference (0)."""
    features = np.concatenate([x, y])
    site = np.r_[np.zeros(len(x)), np.ones(len(y))]
    folds = StratifiedKFold(n_splits=min(5, len(x), len(y)), shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    scores = cross_val_predict(probe, features, site, cv=folds, method="decision_function")
    return float(roc_auc_score(site, scores))


def ks_features(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[int, int, float]:
    """(features, features moved at ``alpha`` after Bonferroni, smallest Bonferroni-adjusted p)."""
    p = np.array([ks_2samp(x[:, j], y[:, j]).pvalue for j in range(x.shape[1])])
    adjusted = np.minimum(p * len(p), 1.0)
    return len(p), int((adjusted < alpha).sum()), float(adjusted.min())


def _intensity(rows: list[Item]) -> pd.DataFrame:
    """Per scan: mean, sd and 1st/99th percentiles of the stored values (real-world units, before scaling)."""
    first = {it["scan"]: it for it in rows}
    stats = []
    for scan, it in first.items():
        values = load_volume(it["image"]).astype(np.float64).ravel()
        p1, p99 = np.percentile(values, [1, 99])
        stats.append({"scan": scan, "mean": values.mean(), "sd": values.std(), "p1": p1, "p99": p99})
    return pd.DataFrame(stats).set_index("scan")


def metadata(reference: Side, target: Side) -> dict[str, Any]:
    """What the manifest and the pixels say on each side: category counts, median spacing and size, and
    intensity statistics with a KS p-value each (a change of scanner or protocol shows here first)."""
    out: dict[str, Any] = {}
    for column in META_COLUMNS:
        out[column] = {
            side: {str(k): int(v) for k, v in s.table[column].fillna("").astype(str).value_counts().items()}
            for side, s in (("reference", reference), ("target", target))
            if column in s.table
        }
    for column in ("spacing", "shape"):
        out[f"median_{column}"] = {
            side: [float(v) for v in np.median([np.asarray(a, float)[:2] for a in s.table[column].dropna()], axis=0)]
            for side, s in (("reference", reference), ("target", target))
        }
    ref, tgt = _intensity(reference.rows), _intensity(target.rows)
    out["intensity"] = {
        stat: {
            "reference_median": float(ref[stat].median()),
            "target_median": float(tgt[stat].median()),
            "ks_p": float(ks_2samp(ref[stat], tgt[stat]).pvalue),
        }
        for stat in ref.columns
    }
    return out


def _subsample(embeddings: pd.DataFrame, limit: int, seed: int) -> np.ndarray:
    if len(embeddings) <= limit:
        return embeddings.to_numpy()
    return embeddings.sample(n=limit, random_state=seed).to_numpy()


def run_shift(config: Config, console: Console) -> ShiftResult:
    """Compare ``shift.target`` with ``shift.reference``; write shift.json and shift.png, log both."""
    cfg, pre = config.shift, config.pretrain
    if cfg.reference is None or cfg.target is None:
        raise ShiftError("shift needs --reference and --target (MANIFEST[:SITE] each)")
    encoder, spec = load_encoder(cfg.encoder, pre, config.tracking, 0)
    device = resolve(cfg.device).device
    reference = read_side(cfg.reference, spec.spatial_dims, pre.slices_per_volume)
    if cfg.target == cfg.reference:
        reference, target = halves(reference, cfg.seed)
    else:
        target = read_side(cfg.target, spec.spatial_dims, pre.slices_per_volume)
    if min(len({it["scan"] for it in s.rows}) for s in (reference, target)) < 4:
        raise ShiftError("shift needs at least 4 scans on each side")
    torch.manual_seed(cfg.seed)
    x = _subsample(scan_embeddings(encoder, reference.rows, spec, device), cfg.max_scans, cfg.seed)
    y = _subsample(scan_embeddings(encoder, target.rows, spec, device), cfg.max_scans, cfg.seed + 1)
    mmd, mmd_p = mmd_test(x, y, cfg.permutations, cfg.seed)
    features, moved, ks_p = ks_features(x, y, cfg.alpha)
    out = cfg.out or target.manifest.parent / "shift"
    result = ShiftResult(
        out=out,
        reference=reference.name,
        target=target.name + (" (second half)" if cfg.target == cfg.reference else ""),
        target_digest=digest(target.rows),
        scans=(len(x), len(y)),
        mmd=mmd,
        mmd_p=mmd_p,
        domain_auroc=domain_auroc(x, y, cfg.seed),
        ks_features=features,
        ks_significant=moved,
        ks_min_p_adjusted=ks_p,
        shifted=mmd_p < cfg.alpha,
        metadata=metadata(reference, target),
    )
    summary = {k: v for k, v in asdict(result).items() if k != "out"}
    write_text(out / "shift.json", json.dumps(summary, indent=2))
    title = f"MMD p = {mmd_p:.3g}, domain AUROC = {result.domain_auroc:.2f}"
    embedding_png({"reference": x, "target": y}, out / "shift.png", title)
    with stage_run(config, "shift", tags={"medssl.target_digest": result.target_digest}):
        log_metrics(
            {
                "mmd": mmd,
                "mmd_p": mmd_p,
                "domain_auroc": result.domain_auroc,
                "ks_significant": float(moved),
                "shifted": float(result.shifted),
            }
        )
        log_artifact(out / "shift.json")
        log_artifact(out / "shift.png")
    return result


def summary_table(result: ShiftResult) -> Table:
    table = Table(title="medssl shift", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("scans (reference, target)", f"{result.scans[0]}, {result.scans[1]}")
    table.add_row("embedding MMD² (p)", f"{result.mmd:.4f} ({result.mmd_p:.3g})")
    table.add_row("domain classifier AUROC", f"{result.domain_auroc:.3f}")
    table.add_row("features moved (KS, Bonferroni)", f"{result.ks_significant} of {result.ks_features}")
    table.add_row("shifted", "[red]yes[/]" if result.shifted else "[green]no[/]")
    return table
