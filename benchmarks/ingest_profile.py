"""Where ingest's time goes: the work of the Dask workers, profiled in-process, and the fixed start-up apart.

Per-file path. ``run_ingest`` hands the header pass (``scan_files``, one task per ``ingest.files_per_task``
files) and the conversion (``convert_stack`` per stack, ``convert_images`` per batch of images) to Dask workers,
where a profiler in the client cannot see them. Here the same functions run one after another in this
process, on the archive corpus of ``make_corpus.py`` (GE EPI classic slices and the tilted GE head CT, stacked
raw as in ``ingest_bench.py --corpus archive``), with the client's steps between them (``walk``, planning
with ``_plan_work``, the manifest with ``_merge`` and ``write_manifest``). Each phase is timed without the
profiler (best of ``--repeat``, page cache warm), then profiled once with pyinstrument: the top functions by
own time are printed, and each phase's profile is written to ``benchmarks/work/profile/<phase>.html`` and
``.txt``.

Start-up. ``run_ingest`` on one series (the 28-file CT of the corpus's first copy), each run in a fresh
interpreter, with 1 and 2 local workers, timed by phase: the functions ``run_ingest`` calls are wrapped so
that each boundary is a lap of one clock, and the phases add up to the run's wall time. "worker imports" is
the first use of the header backend on every worker (``get_backend``, which imports it), run once on all
workers as the cluster comes up. Python's own start and the stage's imports are timed apart, in fresh
interpreters (``python -c pass``, ``import pipeline.ingest.run``). The same phased run then covers the whole
corpus on real Dask workers, which is where the per-file figures above must show.

pyinstrument hooks every Python call, so functions that make many small calls (a generator over six floats)
look costlier under it than they are: the phase times come from the runs without it.

    .venv/bin/python benchmarks/ingest_profile.py [--copies 15] [--repeat 3] [--compress]
        [--backend auto|dicomsdl|pydicom] [--write-results]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from pyinstrument import Profiler

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
PROFILES = WORK / "profile"
sys.path.insert(0, str(HERE))
from make_corpus import ARCHIVE, build  # noqa: E402
from results import write_section  # noqa: E402

from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data.manifest import write_manifest  # noqa: E402
from pipeline.ingest import run  # noqa: E402
from pipeline.ingest.backends import get_backend, resolve  # noqa: E402
from pipeline.ingest.convert import convert_images, convert_stack  # noqa: E402
from pipeline.ingest.scan import scan_files, walk  # noqa: E402
from pipeline.pseudonym import pseudonym  # noqa: E402

KEY = b"bench"
PER_FILE = ("header pass", "conversion")  # the phases that run on the workers, once per file or stack


def config(sources: list[Path], out: Path, compress: bool, backend: str, workers: int = 1) -> Config:
    """The archive benchmark's settings: the tilted, unevenly spaced CT is stacked raw, as dcm2niix writes it."""
    return load_config(
        None,
        {
            "ingest.sources": [str(s) for s in sources],
            "ingest.out": str(out),
            "ingest.compress": compress,
            "ingest.tilt": "raw",
            "ingest.nonuniform_spacing": "raw",
            "ingest.header_backend": backend,
            "ingest.pseudonym_key": KEY.decode(),
            "dask.workers": workers,
            "tracking.enabled": False,
        },
    )


def phases(cfg: Config) -> Iterator[tuple[str, Callable[[], Any]]]:
    """The per-file path of ``run_ingest`` as a sequence of phases, each a thunk run in this process.

    A generator, so each phase's input is the previous one's output, as in ``run_ingest``.
    """
    ing = cfg.ingest
    out = Path(ing.out)
    backend = resolve(ing.header_backend)
    exts = tuple(e.lower() for e in ing.image_extensions)
    files: list[str] = []
    records: list[Any] = []
    work: list[Any] = []
    rows: dict[str, dict[str, Any]] = {}

    def do_walk() -> None:
        files[:] = walk(ing.sources, out)

    def header_pass() -> None:
        n = ing.files_per_task
        records[:] = [r for i in range(0, len(files), n) for r in scan_files(files[i : i + n], KEY, exts, backend)]

    def planning() -> None:
        work[:] = [run._plan_work(records, ing, KEY, {}, {}, out)]

    def conversion() -> None:
        planned = work[0]
        rows.clear()
        rows.update(planned.rows)
        for plan, digest in planned.stacks:
            for row in convert_stack(plan, str(out), ing.compress, ing.site, digest):
                rows[row["series_key"]] = row
        for i in range(0, len(planned.images), run.IMAGES_PER_TASK):
            part = planned.images[i : i + run.IMAGES_PER_TASK]
            rows.update((row["series_key"], row) for row in convert_images(part, str(out), ing.compress))

    def manifest() -> None:
        merged = run._merge({}, rows, {pseudonym(KEY, p) for p in files})
        write_manifest(merged.values(), out / "manifest.parquet")

    yield "walk", do_walk
    yield "header pass", header_pass
    yield "planning", planning
    yield "conversion", conversion
    yield "manifest", manifest


def fresh_out(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    (out / "volumes").mkdir(parents=True)


def time_phases(cfg: Config, repeat: int) -> dict[str, float]:
    """Best wall time of each phase over ``repeat`` passes, no profiler attached."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        fresh_out(Path(cfg.ingest.out))
        for name, thunk in phases(cfg):
            start = time.perf_counter()
            thunk()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    return best


def own_time(profiler: Profiler, top: int) -> list[tuple[str, float]]:
    """The functions where the samples landed (own time, children excluded), largest first."""
    session = profiler.last_session
    totals: Counter[str] = Counter()
    for stack, seconds in session.frame_records:
        function, path, line = stack[-1].split("\x01")[0].split("\x00")[:3]
        where = session.shorten_path(path) if path and not path.startswith("<") else path
        totals[f"{function} ({where}:{line})" if line and line != "0" else f"{function} ({where})"] += seconds
    return totals.most_common(top)


def profile_phases(cfg: Config, top: int) -> dict[str, tuple[float, list[tuple[str, float]]]]:
    """Each phase once under pyinstrument: (profiled seconds, top own-time functions); HTML and text written."""
    PROFILES.mkdir(parents=True, exist_ok=True)
    fresh_out(Path(cfg.ingest.out))
    found = {}
    for name, thunk in phases(cfg):
        profiler = Profiler(interval=0.0005)
        with profiler:
            thunk()
        stem = PROFILES / name.replace(" ", "-")
        stem.with_suffix(".html").write_text(profiler.output_html())
        stem.with_suffix(".txt").write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        found[name] = (profiler.last_session.duration, own_time(profiler, top))
    return found


# --- start-up: run_ingest on one series, in a fresh interpreter, timed by phase --------------------------------


class Laps:
    """One clock; each ``lap`` books the time since the last one to a phase, so the phases add up to the run."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


def _load_backend(name: str) -> None:
    get_backend(name)


@contextlib.contextmanager
def lapped(laps: Laps, backend: str) -> Iterator[None]:
    """Wrap the functions ``run_ingest`` looks up in its module so that each marks the end of a phase."""
    names = ("dask_client", "scan", "_plan_work", "_gather", "write_manifest")
    originals = {name: getattr(run, name) for name in names}

    @contextlib.contextmanager
    def dask_client(cfg: Any) -> Iterator[Any]:
        laps.lap("set-up (key, journal, backend)")
        with originals["dask_client"](cfg) as client:
            laps.lap("cluster start")
            client.run(_load_backend, backend)
            laps.lap("worker imports")
            yield client
            laps.lap("journal compact, progress")
        laps.lap("cluster stop")

    def scan(*args: Any) -> Iterator[Any]:
        laps.lap("walk")
        yield from originals["scan"](*args)
        laps.lap("header pass")

    def then(original: str, phase: str) -> Any:
        """``original``, and a lap named ``phase`` when it returns."""

        def timed(*args: Any) -> Any:
            found = originals[original](*args)
            laps.lap(phase)
            return found

        return timed

    def gather(*args: Any) -> Iterator[Any]:
        yield from originals["_gather"](*args)
        laps.lap("conversion")

    plan_work, manifest = then("_plan_work", "planning"), then("write_manifest", "manifest write")
    for name, fn in zip(names, (dask_client, scan, plan_work, gather, manifest), strict=True):
        setattr(run, name, fn)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(run, name, fn)


def run_child(source: Path, out: Path, workers: int, backend: str, compress: bool) -> None:
    """One timed ``run_ingest`` in this (fresh) interpreter; prints its phases as JSON."""
    from rich.console import Console

    cfg = config([source], out, compress, backend, workers)
    fresh_out(out)
    laps = Laps()
    with lapped(laps, resolve(backend)):
        result = run.run_ingest(cfg, Console(file=io.StringIO()))
    laps.lap("after the cluster")
    print(json.dumps({"phases": laps.phases, "files": result.n_files, "accepted": result.accepted}))


Phased = dict[int, dict[str, float]]  # workers -> phase -> median seconds


def measure_runs(source: Path, repeat: int, args: argparse.Namespace) -> tuple[Phased, int]:
    """``run_ingest`` on ``source`` with 1 and 2 local workers, each run in a fresh interpreter: median phases."""
    per_workers: Phased = {}
    n_files = 0
    for workers in (1, 2):
        runs = []
        for _ in range(repeat):
            cmd = [sys.executable, __file__, "--run-child", str(source), "--workers", str(workers)]
            cmd += ["--backend", args.backend, *(["--compress"] if args.compress else [])]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        n_files = runs[0]["files"]
        per_workers[workers] = {k: statistics.median(r["phases"][k] for r in runs) for k in runs[0]["phases"]}
        per_workers[workers]["run_ingest total"] = statistics.median(sum(r["phases"].values()) for r in runs)
    return per_workers, n_files


def fresh_python(code: str, repeat: int) -> float:
    """Median wall seconds of ``python -c code``, each in a fresh interpreter."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- report ----------------------------------------------------------------------------------------------------


def render(
    corpus: Path,
    n_files: int,
    args: argparse.Namespace,
    timed: dict[str, float],
    profiled: dict[str, tuple[float, list[tuple[str, float]]]],
    startup: tuple[Phased, int],
    whole: Phased,
    python: dict[str, float],
) -> str:
    size_mb = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 2**20
    backend = resolve(args.backend)
    lines = [
        f"Corpus: {n_files} real DICOM files, {size_mb:.0f} MB ({args.copies} copies of {', '.join(ARCHIVE)}; "
        f"`make_corpus.py --corpus archive`). Header backend: {backend}. Output: "
        f"{'.nii.gz' if args.compress else '.nii'}. Machine: {psutil.cpu_count()} cores, Python "
        f"{platform.python_version()}. One process, no Dask: best of {args.repeat} passes, page cache warm.",
        "",
        "| phase | runs on | s | ms/file |",
        "|---|---|---|---|",
    ]
    for name, seconds in timed.items():
        where = "workers" if name in PER_FILE else "client"
        lines.append(f"| {name} | {where} | {seconds:.3f} | {seconds / n_files * 1000:.3f} |")
    for label, seconds in (
        ("workers' share (header pass + conversion)", sum(timed[p] for p in PER_FILE)),
        ("all phases", sum(timed.values())),
    ):
        lines.append(f"| **{label}** | | {seconds:.3f} | {seconds / n_files * 1000:.3f} |")
    lines.append("")
    for name in PER_FILE:
        duration, top = profiled[name]
        lines += [
            f"Top functions by own time, {name} (pyinstrument, {duration:.2f} s profiled; "
            f"`benchmarks/work/profile/{name.replace(' ', '-')}.html`):",
            "",
            "| function | own s | share |",
            "|---|---|---|",
            *(f"| `{fn}` | {s:.3f} | {s / duration:.0%} |" for fn, s in top),
            "",
        ]
    output = ".nii.gz" if args.compress else ".nii"
    lines += [
        f"Start-up: `run_ingest` on one series ({startup[1]} files), each run in a fresh interpreter, median of "
        f"{args.repeat}, seconds by phase ({output}, tracking off):",
        "",
        *_phase_table(startup[0]),
        "",
        f"Before `run_ingest`, in a fresh interpreter: Python's own start {python['python start']:.3f} s, "
        f"`import pipeline.ingest.run` {python['import pipeline.ingest.run']:.3f} s more.",
        "",
        f"The whole corpus through `run_ingest` (real Dask workers, same phases, median of {args.repeat}):",
        "",
        *_phase_table(whole),
        "| files/s (run_ingest total) | "
        + " | ".join(f"{n_files / whole[w]['run_ingest total']:.0f}" for w in (1, 2))
        + " |",
    ]
    return "\n".join(lines)


def _phase_table(phased: Phased) -> list[str]:
    lines = ["| phase | 1 worker | 2 workers |", "|---|---|---|"]
    return lines + [f"| {name} | {phased[1][name]:.3f} | {phased[2][name]:.3f} |" for name in phased[1]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=15, help="copies of the archive series (178 files a copy)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes (best counts); start-up runs (median)")
    ap.add_argument("--compress", action="store_true", help="write .nii.gz (default .nii)")
    ap.add_argument("--backend", choices=["auto", "dicomsdl", "pydicom"], default="auto", help="ingest.header_backend")
    ap.add_argument("--top", type=int, default=12, help="functions listed per phase")
    ap.add_argument("--write-results", action="store_true", help="replace the ingest-profile section of RESULTS.md")
    ap.add_argument("--run-child", type=Path, help=argparse.SUPPRESS)  # one phased run_ingest of this folder
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_child:
        run_child(args.run_child, WORK / "out" / f"run-{args.workers}", args.workers, args.backend, args.compress)
        return

    corpus = WORK / f"corpus-archive-x{args.copies}"  # the same folder ingest_bench.py --corpus archive builds
    if not corpus.exists():
        build(corpus, args.copies, series=ARCHIVE)
    files = [p for p in corpus.rglob("*") if p.is_file()]
    for p in files:  # warm the page cache: the profile is of the code, not of the disk
        p.read_bytes()
    cfg = config([corpus], WORK / "out" / "profile", args.compress, args.backend)
    timed = time_phases(cfg, args.repeat)
    profiled = profile_phases(cfg, args.top)
    startup = measure_runs(corpus / "copy000" / "s01", args.repeat, args)  # the 28-file CT: one series
    whole, _ = measure_runs(corpus, args.repeat, args)
    python = {
        "python start": fresh_python("pass", args.repeat),
        "import pipeline.ingest.run": fresh_python("import pipeline.ingest.run", args.repeat),
    }
    python["import pipeline.ingest.run"] -= python["python start"]
    report = render(corpus, len(files), args, timed, profiled, startup, whole, python)
    print(report)
    if args.write_results:
        write_section(HERE / "RESULTS.md", "ingest-profile", report)


if __name__ == "__main__":
    main()
