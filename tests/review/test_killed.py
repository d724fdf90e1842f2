"""A review server killed (SIGKILL) while two readers decide: every decision it acknowledged is in the
database, whole, and nothing half-written is: a decision is one transaction."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml
from conftest import ROOT, TEST_KEY
from orthanc import free_port

from review.conftest import TOKENS

pytestmark = pytest.mark.slow  # a server process of its own, killed
DECISIONS = ("normal", "abnormal", "unsure", "skip")


def _start(config, port: int) -> subprocess.Popen:
    """``medssl review`` in a process of its own (one that can be killed), once it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "review", "-c", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/me", timeout=2)
            return proc
        except httpx.TransportError:
            assert proc.poll() is None, "the review server exited at start"
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the review server did not answer within 120 s")


def test_a_killed_server_keeps_each_acknowledged_decision_whole(reviewed, tmp_path):
    database = tmp_path / "review.db"
    config = tmp_path / "review.yaml"
    readers = [{"name": name, "token": TOKENS[name]} for name in ("ann", "bob")]
    review = {"manifest": str(reviewed["out"] / "manifest.parquet"), "database": f"sqlite:///{database}"}
    settings = {"ingest": {"pseudonym_key": TEST_KEY}, "tracking": {"enabled": False}, "review": review}
    config.write_text(yaml.safe_dump(settings | {"review": review | {"readers": readers}}))
    port = free_port()
    proc = _start(config, port)
    scans = list(reviewed["images"].values())
    acknowledged: dict[str, str] = {}  # finding -> decision, for each decision the server answered 201 to
    enough = threading.Event()

    def read(reader: str) -> None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        client.headers["X-CSRF-Token"] = client.post("/api/signin", json={"token": TOKENS[reader]}).json()["csrf"]
        for n in itertools.count():
            finding, decision = f"{reader}-{n}", DECISIONS[n % len(DECISIONS)]
            try:
                answer = client.post(
                    f"/api/scans/{scans[n % len(scans)]}/decision", json={"decision": decision, "finding": finding}
                )
            except httpx.TransportError:  # the server is gone
                return
            if answer.status_code == 201:
                acknowledged[finding] = decision
            if len(acknowledged) >= 40:
                enough.set()

    threads = [threading.Thread(target=read, args=(name,)) for name in ("ann", "bob")]
    for thread in threads:
        thread.start()
    try:
        assert enough.wait(120), "the readers' decisions were not acknowledged"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: both readers are still posting
        proc.wait(30)
        for thread in threads:
            thread.join(30)

    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT series_key, reader, decision, finding, decided_at FROM decisions").fetchall()
        per_scan = db.execute(
            "SELECT COUNT(*) FROM decisions WHERE current GROUP BY reader, series_key HAVING COUNT(*) > 1"
        ).fetchall()
    stored = {finding: decision for _, _, decision, finding, _ in rows}
    assert all(stored.get(finding) == decision for finding, decision in acknowledged.items())
    # Whole rows only: each names a scan, a reader and a time, and holds a decision that was posted with it.
    assert all(key in scans and reader and when for key, reader, _, _, when in rows)
    posted = {finding: DECISIONS[int(finding.split("-")[1]) % len(DECISIONS)] for finding in stored}
    assert stored == posted
    assert len(stored) == len(rows) >= len(acknowledged) and not per_scan
