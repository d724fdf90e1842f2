"""Per-file cost of reading DICOM, series by series: dcm2niix's whole conversion, a plain pydicom loop, and
medssl's discovery read. Explains where ingest time goes (see RESULTS.md).

    .venv/bin/python benchmarks/header_cost.py [--copies 8]

Uses the corpus of ``make_corpus.py`` (built if missing). dcm2niix's figure is the wall time of converting
the copies of one series alone, divided by their files (so it includes its start-up, a few milliseconds).
If dicomsdl or GDCM (python-gdcm) is importable (neither is in the lock), their header reads are timed too:
dicomsdl's ``open``, and GDCM's ``Scanner`` over 20 tags, the tool ITK uses for series discovery.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_corpus import SERIES, build  # noqa: E402

from pipeline.ingest.headers import read_header  # noqa: E402

DCM2NIIX = HERE.parent / ".venv" / "bin" / "dcm2niix"


def per_file_ms(fn, files: list[Path], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for p in files:
            fn(p)
        best = min(best, time.perf_counter() - start)
    return best / len(files) * 1000


def dcm2niix_ms(files: list[Path]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        out.mkdir()
        for i, p in enumerate(files):
            dst = src / p.parent.parent.name / p.parent.name
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / f"{i:05d}_{p.name}")
        start = time.perf_counter()
        subprocess.run(
            [str(DCM2NIIX), "-b", "n", "-z", "n", "-f", "%j", "-o", str(out), str(src)], check=True, capture_output=True
        )
        return (time.perf_counter() - start) / len(files) * 1000


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


GDCM_TAGS = [
    (0x0020, 0x000E),
    (0x0020, 0x0032),
    (0x0020, 0x0037),
    (0x0028, 0x0030),
    (0x0028, 0x0010),
    (0x0028, 0x0011),
    (0x0008, 0x0060),
    (0x0020, 0x0013),
    (0x0008, 0x0018),
    (0x0020, 0x0011),
    (0x0018, 0x0050),
    (0x0028, 0x0100),
    (0x0028, 0x0101),
    (0x0028, 0x0103),
    (0x0028, 0x1052),
    (0x0028, 0x1053),
    (0x0008, 0x0008),
    (0x0010, 0x0020),
    (0x0010, 0x0010),
    (0x0008, 0x0070),
]


def gdcm_scan_ms(gdcm, files: list[Path]) -> float:
    scanner = gdcm.Scanner()
    for tag in GDCM_TAGS:
        scanner.AddTag(gdcm.Tag(*tag))
    start = time.perf_counter()
    scanner.Scan([str(p) for p in files])
    for p in files:
        [scanner.GetValue(str(p), gdcm.Tag(*t)) for t in GDCM_TAGS]
    return (time.perf_counter() - start) / len(files) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8)
    args = ap.parse_args()
    corpus = HERE / "work" / f"corpus-x{args.copies}"
    if not corpus.exists():
        build(corpus, args.copies)
    optional = {name: _optional(name) for name in ("dicomsdl", "gdcm")}
    extra = [name for name, mod in optional.items() if mod is not None]
    print(
        "| series | files | elements | dcm2niix ms/file | pydicom dcmread+pixel_array ms/file | "
        "medssl read_header ms/file |" + "".join(f" {n} ms/file |" for n in extra)
    )
    print("|---|---|---|---|---|---|" + "---|" * len(extra))
    for s, rel in enumerate(SERIES):
        files = sorted(corpus.glob(f"copy*/s{s:02d}/*"))
        files = [p for p in files if p.is_file()]
        elements = len(pydicom.dcmread(files[0], stop_before_pixels=True))
        row = [
            rel,
            str(len(files)),
            str(elements),
            f"{dcm2niix_ms(files):.2f}",
            f"{per_file_ms(lambda p: pydicom.dcmread(p).pixel_array, files):.2f}",
            f"{per_file_ms(lambda p: read_header(str(p), b'k'), files):.2f}",
        ]
        if optional["dicomsdl"]:
            row.append(f"{per_file_ms(lambda p: optional['dicomsdl'].open(str(p)), files):.3f}")
        if optional["gdcm"]:
            row.append(f"{gdcm_scan_ms(optional['gdcm'], files):.3f}")
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
