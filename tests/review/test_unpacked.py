"""The server's pass down the worklists: scans verified once and unpacked, then mapped on request; a file
changed since its pass is read and checked again; the folder keeps to its budget."""

from __future__ import annotations

import os
import threading
import time

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.manifest import voxel_digest
from pipeline.data.reasons import Reason
from pipeline.review.render import Renderer, ScanFile
from pipeline.review.unpacked import Unpacked
from review.conftest import Site, review_config, serving

SHAPE = (16, 12, 10)


def _ct(folder, name: str, seed: int, shape: tuple[int, int, int] = SHAPE) -> ScanFile:
    voxels = np.random.default_rng(seed).integers(-1000, 1500, shape, dtype=np.int16)
    path = folder / f"{name}.nii.gz"
    image = nib.Nifti1Image(voxels, np.eye(4))
    image.header.set_slope_inter(1.0, -1024.0)
    nib.save(image, path)
    return ScanFile(path, voxel_digest(voxels), "CT")


@pytest.fixture
def cts(tmp_path) -> dict[str, ScanFile]:
    return {name: _ct(tmp_path, name, seed) for seed, name in enumerate("abc")}


def _renderer(cts, folder, budget: int = 10**9) -> Renderer:
    return Renderer(cts, cache_size=4, unpacked=Unpacked(folder, budget))


def test_a_prepared_scan_is_mapped_not_read_and_draws_the_same(cts, tmp_path, monkeypatch):
    direct = Renderer(cts, cache_size=4).png("b", 3, "lung")
    _renderer(cts, tmp_path / "unpacked").prepare(["b", "a", "b"], threading.Event())
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "unpacked").glob("*.npy")) == ["a", "b"]
    monkeypatch.setattr("pipeline.review.render.read_checked", lambda *_: pytest.fail("read again"))
    fresh = _renderer(cts, tmp_path / "unpacked")  # a restarted server: nothing in memory
    assert fresh.png("b", 3, "lung") == direct
    assert isinstance(fresh.load("a").stored.voxels, np.memmap)


def test_a_file_changed_since_its_pass_is_checked_again(cts, tmp_path):
    renderer = _renderer(cts, tmp_path / "unpacked")
    renderer.prepare(["a"], threading.Event())
    other = nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4))
    nib.save(other, cts["a"].path)  # replaced: the manifest's digest no longer matches
    assert _renderer(cts, tmp_path / "unpacked").load("a") is Reason.CHECKSUM_MISMATCH
    os.remove(cts["a"].path)
    assert _renderer(cts, tmp_path / "unpacked").load("a") is Reason.MISSING_FILE


def test_the_pass_stops_at_its_budget_and_a_later_pass_evicts_the_least_recently_opened(cts, tmp_path):
    size = np.dtype(np.int16).itemsize * int(np.prod(SHAPE)) + 200  # voxels and the .npy header
    folder = tmp_path / "unpacked"
    renderer = _renderer(cts, folder, budget=2 * size)
    renderer.prepare(["a", "b", "c"], threading.Event())
    assert (renderer.prepared.done, renderer.prepared.total, renderer.prepared.finished) == (2, 3, True)
    assert sorted(p.name.split(".")[0] for p in folder.glob("*.npy")) == ["a", "b"]
    time.sleep(0.01)
    renderer.load("b")  # not in memory yet: mapped, and marked as opened now
    _renderer(cts, folder, budget=2 * size).prepare(["c"], threading.Event())
    assert sorted(p.name.split(".")[0] for p in folder.glob("*.npy")) == ["b", "c"]


def test_the_served_page_reports_its_pass_and_prepares_the_worklists(reviewed, lists, tmp_path):
    config = review_config(reviewed, tmp_path, suggested=lists["suggested"], scores=lists["scores"])
    with serving(config) as url:
        client = Site(url).client("ann")
        deadline = time.monotonic() + 120
        while not (prepared := client.get("/api/worklists").json()["prepared"])["finished"]:
            assert time.monotonic() < deadline, prepared
            time.sleep(0.05)
    expected = set(lists["to_label"]) | set(lists["flagged"])
    assert prepared == {"done": len(expected), "total": len(expected), "finished": True}
    assert {p.name.split(".")[0] for p in (tmp_path / "unpacked").glob("*.npy")} == expected


def test_a_scan_over_the_whole_budget_is_passed_over_and_a_failing_pass_still_finishes(cts, tmp_path, monkeypatch):
    size = np.dtype(np.int16).itemsize * int(np.prod(SHAPE))
    small = {**cts, "a": _ct(tmp_path, "small", 9, shape=(4, 4, 2))}
    renderer = Renderer(small, cache_size=4, unpacked=Unpacked(tmp_path / "unpacked", budget=size - 1))
    renderer.prepare(["b", "a"], threading.Event())  # b alone is over the budget: a is still prepared
    assert [p.name.split(".")[0] for p in (tmp_path / "unpacked").glob("*.npy")] == ["a"]

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Unpacked, "put", full)
    failing = Renderer(cts, cache_size=4, unpacked=Unpacked(tmp_path / "other", budget=10**9))
    failing.prepare(["a", "b"], threading.Event())
    assert failing.prepared.finished and failing.prepared.done == 0  # the page stops saying "preparing"


def test_what_a_killed_server_left_in_the_folder_goes_at_the_next_start(tmp_path):
    folder = tmp_path / "unpacked"
    folder.mkdir()
    (folder / ".a.x1.part.0123.npy").write_bytes(b"half")
    (folder / "b.0123456789abcdef.json").write_text("{}")
    Unpacked(folder, 10**9)
    assert list(folder.iterdir()) == []
