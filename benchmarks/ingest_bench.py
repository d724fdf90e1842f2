"""Ingest throughput: medssl (1 and 2 Dask workers) against dcm2niix and dicom2nifti on one corpus, one run.

Every tool converts the same real-data corpus (``make_corpus.py``) from a warm page cache into a fresh folder,
three times; the median wall time counts. medssl runs through its CLI (``--no-tracking``), so start-up, the
Dask cluster and the manifest are all inside its time, as dcm2niix's start-up is inside its own. Peak resident
memory is sampled for every process of each tool; for medssl, per Dask worker. Voxels are compared after
canonical reorientation: every dcm2niix volume must have an equal medssl volume.

    .venv/bin/python benchmarks/ingest_bench.py [--copies 8] [--repeat 3] [--write-results]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = ROOT / ".venv" / "bin"
WORK = HERE / "work"
sys.path.insert(0, str(HERE))
from make_corpus import ANATOMICAL, SERIES, build  # noqa: E402
from results import write_section  # noqa: E402


@dataclass
class Run:
    tool: str
    compress: bool
    seconds: list[float] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)
    outputs: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _sample_tree(proc: psutil.Process, stop: threading.Event, peaks: dict[int, tuple[str, int]]) -> None:
    while not stop.is_set():
        try:
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                rss = p.memory_info().rss
                role = "main" if p.pid == proc.pid else f"child {p.pid}"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if rss > peaks.get(p.pid, ("", 0))[1]:
                peaks[p.pid] = (role, rss)
        time.sleep(0.02)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, dict[int, tuple[str, int]]]:
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    sampler = threading.Thread(target=_sample_tree, args=(psutil.Process(proc.pid), stop, peaks))
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return seconds, peaks


def commands(tool: str, corpus: Path, out: Path, compress: bool) -> list[str]:
    if tool == "dcm2niix":
        return [
            str(BIN / "dcm2niix"),
            "-b",
            "n",
            "-z",
            "y" if compress else "n",
            "-f",
            "%j",
            "-o",
            str(out),
            str(corpus),
        ]
    if tool == "dicom2nifti":
        code = (
            "import sys, dicom2nifti; "
            "dicom2nifti.convert_directory(sys.argv[1], sys.argv[2], compression=sys.argv[3] == '1')"
        )
        return [str(BIN / "python"), "-c", code, str(corpus), str(out), "1" if compress else "0"]
    workers = tool.rsplit("-", 1)[-1]
    return [
        str(BIN / "medssl"),
        "ingest",
        str(corpus),
        "--out",
        str(out),
        "--workers",
        workers,
        "--no-tracking",
        "--compress" if compress else "--no-compress",
    ]


def canonical_digest(path: Path) -> str:
    img = nib.as_closest_canonical(nib.load(path))
    data = img.get_fdata(dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return hashlib.sha256(f"{data.shape}".encode() + np.ascontiguousarray(data).tobytes()).hexdigest()


def voxel_agreement(ours: Path, theirs: Path) -> tuple[int, int]:
    """(dcm2niix volumes with an equal medssl volume, dcm2niix volumes)."""
    mine = Counter(canonical_digest(p) for p in (ours / "volumes").glob("*.nii*") if not p.name.startswith("."))
    ref = Counter(canonical_digest(p) for p in theirs.glob("*.nii*"))
    return sum(min(n, mine[d]) for d, n in ref.items()), sum(ref.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="copies of each real series in the corpus")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="dcm2niix,dicom2nifti,medssl-1,medssl-2")
    ap.add_argument(
        "--scaling", default="2,8,16", help="corpus sizes (copies) for the memory-scaling table ('' for none)"
    )
    ap.add_argument("--anatomical", action="store_true", help="corpus of the 256x256 series only (no EPI, mosaics)")
    ap.add_argument("--write-results", action="store_true", help="replace the ingest section of RESULTS.md")
    args = ap.parse_args()

    series = ANATOMICAL if args.anatomical else SERIES
    corpus = WORK / f"corpus-{'anat-' if args.anatomical else ''}x{args.copies}"
    if not corpus.exists():
        build(corpus, args.copies, series=series)
    files = [p for p in corpus.rglob("*") if p.is_file()]
    n_files, n_series = len(files), args.copies * len(series)
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    for p in files:  # warm the page cache so no tool pays the first read
        p.read_bytes()
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": "bench"}

    runs: list[Run] = []
    for compress in (False, True):
        for tool in args.tools.split(","):
            run = Run(tool, compress)
            for _ in range(1 if tool == "dicom2nifti" else args.repeat):  # ~90 s a run: once is enough
                out = WORK / "out" / f"{tool}-{int(compress)}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                seconds, peaks = timed(commands(tool, corpus, out, compress), env)
                run.seconds.append(seconds)
                for role, rss in peaks.values():
                    run.peak_rss[role] = max(run.peak_rss.get(role, 0), rss)
            runs.append(run)
            print(
                f"{tool:12s} {'gz ' if compress else 'nii'} {run.median:7.2f} s  {n_files / run.median:8.0f} files/s",
                flush=True,
            )

    agree = voxel_agreement(WORK / "out" / "medssl-2-0", WORK / "out" / "dcm2niix-0")
    report = render(runs, n_files, n_series, size_mb, args, agree, series)
    if args.scaling:
        report += "\n\n" + memory_scaling(args, env)
    print(report)
    if args.write_results:
        write_section(HERE / "RESULTS.md", "ingest-anatomical" if args.anatomical else "ingest", report)


def _worker_peak(run: Run) -> str:
    workers = [rss for role, rss in run.peak_rss.items() if role != "main"]
    if run.tool.startswith("medssl") and workers:
        return f"{max(workers) / 2**20:.0f} (worker), {max(run.peak_rss.values()) / 2**20:.0f} (client)"
    return f"{max(run.peak_rss.values()) / 2**20:.0f}"


def render(
    runs: list[Run], n_files: int, n_series: int, size_mb: float, args, agree: tuple[int, int], series: list[str]
) -> str:
    base = {r.compress: r.median for r in runs if r.tool == "dcm2niix"}
    lines = [
        f"Corpus: {n_files} real DICOM files, {n_series} series, {size_mb:.0f} MB ({args.copies} copies of "
        f"{len(series)} series from ../shared/data with fresh UIDs; see `make_corpus.py`). Machine: "
        f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
        f"{platform.python_version()}. Median of {args.repeat} runs, warm page cache.",
        "",
        "| tool | output | wall s | files/s | series/s | files/s vs dcm2niix | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        ratio = base[r.compress] / r.median if r.compress in base else float("nan")
        lines.append(
            f"| {r.tool} | {'.nii.gz' if r.compress else '.nii'} | {r.median:.2f} | {n_files / r.median:.0f} | "
            f"{n_series / r.median:.1f} | {ratio:.2f}x | {_worker_peak(r)} |"
        )
    lines += [
        "",
        f"Voxels: {agree[0]} of {agree[1]} dcm2niix volumes have a voxel-equal medssl volume (.nii run, "
        "2 workers, after canonical reorientation).",
    ]
    return "\n".join(lines)


def memory_scaling(args, env: dict[str, str]) -> str:
    """Peak memory of medssl (2 workers) as the archive grows: workers must stay flat, set by the largest series."""
    lines = [
        "Memory as the archive grows (medssl, 2 workers, .nii): a worker holds one series at a time.",
        "",
        "| copies | files | wall s | files/s | peak RSS per worker MiB | peak RSS client MiB |",
        "|---|---|---|---|---|---|",
    ]
    for copies in (int(c) for c in args.scaling.split(",")):
        corpus = WORK / f"corpus-x{copies}"
        if not corpus.exists():
            build(corpus, copies)
        n = sum(1 for p in corpus.rglob("*") if p.is_file())
        out = WORK / "out" / f"scaling-{copies}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, peaks = timed(commands("medssl-2", corpus, out, False), env)
        client = max(rss for role, rss in peaks.values() if role == "main")
        workers = [rss for role, rss in peaks.values() if role != "main"]
        lines.append(
            f"| {copies} | {n} | {seconds:.2f} | {n / seconds:.0f} | {max(workers) / 2**20:.0f} | "
            f"{client / 2**20:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
