"""Ingest throughput: medssl (1 and 2 Dask workers) against dcm2niix and dicom2nifti on one corpus, one run.

``medssl-cluster-N`` runs medssl against a real multi-process cluster started apart (``dask scheduler``, then N
``dask worker`` processes given ``tcp://...``), as an archive deployment would; the cluster's start is not in
its time. ``dcm2niix`` compresses with its internal zlib (``-z i``), ``dcm2niix-pigz`` through pigz (``-z y``); without
pigz installed that row is left out and the report says so.

Every tool converts the same real-data corpus (``make_corpus.py``) from a warm page cache into a fresh folder,
three times; the median wall time counts. medssl runs through its CLI (``--no-tracking``), so start-up, the
Dask cluster and the manifest are all inside its time, as dcm2niix's start-up is inside its own. Peak resident
memory is sampled for every process of each tool; for medssl, per Dask worker. Voxels are compared after
canonical reorientation: every dcm2niix volume must have an equal medssl volume.

    .venv/bin/python benchmarks/ingest_bench.py [--corpus mixed|anatomical|archive] [--copies 8] [--repeat 3]
        [--tools dcm2niix,dcm2niix-pigz,medssl-1,medssl-2,medssl-cluster-1,medssl-cluster-2] [--write-results]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
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
from make_corpus import CORPORA, build  # noqa: E402
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


def timed(
    cmd: list[str], env: dict[str, str] | None = None, workers: list[subprocess.Popen] = ()
) -> tuple[float, dict[int, tuple[str, int]]]:
    """Wall time and peak RSS of ``cmd`` and its children ("main", "child <pid>"), and of ``workers``
    (processes started apart, reported as children: they are the medssl workers of a cluster run)."""
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samplers = [threading.Thread(target=_sample_tree, args=(psutil.Process(proc.pid), stop, peaks))]
    worker_peaks: dict[int, tuple[str, int]] = {}
    samplers += [
        threading.Thread(target=_sample_tree, args=(psutil.Process(w.pid), stop, worker_peaks)) for w in workers
    ]
    for sampler in samplers:
        sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    for sampler in samplers:
        sampler.join()
    peaks.update({pid: (f"child {pid}", rss) for pid, (_, rss) in worker_peaks.items()})
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return seconds, peaks


PIGZ = shutil.which("pigz")


def commands(tool: str, corpus: Path, out: Path, compress: bool, extra: list[str], scheduler: str = "") -> list[str]:
    if tool.startswith("dcm2niix"):
        return [
            str(BIN / "dcm2niix"),
            "-b",
            "n",
            "-z",
            # -z i: its internal zlib; -z y: through pigz (this dcm2niix finds pigz whatever PATH says, so the
            # two rows are told apart by the flag, not by PATH).
            ("y" if tool == "dcm2niix-pigz" else "i") if compress else "n",
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
    workers = ["--scheduler", scheduler] if scheduler else ["--workers", tool.rsplit("-", 1)[-1]]
    return [
        str(BIN / "medssl"),
        "ingest",
        str(corpus),
        "--out",
        str(out),
        *workers,
        "--no-tracking",
        "--compress" if compress else "--no-compress",
        *extra,
    ]


@contextlib.contextmanager
def dask_cluster(n_workers: int, env: dict[str, str], work: Path):
    """A scheduler and ``n_workers`` single-threaded worker processes, each started apart; yields the address
    and the worker processes (for their peak memory)."""
    work.mkdir(parents=True, exist_ok=True)
    scheduler_file = work / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [
        subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--scheduler-file", str(scheduler_file), "--no-dashboard"], **quiet
        )
    ]
    try:
        while not scheduler_file.exists():
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        workers = [
            subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"], **quiet
            )
            for _ in range(n_workers)
        ]
        procs += workers
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address, workers
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()


def canonical_digest(path: Path) -> str:
    img = nib.as_closest_canonical(nib.load(path))
    data = img.get_fdata(dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return hashlib.sha256(f"{data.shape}".encode() + np.ascontiguousarray(data).tobytes()).hexdigest()


def voxel_agreement(ours: Path, theirs: Path) -> tuple[int, int, int]:
    """(dcm2niix volumes with an equal medssl volume, dcm2niix volumes, dcm2niix's gantry-tilt-corrected extra
    copies): dcm2niix writes a ``_Tilt_`` volume beside a tilted CT's raw one, which medssl, run with ``tilt:
    raw``, does not write, so those are counted apart."""
    mine = Counter(canonical_digest(p) for p in (ours / "volumes").glob("*.nii*") if not p.name.startswith("."))
    tilted = [p for p in theirs.glob("*.nii*") if "_Tilt_" in p.name]
    ref = Counter(canonical_digest(p) for p in theirs.glob("*.nii*") if "_Tilt_" not in p.name)
    return sum(min(n, mine[d]) for d, n in ref.items()), sum(ref.values()), len(tilted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8, help="copies of each real series in the corpus")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="dcm2niix,dicom2nifti,medssl-1,medssl-2")
    ap.add_argument(
        "--scaling", default="2,8,16", help="corpus sizes (copies) for the memory-scaling table ('' for none)"
    )
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="mixed", help="which real series the copies are of")
    ap.add_argument("--write-results", action="store_true", help="replace this corpus's section of RESULTS.md")
    args = ap.parse_args()

    series = CORPORA[args.corpus]
    corpus = WORK / f"corpus-{'' if args.corpus == 'mixed' else args.corpus + '-'}x{args.copies}"
    # The archive corpus holds a tilted CT with uneven gaps: stacked as is, as dcm2niix's plain output is.
    extra = ["--tilt", "raw", "--nonuniform-spacing", "raw"] if args.corpus == "archive" else []
    tools = args.tools.split(",")
    if "dcm2niix-pigz" in tools and not PIGZ:
        tools.remove("dcm2niix-pigz")
        print("pigz is not on PATH: dcm2niix -z y uses its internal zlib; the dcm2niix-pigz rows are left out")
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
        for tool in tools:
            run = Run(tool, compress)
            with contextlib.ExitStack() as stack:
                address, workers = "", []
                if tool.startswith("medssl-cluster-"):
                    n = int(tool.rsplit("-", 1)[-1])
                    address, workers = stack.enter_context(dask_cluster(n, {**env, "PYTHONPATH": str(ROOT)}, WORK))
                for _ in range(1 if tool == "dicom2nifti" else args.repeat):  # ~90 s a run: once is enough
                    out = WORK / "out" / f"{tool}-{int(compress)}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir(parents=True)
                    cmd = commands(tool, corpus, out, compress, extra, address)
                    seconds, peaks = timed(cmd, env, workers)
                    run.seconds.append(seconds)
                    for role, rss in peaks.values():
                        run.peak_rss[role] = max(run.peak_rss.get(role, 0), rss)
            runs.append(run)
            print(
                f"{tool:12s} {'gz ' if compress else 'nii'} {run.median:7.2f} s  {n_files / run.median:8.0f} files/s",
                flush=True,
            )

    mine = next(f"{t}-0" for t in ("medssl-2", "medssl-cluster-2", *tools) if t in tools and t.startswith("medssl"))
    agree = voxel_agreement(WORK / "out" / mine, WORK / "out" / "dcm2niix-0")
    report = render(runs, n_files, n_series, size_mb, args, agree, series, mine)
    if not PIGZ:
        report += "\n\npigz is not installed on this machine: the dcm2niix-pigz rows are left out."
    if args.scaling:
        report += "\n\n" + memory_scaling(args, env, series, extra)
    print(report)
    if args.write_results:
        write_section(HERE / "RESULTS.md", "ingest" if args.corpus == "mixed" else f"ingest-{args.corpus}", report)


def _worker_peak(run: Run) -> str:
    workers = [rss for role, rss in run.peak_rss.items() if role != "main"]
    if run.tool.startswith("medssl") and workers:
        return f"{max(workers) / 2**20:.0f} (worker), {run.peak_rss['main'] / 2**20:.0f} (client)"
    return f"{max(run.peak_rss.values()) / 2**20:.0f}"


def render(
    runs: list[Run],
    n_files: int,
    n_series: int,
    size_mb: float,
    args,
    agree: tuple[int, int, int],
    series: list[str],
    mine: str,
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
        f"{mine.removesuffix('-0')}, after canonical reorientation)"
        + (
            f"; dcm2niix also wrote {agree[2]} gantry-tilt-corrected copies (`_Tilt_`), which medssl with "
            "`tilt: raw` does not write, so its runs wrote (and for `.nii.gz` compressed) more data."
            if agree[2]
            else "."
        ),
    ]
    return "\n".join(lines)


def memory_scaling(args, env: dict[str, str], series: list[str], extra: list[str]) -> str:
    """Peak memory of medssl (2 workers) as the archive grows: workers must stay flat, set by the largest series."""
    lines = [
        "Memory as the archive grows (medssl, 2 workers, .nii): a worker holds one series at a time.",
        "",
        "| copies | files | wall s | files/s | peak RSS per worker MiB | peak RSS client MiB |",
        "|---|---|---|---|---|---|",
    ]
    for copies in (int(c) for c in args.scaling.split(",")):
        corpus = WORK / f"corpus-{'' if args.corpus == 'mixed' else args.corpus + '-'}x{copies}"
        if not corpus.exists():
            build(corpus, copies, series=series)
        n = sum(1 for p in corpus.rglob("*") if p.is_file())
        out = WORK / "out" / f"scaling-{copies}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, peaks = timed(commands("medssl-2", corpus, out, False, extra), env)
        client = max(rss for role, rss in peaks.values() if role == "main")
        workers = [rss for role, rss in peaks.values() if role != "main"]
        lines.append(
            f"| {copies} | {n} | {seconds:.2f} | {n / seconds:.0f} | {max(workers) / 2**20:.0f} | "
            f"{client / 2**20:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
