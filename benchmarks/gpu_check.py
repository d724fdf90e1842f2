"""The GPU check: every figure the lent GPU machine is for, in one call, each printed as a RESULTS.md row.

Steps (each on its own, so one that fails leaves the others their figures):

1. ``pretrain-2d``: SimCLR on PneumoniaMNIST's train images with AMP, through ``run_pretrain``;
2. ``pretrain-3d``: SimCLR on the sample's DICOM volumes as 3D crops, with AMP;
3. ``torchrun``: the same 2D pretraining started by ``torch.distributed.run`` with one process (DDP on one GPU);
4. ``datapath``: ``pretrain_datapath.py``, the project's data path against a plain MONAI loader;
5. ``simclr-1024``: ``pretrain_knn.py``, SimCLR at batch 1,024 for 200 epochs, and its kNN AUROC;
6. ``semi``: ``finetune_curves.py`` on PneumoniaMNIST, semi against ssl-full and scratch at 16 shots and 1 %,
   from the ``simclr-1024`` encoder.

``--quick`` shrinks every step to a few epochs (the CPU dry run). Run through ``benchmarks/gpu_check.sh``,
which sets up the Python path on the GPU machine.

    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from medmnist import export  # noqa: E402
from results import SHARED  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402

NPZ = SHARED / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
VOLUMES = [ROOT / "data" / "sample" / "dcm_qa_enh", ROOT / "data" / "sample" / "dicom2nifti_testdata"]


def ingest(sources: list[Path], out: Path, console: Console) -> Path:
    overrides = {"ingest.sources": [str(s) for s in sources], "ingest.out": str(out), "tracking.enabled": False}
    return run_ingest(load_config(None, overrides), console).manifest


def pretrain_row(name: str, overrides: dict, console: Console) -> str:
    """Pretrain with the bench config and these overrides; the row: images/s, final loss, epochs, minutes."""
    began = time.perf_counter()
    cfg = load_config(ROOT / "configs" / "bench-pneumoniamnist.yaml", {"tracking.enabled": False, **overrides})
    result = run_pretrain(cfg, console)
    minutes = (time.perf_counter() - began) / 60
    p = cfg.pretrain
    return (
        f"| {name} | {p.method}, {p.spatial_dims}D {p.size}, batch {p.batch_size}, AMP {p.amp} | {result.epochs} "
        f"| {result.images_per_s:.0f} | {result.loss:.3f} | {minutes:.1f} |"
    )


def script(args: list[str], timeout: float) -> str:
    """Run a benchmark script; its printed report (stdout), or why it failed."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return proc.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="a few epochs per step: the CPU dry run")
    ap.add_argument("--out", type=Path, default=HERE / "work" / "gpu-check")
    ap.add_argument("--steps", default="pretrain-2d,pretrain-3d,torchrun,datapath,simclr-1024,semi")
    args = ap.parse_args()
    console = Console(stderr=True)
    out, quick, device = args.out.resolve(), args.quick, args.device
    amp = device == "cuda"
    epochs = 2 if quick else 20
    train = export(NPZ, out / "png", {"train": None})["train"]
    report: dict[str, str] = {}

    def step(name: str, run) -> None:
        if name not in args.steps.split(","):
            return
        began = time.perf_counter()
        try:
            report[name] = run()
        except Exception as exc:  # a failed step is reported, and the others still run
            traceback.print_exc()
            report[name] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        console.print(f"[bold]{name}[/] ({time.perf_counter() - began:.0f} s)\n{report[name]}")

    common = {"pretrain.device": device, "pretrain.amp": amp, "pretrain.method": "simclr", "pretrain.epochs": epochs}
    step(
        "pretrain-2d",
        lambda: pretrain_row(
            "2D",
            {
                **common,
                "pretrain.manifest": str(ingest([train], out / "ingest-2d", console)),
                "pretrain.out": str(out / "pretrain-2d"),
                "pretrain.batch_size": 512,
            },
            console,
        ),
    )
    step(
        "pretrain-3d",
        lambda: pretrain_row(
            "3D",
            {
                **common,
                "pretrain.manifest": str(ingest(VOLUMES, out / "ingest-3d", console)),
                "pretrain.out": str(out / "pretrain-3d"),
                "pretrain.spatial_dims": 3,
                "pretrain.size": 32 if quick else 64,
                "pretrain.volume_side": 64 if quick else 128,
                "pretrain.batch_size": 8,
                "pretrain.monitor.every": 0,
            },
            console,
        ),
    )

    def torchrun() -> str:
        manifest = ingest([train], out / "ingest-2d", console)
        cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "pipeline.cli"]
        cmd += ["pretrain", "--manifest", str(manifest), "--out", str(out / "torchrun"), "--method", "simclr"]
        cmd += ["--device", device, "--config", str(ROOT / "configs" / "bench-pneumoniamnist.yaml"), "--no-tracking"]
        cmd += ["--epochs", str(epochs)]
        script(cmd, 900)
        result = json.loads((out / "torchrun" / "pretrain.json").read_text())
        row = (result["epochs"], result["images_per_s"], result["loss"])
        return "| torchrun, 1 process | simclr, 2D 28 | {} | {:.0f} | {:.3f} | - |".format(*row)

    step("torchrun", torchrun)
    step(
        "datapath",
        lambda: script(
            [
                "benchmarks/pretrain_datapath.py",
                "--device",
                device,
                "--epochs",
                "1" if quick else "3",
                "--batch-size",
                "64" if quick else "256",
                "--work",
                str(out / "datapath"),
            ],
            900,
        ),
    )
    knn = [
        "benchmarks/pretrain_knn.py",
        "--methods",
        "simclr",
        "--epochs",
        "2" if quick else "200",
        "--work",
        str(out / "knn"),
        "--set",
        f"pretrain.device={device}",
        "--set",
        f"pretrain.amp={str(amp).lower()}",
        "--set",
        f"pretrain.batch_size={64 if quick else 1024}",
        "--set",
        "tracking.enabled=false",
    ]
    step("simclr-1024", lambda: script(knn, 1800))
    encoders = sorted((out / "knn" / "pretrain").glob("simclr*/encoder.pt"))
    semi = [
        "benchmarks/finetune_curves.py",
        "--dataset",
        "pneumoniamnist",
        "--arms",
        "ssl-full,semi,scratch-full",
        "--budgets",
        "16shot,1%",
        "--seeds",
        "1" if quick else "3",
        "--work",
        str(out / "curves"),
        "--set",
        f"finetune.device={device}",
    ]
    if quick:
        semi += ["--set", "finetune.epochs=1"]
    step("semi", lambda: script([*semi, "--encoder", f"simclr1024={encoders[-1]}"], 1800))

    lines = [
        f"GPU check: torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" and torch.cuda.is_available() else "")
        + f", {os.cpu_count()} CPU cores"
        + (", quick (dry run)" if quick else ""),
        "",
        "| step | setting | epochs | images/s | final loss | minutes |",
        "|---|---|---|---|---|---|",
    ]
    lines += [v for k, v in report.items() if k.startswith(("pretrain", "torchrun")) and v.startswith("|")]
    lines += [f"\n{k}:\n\n{v}" for k, v in report.items() if not v.startswith("| ")]
    text = "\n".join(lines)
    (out / "gpu-check.md").write_text(text + "\n")
    print(text)
    sys.exit(1 if any(v.startswith("failed") for v in report.values()) else 0)


if __name__ == "__main__":
    main()
