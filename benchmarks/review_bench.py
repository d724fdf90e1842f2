"""The review page's speed, as a reader feels it: the real server (``medssl review``, a process of its own) on
loopback, driven over HTTP with httpx.

Data: real adult chest X-rays (``cxr_nih1000``, at the size the shared set holds them) through
``run_ingest``, and one CT volume of 512x512x300 int16 written the way ingest writes a CT series
(``write_nifti``: gzip, stored values with the rescale intercept in the header, the voxel digest in its
manifest row), a smooth body-and-lungs phantom with noise: no public CT of that size is bundled, and
building one from DICOM would only time the ingest.

Measured, each reader signed in first:
- preparing: after it starts, the server verifies and unpacks the worklist's scans (``review.unpacked``);
  the seconds from start until its pass is finished, with an empty unpacked folder;
- first image: the first PNG of the CT opened right after a server (re)start, the server's pass done (the
  volume mapped from the unpacked folder); the first PNG of the CT when its file was changed since that pass
  (touched, so the server reads and checks it again: the cold path); the first PNG of the CT when the page has
  prefetched it (as it does for the scan a decision opens next, while the reader reads the one before); the
  first PNG of chest X-rays never opened;
- slice step: the next slice of the open CT under the lung window, ``--steps`` steps one after another;
- decisions: ``--readers`` readers at once, each with its own session, deciding every scan of the "to label"
  worklist twice (the second time changing the call); afterwards the database must hold exactly
  readers x scans current decisions, each the second call, and twice that many rows in all.

    .venv/bin/python benchmarks/review_bench.py [--steps 100] [--readers 10] [--write-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results import RESULTS, SHARED, write_section  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data.manifest import read_rows, write_manifest  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.ingest.manifest_rows import base_row  # noqa: E402
from pipeline.ingest.nifti import write_nifti  # noqa: E402
from pipeline.pseudonym import pseudonym  # noqa: E402
from pipeline.review.store import open_database  # noqa: E402

KEY = "medssl-bench-review-key"
CT_SHAPE = (512, 512, 300)
TARGETS = {"first": 0.300, "step": 0.050}


def _cxr_source() -> Path:
    shared = SHARED / "cxr_nih1000"
    return shared if shared.is_dir() else ROOT / "data" / "sample" / "cxr_nih1000"


def _phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Stored CT values (HU + 1024) of a chest-like phantom: air, a soft-tissue body, two lungs, a spine,
    with 15 HU of noise so the gzip ratio is near a real scan's."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    plane = np.full(shape[:2], -1000.0)
    plane[(x / 0.9) ** 2 + (y / 0.65) ** 2 < 1] = 40.0
    for side in (-0.4, 0.4):
        plane[((x - side) / 0.3) ** 2 + (y / 0.45) ** 2 < 1] = -850.0
    plane[(x / 0.08) ** 2 + ((y + 0.45) / 0.08) ** 2 < 1] = 700.0
    volume = np.empty(shape, dtype=np.int16)
    for z in range(shape[2]):
        shrink = 1 - 0.3 * abs(z / shape[2] - 0.5)
        noise = rng.normal(0, 15, shape[:2])
        volume[..., z] = np.clip(plane * shrink + noise + 1024, 0, 4095).astype(np.int16)
    return volume


def prepare(work: Path, images: int, console: Console) -> tuple[Path, list[str], str, str]:
    """(manifest, the X-rays' series keys, the CT's series key, the X-rays' size); a finished folder is used
    again."""
    out = work / "out"
    manifest = out / "manifest.parquet"
    ct_key = pseudonym(KEY.encode(), "bench|ct")
    if not manifest.is_file():
        source = work / "source"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        root = _cxr_source()
        for name in pd.read_csv(root / "labels.csv").file.head(images):
            shutil.copyfile(root / name, source / Path(name).name)
        overrides = {
            "ingest.sources": [str(source)],
            "ingest.out": str(out),
            "ingest.pseudonym_key": KEY,
            "dask.workers": 2,
            "tracking.enabled": False,
        }
        with open(os.devnull, "w") as quiet:
            run_ingest(load_config(None, overrides), Console(file=quiet))
    rows = read_rows(manifest)
    if ct_key not in set(rows.series_key):
        console.print(f"writing the {'x'.join(map(str, CT_SHAPE))} CT volume")
        affine = np.diag([0.7, 0.7, 1.0, 1.0])
        fields = {"output_path": f"volumes/{ct_key}.nii.gz", "shape": list(CT_SHAPE), "dtype": "int16"}
        digest = write_nifti(out / fields["output_path"], _phantom(CT_SHAPE), affine, 1.0, -1024.0)
        ct = base_row(ct_key, kind="dicom", modality="CT", n_instances=CT_SHAPE[2], voxel_sha256=digest, **fields)
        ct["spacing"] = [0.7, 0.7, 1.0]
        write_manifest([*rows.to_dict("records"), ct], manifest)
        rows = read_rows(manifest)
    accepted = rows[rows.status == "accepted"]
    films = accepted[accepted.modality != "CT"]
    return manifest, sorted(films.series_key), ct_key, "x".join(str(n) for n in films["shape"].iloc[0][:2])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``medssl review`` in its own process, so the clients' threads and the server share no GIL."""

    def __init__(self, config: Path, port: int) -> None:
        cli = "from pipeline.cli import app; app()"
        self.proc = subprocess.Popen([sys.executable, "-c", cli, "review", "-c", str(config), "--port", str(port)])
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/api/me", timeout=1)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise SystemExit("the review server exited at start") from None
                time.sleep(0.1)
        raise SystemExit("the review server did not answer within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def signed_in(url: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    answer = client.post("/api/signin", json={"token": token})
    answer.raise_for_status()
    client.headers["X-CSRF-Token"] = answer.json()["csrf"]
    return client


def _png(client: httpx.Client, key: str, index: int, preset: str) -> float:
    began = time.perf_counter()
    answer = client.get(f"/api/scans/{key}/image.png", params={"slice": index, "preset": preset})
    seconds = time.perf_counter() - began
    if answer.status_code != 200 or not answer.content.startswith(b"\x89PNG"):
        raise SystemExit(f"image of {key} slice {index}: {answer.status_code} {answer.text[:200]}")
    return seconds


def wait_prepared(client: httpx.Client) -> float:
    """Seconds until the server's pass down the worklists is finished (polled every 50 ms)."""
    began = time.perf_counter()
    while not client.get("/api/worklists").json()["prepared"]["finished"]:
        time.sleep(0.05)
    return time.perf_counter() - began


def first_after_start(config: Path, token: str, ct_key: str, repeats: int) -> list[float]:
    """Seconds to the CT's first PNG from a server just (re)started, once its pass is done: the first image
    a reader sees of a worklist scan the server prepared (nothing of it in the server's memory)."""
    times = []
    for _ in range(repeats):
        server = Server(config, _free_port())
        try:
            client = signed_in(server.url, token)
            wait_prepared(client)
            times.append(_png(client, ct_key, CT_SHAPE[2] // 2, "lung"))
        finally:
            server.stop()
    return times


def first_images(client: httpx.Client, ct: Path, ct_key: str, xrays: list[str], repeats: int) -> dict[str, list]:
    """Seconds to the first PNG of a scan not loaded: the CT (its file touched before each repeat, so its
    stamp changes and the server reads and checks it again), the CT prefetched, and ``repeats`` X-rays never
    opened."""
    ct_times, prefetched = [], []
    for _ in range(repeats):
        os.utime(ct)
        ct_times.append(_png(client, ct_key, CT_SHAPE[2] // 2, "lung"))
    for _ in range(repeats):
        # What the page does while the previous scan is read: ask for the next scan's middle slice under
        # its default window, then open it. A reader who spends at least the load time on a scan sees this.
        os.utime(ct)
        client.get(f"/api/scans/{ct_key}/image.png", params={"slice": CT_SHAPE[2] // 2}).raise_for_status()
        prefetched.append(_png(client, ct_key, CT_SHAPE[2] // 2, "lung"))
    return {
        "ct": ct_times,
        "ct-prefetched": prefetched,
        "xray": [_png(client, key, 0, "auto") for key in xrays[:repeats]],
    }


def slice_steps(client: httpx.Client, ct_key: str, steps: int) -> list[float]:
    start = CT_SHAPE[2] // 2 - steps // 2
    _png(client, ct_key, start, "lung")
    return [_png(client, ct_key, start + 1 + n, "lung") for n in range(steps)]


def decisions(url: str, tokens: dict[str, str], scans: list[str], database: Path) -> tuple[float, int, str]:
    """(decisions per second, decisions made, the database check) with every reader deciding at once."""
    clients = {name: signed_in(url, token) for name, token in tokens.items()}
    calls = ("normal", "abnormal")
    start = threading.Barrier(len(clients) + 1)
    failures: list[str] = []

    def read(client: httpx.Client) -> None:
        start.wait()
        for call in calls:
            for key in scans:
                answer = client.post(f"/api/scans/{key}/decision", json={"decision": call, "seconds": 1.5})
                if answer.status_code != 201:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=read, args=(c,)) for c in clients.values()]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    made = len(clients) * len(scans) * len(calls)
    engine = open_database(f"sqlite:///{database}")
    with engine.connect() as conn:
        table = pd.read_sql("SELECT series_key, reader, decision, current FROM decisions", conn)
    now = table[table.current.astype(bool)]
    expected = len(clients) * len(scans)
    ok = (
        not failures
        and len(table) == made
        and len(now) == expected
        and not now.duplicated(["series_key", "reader"]).any()
        and (now.decision == calls[-1]).all()
    )
    check = (
        f"{len(now)} current of {expected} expected, {len(table)} rows of {made}, "
        f"{len(failures)} failed requests: {'none lost or duplicated' if ok else 'MISMATCH'}"
    )
    return made / seconds, made, check


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def _verdict(seconds: float, target: float) -> str:
    return "met" if seconds < target else "missed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20, help="chest X-rays to ingest (the worklist with the CT)")
    ap.add_argument("--steps", type=int, default=100, help="slice steps through the open CT")
    ap.add_argument("--repeats", type=int, default=5, help="first images timed, per kind")
    ap.add_argument("--readers", type=int, default=10)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "review")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)
    args.work.mkdir(parents=True, exist_ok=True)
    manifest, xrays, ct_key, size = prepare(args.work, args.images, console)
    scans = [*xrays, ct_key]
    suggested = args.work / "suggested.csv"
    pd.DataFrame({"series_key": scans, "label": ""}).to_csv(suggested, index=False)
    database = args.work / "review.db"
    for stale in args.work.glob("review.db*"):
        stale.unlink()
    unpacked = args.work / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    tokens = {f"reader{n}": f"bench-token-{n:04d}-0123456789" for n in range(args.readers)}
    review = {
        "manifest": str(manifest),
        "suggested": str(suggested),
        "database": f"sqlite:///{database}",
        "unpacked": str(unpacked),
        "readers": [{"name": name, "token": token} for name, token in tokens.items()],
    }
    config = args.work / "review.yaml"
    settings = {"ingest": {"pseudonym_key": KEY}, "tracking": {"enabled": False}, "review": review}
    config.write_text(yaml.safe_dump(settings))
    server = Server(config, _free_port())
    try:
        client = signed_in(server.url, tokens["reader0"])
        preparing = wait_prepared(client)
        first = first_images(client, manifest.parent / f"volumes/{ct_key}.nii.gz", ct_key, xrays, args.repeats)
        steps = slice_steps(client, ct_key, args.steps)
        rate, made, check = decisions(server.url, tokens, scans, database)
    finally:
        server.stop()
    after_start = first_after_start(config, tokens["reader0"], ct_key, args.repeats)
    load = os.getloadavg()
    ct, xray = statistics.median(first["ct"]), statistics.median(first["xray"])
    ready = statistics.median(after_start)
    ahead = statistics.median(first["ct-prefetched"])
    step, p95 = statistics.median(steps), float(np.percentile(steps, 95))
    report = "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end, other benchmarks running "
            "beside it. The server is `medssl review` in its own process, the clients httpx over loopback. CT: "
            f"{'x'.join(map(str, CT_SHAPE))} int16, gzip NIfTI as ingest writes it (a phantom, see the script); "
            f"chest X-rays: {len(xrays)} NIH films ({size}) through `run_ingest`. First image: median of "
            f"{args.repeats}, files in the page cache as a volume just ingested would be. After it started, the "
            f"server verified and unpacked the {len(scans)} worklist scans in {preparing:.1f} s "
            "(`review.unpacked`, empty before).",
            "",
            "| measure | figure | target | |",
            "|---|---|---|---|",
            f"| first image, CT (slice {CT_SHAPE[2] // 2}, lung), server just restarted, its pass done "
            f"| {_ms(ready)} (max {_ms(max(after_start))}) | < 300 ms | {_verdict(ready, TARGETS['first'])} |",
            f"| first image, CT changed since the server's pass (read and checked on request) | {_ms(ct)} "
            f"(max {_ms(max(first['ct']))}) | < 300 ms | {_verdict(ct, TARGETS['first'])} |",
            f"| first image, CT, opened after the page prefetched it | {_ms(ahead)} "
            f"(max {_ms(max(first['ct-prefetched']))}) | < 300 ms | {_verdict(ahead, TARGETS['first'])} |",
            f"| first image, chest X-ray | {_ms(xray)} (max {_ms(max(first['xray']))}) | < 300 ms "
            f"| {_verdict(xray, TARGETS['first'])} |",
            f"| slice step, CT lung window ({args.steps} steps) | median {_ms(step)}, p95 {_ms(p95)} | < 50 ms "
            f"| {_verdict(p95, TARGETS['step'])} |",
            f"| decisions, {args.readers} readers at once ({made} decisions on {len(scans)} scans) "
            f"| {rate:.0f} / s | no decision lost or duplicated | {check} |",
        ]
    )
    print(report)
    if args.write_results:
        write_section(RESULTS, "review-speed", report)


if __name__ == "__main__":
    main()
