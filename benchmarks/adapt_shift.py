"""Adaptation under an acquisition shift alone: one task, two simulated scanners.

The two real chest X-ray sites of ``adapt_sites.py`` differ in patients, in acquisition and in what their
labels mean (adult "any of 14 findings" against pediatric pneumonia), and no label-free adaptation can
undo the last. Here the task stays the same and only the acquisition changes, the shift AdaBN, TENT and
continued SSL are meant for: PneumoniaMNIST's train images are dealt to two sites by a hash of their pixels
(exact copies stay together), and site B's images pass through a fixed "second scanner" before ingest, in
the spirit of MedMNIST-C's acquisition corruptions: a different detector response (gamma 2), a softer
reconstruction (Gaussian blur, sigma 0.7 px) and a lower dose (Gaussian noise, sd 0.04 of the range).
Those settings were fixed before the first run and not tuned. Everything else is ``adapt_sites.py``: each
site's own MoCo encoder, probes on the source's labels, AdaBN, TENT, continued SSL, the target's own
in-site ceiling, both directions, validation parts only.

    .venv/bin/python benchmarks/adapt_shift.py --budget 10%,100% --write-results
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from adapt_sites import CONFIG, Site, both_ways, options, probes, publish, start
from PIL import Image
from results import SHARED
from scipy.ndimage import gaussian_filter

from pipeline.atomic import write_text
from pipeline.config import load_config
from pipeline.ingest import run_ingest

SCANNER_B = {"gamma": 2.0, "blur_sigma": 0.7, "noise_sd": 0.04}


def scanner_b(image: np.ndarray, seed: int) -> np.ndarray:
    """The image as the simulated second scanner would give it (uint8 in, uint8 out)."""
    x = (image.astype(np.float64) / 255.0) ** SCANNER_B["gamma"]
    x = gaussian_filter(x, SCANNER_B["blur_sigma"])
    x = x + np.random.default_rng(seed).normal(0.0, SCANNER_B["noise_sd"], x.shape)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def export_sites(npz: Path, out: Path) -> dict[str, Path]:
    """site -> folder of PNGs and labels.csv: the train images dealt by pixel hash, site B's through
    ``scanner_b`` (its noise seeded by the same hash, so exact copies stay exact); written once."""
    folders = {"A": out / "site-a", "B": out / "site-b"}
    if all((f / "labels.csv").is_file() for f in folders.values()):
        return folders
    data = np.load(npz)
    rows: dict[str, list[dict]] = {"A": [], "B": []}
    for i, (image, label) in enumerate(zip(data["train_images"], data["train_labels"][:, 0], strict=True)):
        digest = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "little")
        site = "AB"[digest % 2]
        name = f"train_{i:05d}.png"
        folders[site].mkdir(parents=True, exist_ok=True)
        Image.fromarray(scanner_b(image, digest) if site == "B" else image).save(folders[site] / name)
        rows[site].append({"path": name, "label": int(label)})
    for site, folder in folders.items():
        write_text(folder / "labels.csv", pd.DataFrame(rows[site]).to_csv(index=False))  # last: "all written"
    return folders


def main() -> None:
    args = options(__doc__).parse_args()
    console, out, config = start(args, "adapt-shift")
    sites = []
    for name, folder in export_sites(SHARED / "pneumoniamnist" / "pneumoniamnist_trainval.npz", out / "png").items():
        ingest = {"ingest.sources": [str(folder)], "ingest.out": str(out / f"pool-{name}"), "tracking.enabled": False}
        manifest = run_ingest(load_config(CONFIG, ingest), console).manifest
        sites.append(Site(f"site-{name}", manifest, folder / "labels.csv", config, out, console))
    a, b = sites
    header = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. PneumoniaMNIST "
        f"train images dealt to site A ({len(a.train)} training, {len(a.val)} validation) and site B "
        f"({len(b.train)}, {len(b.val)}; scanner B: gamma {SCANNER_B['gamma']}, blur sigma "
        f"{SCANNER_B['blur_sigma']} px, noise sd {SCANNER_B['noise_sd']}), {config.pretrain.size}x"
        f"{config.pretrain.size}; encoders: MoCo on each site's training part; {probes(args)}"
    )
    publish(header, both_ways(a, b, args, config, out, console), args, "adapt-shift")


if __name__ == "__main__":
    main()
