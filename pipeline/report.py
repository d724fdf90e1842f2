"""What a stage shows a person: its summary table in the terminal, and the figures people would rather look
at than read (ROC curves, AUROC against the number of labels, two sites' embeddings)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no pyplot state
from matplotlib.ticker import NullFormatter
from rich.table import Table
from sklearn.metrics import roc_curve

from pipeline.atomic import atomic_path


def report_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    """The one shape every stage's terminal summary takes: a titled two-column table of names and values."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def roc_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str) -> Path:
    """One ROC curve per entry of ``curves``: ``{name: (labels, scores, auroc)}``."""
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    for name, (labels, scores, auroc) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def label_efficiency_png(
    series: Mapping[str, Sequence[tuple[int, float, float, float]]], path: Path, title: str
) -> Path:
    """AUROC against labels used, one line per arm, each point with its 95 % interval as a band (bootstrap
    intervals stay within [0, 1], where mean ± sd of a few seeds need not): ``{name: [(n, mean, low, high)]}``."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for name, points in series.items():
        n, mean, low, high = (np.array(v, dtype=float) for v in zip(*sorted(points), strict=True))
        (line,) = ax.plot(n, mean, marker="o", label=name)
        ax.fill_between(n, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xscale("log")
    ticks: list[int] = []
    for n in sorted({int(p[0]) for points in series.values() for p in points}):
        if not ticks or n >= 1.4 * ticks[-1]:  # labels closer than that on a log axis would overprint
            ticks.append(n)
    ax.set_xticks(ticks, [str(n) for n in ticks])  # the budgets themselves, not 2x10^0-style log labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="labelled scans used (log scale)", ylabel="AUROC (95 % interval)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def embedding_png(groups: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Embeddings of each group (``{name: (n, d)}``) on the first two principal axes of all of them."""
    pooled = np.concatenate(list(groups.values()))
    centre = pooled.mean(axis=0)
    _, _, axes = np.linalg.svd(pooled - centre, full_matrices=False)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for name, points in groups.items():
        xy = (points - centre) @ axes[:2].T
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.6, label=f"{name} ({len(points)})")
    ax.set(xlabel="principal axis 1", ylabel="principal axis 2", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)
