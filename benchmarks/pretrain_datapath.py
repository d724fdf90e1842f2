"""Images/s of the pretraining data path against a plain MONAI ``Dataset`` + ``DataLoader``.

Same model, same images, same view recipe, same training step, same run. The project's path caches the
deterministic part (read, scale, resize) in a ``CacheDataset`` and makes the two views of a whole batch at
once in ``ThreadDataLoader``'s thread on the training device; the baseline redoes the whole chain for every
image of every epoch in ``DataLoader`` worker processes, the views one image at a time. A third column
times the training step alone on batches already in memory: no data path can beat it. Data: ingested
folders of real images (BUSI breast ultrasound, 256x256, by default), or DICOM series whose volumes are
sliced as the 2D pretrain stage does.

    .venv/bin/python benchmarks/pretrain_datapath.py --write-results
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset, ThreadDataLoader
from monai.transforms import Compose, Randomizable
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results import RESULTS, SHARED, write_section  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data.augment import RandViewd, views  # noqa: E402
from pipeline.data.items import items  # noqa: E402
from pipeline.data.manifest import read_manifest  # noqa: E402
from pipeline.data.transforms import INDEX, KEY, deterministic  # noqa: E402
from pipeline.device import resolve  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain.loop import seed_epoch, train_epoch  # noqa: E402
from pipeline.pretrain.model import build_model  # noqa: E402
from pipeline.pretrain.views import VIEWS, ViewPairs, dataset  # noqa: E402

MODELS = {
    "tiny ResNet (16-128, 1 block/stage)": {"widths": [16, 32, 64, 128], "layers": [1, 1, 1, 1]},
    "ResNet-18, half width": {"widths": [32, 64, 128, 256], "layers": [2, 2, 2, 2]},
}


class ItemViewsd(Randomizable):
    """The baseline's views: the project's recipe applied to one image at a time, as a per-item transform."""

    def __init__(self, view: RandViewd) -> None:
        self.view = view

    def set_random_state(self, seed=None, state=None) -> ItemViewsd:
        self.view.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        """The randomness lives in ``view``."""

    def __call__(self, data):
        image = torch.as_tensor(data[KEY])[None]
        return {INDEX: data[INDEX]} | {name: self.view.view(image)[0] for name in VIEWS}


def model_only(make_model, setup, size: int, batch: int, steps: int = 10) -> float:
    """Images/s of the training step alone, on one batch of views held on the device."""
    torch.manual_seed(0)
    model = make_model().to(setup.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    a, b = (torch.rand(batch, 1, size, size, device=setup.device) for _ in VIEWS)
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps
            began = time.perf_counter()
        with torch.autocast(device_type=setup.device.type, enabled=setup.amp):
            loss = model(a, b)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        model.after_step()
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    return steps * batch / (time.perf_counter() - began)


def timed_epochs(loader, make_model, cfg, setup, epochs: int, order: torch.Generator, transform) -> list[float]:
    """Images/s of each epoch of real training steps (forward, backward, optimiser) over ``loader``."""
    torch.manual_seed(0)
    model = make_model().to(setup.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.amp and setup.device.type == "cuda")
    rates = []
    for epoch in range(epochs):
        seed_epoch(0, epoch, order, transform)
        began = time.perf_counter()
        steps = len(train_epoch(model, loader, optimiser, scaler, setup))
        rates.append(steps * loader.batch_size / (time.perf_counter() - began))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, nargs="+", default=[SHARED / "busi"])
    ap.add_argument("--slices-per-volume", type=int, default=8, help="2D slices taken from each volume")
    ap.add_argument("--section", default="pretrain-datapath", help="RESULTS.md section to replace")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="baseline DataLoader worker processes")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on CUDA only)"
    )
    ap.add_argument("--work", type=Path, default=HERE / "work" / "datapath")
    ap.add_argument("--write-results", action="store_true", help="replace the pretrain-datapath section")
    args = ap.parse_args()
    console = Console(stderr=True)
    overrides = {
        "ingest.sources": [str(p) for p in args.source],
        "ingest.out": str(args.work),
        "tracking.enabled": False,
    }
    manifest = run_ingest(load_config(None, overrides), console).manifest
    setup = resolve(args.device, args.amp)
    rows = items(read_manifest(manifest), manifest.parent, 2, args.slices_per_volume)
    volumes = sum(1 for r in rows if r["slice"] is not None)
    what = " + ".join(p.name for p in args.source)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, device {setup.device}, "
        f"AMP {setup.amp}. Data: {len(rows)} images of {what} ({volumes} of them slices of volumes), "
        f"views of {args.size}x{args.size}, batch {args.batch_size}, SimCLR, {args.epochs} epochs each; "
        "images/s is the median epoch.",
        "",
        "| model | plain Dataset + DataLoader "
        f"({args.workers} workers) | CacheDataset + ThreadDataLoader, batch views on {setup.device.type} "
        "| cache fill (s) | ratio | training step alone |",
        "|---|---|---|---|---|---|",
    ]
    for label, encoder in MODELS.items():
        cfg = load_config(
            None, {"pretrain.size": args.size, "pretrain.method": "simclr", "pretrain.encoder": encoder}
        ).pretrain
        began = time.perf_counter()
        view = views(2, args.size, "simclr", **cfg.views.model_dump())
        cached = dataset(rows, 2, args.size, setup.device, workers=2)
        fill = time.perf_counter() - began
        order = torch.Generator()
        pairs = ViewPairs(view)
        ours = ThreadDataLoader(
            cached, batch_size=args.batch_size, shuffle=True, generator=order, drop_last=True, collate_fn=pairs
        )
        ours_rates = timed_epochs(ours, lambda cfg=cfg: build_model(cfg), cfg, setup, args.epochs, order, pairs)

        chain = Compose([*deterministic(2, args.size).transforms, ItemViewsd(view)])
        plain = DataLoader(
            Dataset([dict(row) | {INDEX: i} for i, row in enumerate(rows)], chain),
            batch_size=args.batch_size,
            shuffle=True,
            generator=order,
            drop_last=True,
            num_workers=args.workers,
        )
        plain_rates = timed_epochs(plain, lambda cfg=cfg: build_model(cfg), cfg, setup, args.epochs, order, chain)
        a, b = statistics.median(plain_rates), statistics.median(ours_rates)
        bound = model_only(lambda cfg=cfg: build_model(cfg), setup, args.size, args.batch_size)
        lines.append(f"| {label} | {a:.0f} | {b:.0f} | {fill:.1f} | {b / a:.2f}x | {bound:.0f} |")
        console.print(lines[-1])
    report = "\n".join(lines)
    print(report)
    if args.write_results:
        write_section(RESULTS, args.section, report)


if __name__ == "__main__":
    main()
