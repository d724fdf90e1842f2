"""Re-runs convert nothing twice; a killed run leaves only whole files and the next run completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import HAS_SHARED, ROOT, SAMPLE, SHARED, TEST_KEY


def test_second_run_converts_nothing(ingest, tmp_path):
    first, m1 = ingest(SAMPLE)
    second, m2 = ingest(SAMPLE)
    assert first.converted > 0
    assert second.converted == 0
    assert second.unchanged == first.converted
    pd.testing.assert_frame_equal(m1.drop(columns="ingested_at"), m2.drop(columns="ingested_at"))


def test_only_missing_or_changed_outputs_are_redone(ingest, tmp_path):
    _, manifest = ingest(SAMPLE)
    accepted = manifest[manifest.status == "accepted"].sort_values("series_key")
    for rel in accepted.output_path[:2]:
        (tmp_path / "out" / rel).unlink()
    png = next(SAMPLE.rglob("*.png"))
    stamp = png.stat()
    os.utime(png, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    try:
        result, again = ingest(SAMPLE)
    finally:
        os.utime(png, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert result.converted == 3
    assert set(again.voxel_sha256.dropna()) == set(manifest.voxel_sha256.dropna())


def _source() -> Path:
    return SHARED / "dcm_qa_nih" if HAS_SHARED else SAMPLE


def _cli(out: Path, *extra: str) -> list[str]:
    return [
        str(ROOT / ".venv/bin/medssl"),
        "ingest",
        str(_source()),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-tracking",
        *extra,
    ]


@pytest.mark.slow
def test_killed_run_leaves_whole_files_and_resumes(tmp_path):
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": TEST_KEY}
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    volumes = out / "volumes"

    def visible() -> list[Path]:  # temp files of a write in progress start with a dot
        return [p for p in volumes.glob("*.nii*") if not p.name.startswith(".")] if volumes.is_dir() else []

    deadline = time.monotonic() + 120
    # Kill once the first volume is out, with the other series still converting, well before the manifest.
    while time.monotonic() < deadline and not visible():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.parquet").exists(), "the run finished before it could be killed"
    written = visible()
    assert written
    for path in written:  # every visible output is whole
        assert np.isfinite(nib.load(path).get_fdata()).all()

    subprocess.run(_cli(out), env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run(_cli(clean), env=env, check=True, capture_output=True)
    resumed = pd.read_parquet(out / "manifest.parquet").set_index("series_key")
    reference = pd.read_parquet(clean / "manifest.parquet").set_index("series_key")
    assert resumed.index.sort_values().equals(reference.index.sort_values())
    assert resumed.voxel_sha256.sort_index().equals(reference.voxel_sha256.sort_index())
    assert not [p for p in volumes.iterdir() if p.name.startswith(".")], "temp files left after resume"


def test_fixed_file_replaces_its_old_rejection(ingest, tmp_path):
    """A file rejected once and repaired later leaves no stale rejection row behind."""
    from series_tools import copy_series

    good = copy_series(tmp_path / "src")
    target = sorted(good.iterdir())[0]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    _, first = ingest(tmp_path / "src")
    assert "CORRUPT_FILE" in set(first.reason)
    target.write_bytes(data)
    _, second = ingest(tmp_path / "src")
    assert list(second.status) == ["accepted"]


def test_damaged_journal_does_not_block_the_next_run(ingest, tmp_path):
    _, manifest = ingest(SAMPLE / "cxr_nih1000")
    journal = tmp_path / "out" / ".journal"
    (journal / ".00000000000000000001.part.jsonl").write_text('{"series_key": "trunc')  # killed mid-write
    segment = next(journal.glob("[0-9]*.jsonl"))
    segment.write_text(segment.read_text() + '{"series_key": "x", "broken\n')
    result, again = ingest(SAMPLE / "cxr_nih1000")
    assert result.converted == 0
    assert len(again) == len(manifest)


def test_each_conversion_is_journaled_as_it_arrives(ingest, monkeypatch):
    """The journal is what a killed run resumes from: a conversion's rows must be in it before the next
    conversion's result is awaited, not once all have finished."""
    from pipeline.ingest import run

    events: list[str] = []
    gather, add = run._gather, run.Journal.add

    def gather_logged(*args):
        for result in gather(*args):
            events.append("result")
            yield result

    def add_logged(self, rows):
        events.append("journal")
        add(self, rows)

    monkeypatch.setattr(run, "_gather", gather_logged)
    monkeypatch.setattr(run.Journal, "add", add_logged)
    result, _ = ingest(SAMPLE / "dicom2nifti_testdata", SAMPLE / "cxr_nih1000")
    assert result.converted >= 3
    # Scan results all come first (grouping needs them all); then each conversion's result is journaled
    # before the next one is awaited. Gathered first and journaled after, no journal write would sit
    # between two results.
    assert "result,journal,result" in ",".join(events), events
