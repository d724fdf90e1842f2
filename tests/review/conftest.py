"""A tiny ingest output to review (six chest X-rays and one MR series, in a folder named like a patient),
and the review app served for real by uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pydicom
import pytest
import uvicorn
from conftest import SAMPLE, TEST_KEY, make_config, pneumonia_images
from rich.console import Console

from pipeline.config import Config, load_config
from pipeline.ingest import run_ingest
from pipeline.pseudonym import image_key
from pipeline.review import review_app

PATIENT_FOLDER = "Doe^John_1961"
TOKENS = {"ann": "ann-token-0123456789", "bob": "bob-token-0123456789", "cleo": "cleo-token-0123456789"}


@pytest.fixture(scope="session")
def reviewed(tmp_path_factory, dask_scheduler) -> dict[str, Any]:
    """The ingest output, the source names that must never reach the page, and the scans by kind."""
    root = tmp_path_factory.mktemp("review")
    source = root / PATIENT_FOLDER
    chosen = pneumonia_images(source, 3)
    shutil.copytree(SAMPLE / "dcm_qa_enh" / "In" / "Philips", source / "mr")
    out = root / "out"
    with open(os.devnull, "w") as quiet:
        run_ingest(make_config([source], out, dask_scheduler), Console(file=quiet))
    manifest = pd.read_parquet(out / "manifest.parquet")
    accepted = manifest[manifest.status == "accepted"]
    dicom = next((source / "mr").iterdir())
    header = pydicom.dcmread(dicom, stop_before_pixels=True)
    return {
        "out": out,
        "manifest": accepted,
        "images": {name: image_key(TEST_KEY.encode(), source / name) for name in chosen.path},
        "volume": accepted[accepted.kind == "dicom"].iloc[0],
        "source": source,
        "names": list(chosen.path),
        "labels": dict(zip(chosen.path, chosen.label, strict=True)),
        "secrets": [str(source), PATIENT_FOLDER, str(header.PatientName), str(header.PatientID), *chosen.path]
        + [s for s in accepted.source_dir if s],
    }


def review_config(reviewed: dict[str, Any], tmp_path: Path, **review: Any) -> Config:
    """Three readers (ann and bob read, cleo adjudicates), a database and an export path of the test's own."""
    overrides: dict[str, Any] = {
        "review.manifest": str(reviewed["out"] / "manifest.parquet"),
        "review.database": f"sqlite:///{tmp_path / 'review.db'}",
        "review.out": str(tmp_path / "labels.csv"),
        "review.unpacked": str(tmp_path / "unpacked"),
        "review.readers": [
            {"name": "ann", "token": TOKENS["ann"]},
            {"name": "bob", "token": TOKENS["bob"]},
            {"name": "cleo", "role": "adjudicator", "token": TOKENS["cleo"]},
        ],
        "ingest.pseudonym_key": TEST_KEY,
        "tracking.enabled": False,
    }
    overrides.update({f"review.{k}": v for k, v in review.items()})
    return load_config(None, overrides)


@contextlib.contextmanager
def serving(config: Config) -> Iterator[str]:
    """The app under a real uvicorn server in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(review_app(config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Site:
    """The served app, and every response body it gave, to check none names a patient or a source path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[bytes] = []

    def client(self, reader: str | None = None) -> httpx.Client:
        """A client (signed in as ``reader`` when given, its CSRF header set) whose answers are recorded."""
        client = httpx.Client(base_url=self.url, event_hooks={"response": [self._keep]}, timeout=30)
        if reader is not None:
            answer = client.post("/api/signin", json={"token": TOKENS[reader]})
            assert answer.status_code == 200, answer.text
            client.headers["X-CSRF-Token"] = answer.json()["csrf"]
        return client

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.content)


def worklist_files(reviewed: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A suggest CSV (three of the images, in a chosen order, and a path not ingested) and a scores table
    (one scan flagged by an older version only), with the orders the page must show."""
    names, keys, volume = reviewed["names"], reviewed["images"], reviewed["volume"].series_key
    suggested = tmp_path / "suggested.csv"
    paths = [str(reviewed["source"] / names[i]) for i in (4, 0, 2)] + [str(tmp_path / "never-ingested.png")]
    pd.DataFrame({"path": paths, "label": ""}).to_csv(suggested, index=False)
    rows = [
        (keys[names[0]], 0.4, "abnormal", "1", "2026-01-01T00:00:00+00:00"),
        (keys[names[1]], 2.0, "abnormal", "1", "2026-01-01T00:00:00+00:00"),
        (keys[names[2]], -1.0, "normal", "1", "2026-01-01T00:00:00+00:00"),
        (keys[names[3]], 3.0, "abnormal", "1", "2026-01-01T00:00:00+00:00"),
        (keys[names[3]], -0.5, "normal", "2", "2026-02-01T00:00:00+00:00"),
        (volume, 0.9, "abnormal", "2", "2026-02-01T00:00:00+00:00"),
    ]
    scores = tmp_path / "scores.csv"
    pd.DataFrame(
        [(k, s, d, 0.0, "medssl-detector", v, t) for k, s, d, v, t in rows],
        columns=["series_key", "score", "decision", "threshold", "model", "version", "scored_at"],
    ).to_csv(scores, index=False)
    return {
        "suggested": str(suggested),
        "scores": str(scores),
        "to_label": [keys[names[i]] for i in (4, 0, 2)],
        "flagged": [keys[names[1]], volume, keys[names[0]]],
    }


@pytest.fixture
def lists(reviewed, tmp_path) -> dict[str, Any]:
    return worklist_files(reviewed, tmp_path)


@pytest.fixture
def site(reviewed, lists, tmp_path) -> Iterator[Site]:
    config = review_config(reviewed, tmp_path, suggested=lists["suggested"], scores=lists["scores"])
    with serving(config) as url:
        yield Site(url)


ANN = ["normal", "normal", "normal", "abnormal", "abnormal", "abnormal"]
BOB = ["normal", "normal", "abnormal", "abnormal", "abnormal", "normal"]


def decide(client, key: str, decision: str, **extra) -> None:
    answer = client.post(f"/api/scans/{key}/decision", json={"decision": decision, **extra})
    assert answer.status_code == 201, answer.text


def read_all(site, reviewed):
    """ann and bob read the six images (two calls differ); ann is unsure of the volume, bob skips it."""
    ann, bob = site.client("ann"), site.client("bob")
    keys = [reviewed["images"][n] for n in reviewed["names"]]
    for key, a, b in zip(keys, ANN, BOB, strict=True):
        decide(ann, key, a, seconds=4.5, finding="")
        decide(bob, key, b, seconds=3)
    decide(ann, reviewed["volume"].series_key, "unsure", finding="motion artefact?")
    decide(bob, reviewed["volume"].series_key, "skip")
    return ann, bob, keys
