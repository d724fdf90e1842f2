"""The screen between ingest and every later stage: each file is checked once against the voxel digest its
manifest row carries, and what fails is named (MISSING_FILE, CORRUPT_FILE, CHECKSUM_MISMATCH) and set aside
while the rest go on."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from rich.console import Console

from pipeline.data import screen as screening
from pipeline.data.reasons import Reason
from pipeline.data.screen import check_file, reason_counts, screen, screen_and_report
from pipeline.ingest.nifti import write_nifti


def _volume(path: Path, seed: int) -> str:
    data = np.random.default_rng(seed).integers(0, 1000, size=(8, 8, 4)).astype(np.int16)
    return write_nifti(path, data, np.eye(4))


def _item(path: Path, sha256: str | None, slice_: int | None = None) -> dict:
    return {"image": str(path), "sha256": sha256, "slice": slice_, "scan": path.name}


def test_each_fault_gets_its_reason(tmp_path):
    good, donor = tmp_path / "good.nii.gz", tmp_path / "donor.nii.gz"
    digest = _volume(good, 0)
    _volume(donor, 1)
    assert check_file(str(good), digest) is None
    assert check_file(str(good), None) is None  # no digest in the manifest: readable is enough
    assert check_file(str(tmp_path / "gone.nii.gz"), digest)[0] is Reason.MISSING_FILE
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert check_file(str(cut), digest)[0] is Reason.CORRUPT_FILE
    swapped = tmp_path / "swapped.nii.gz"
    shutil.copyfile(donor, swapped)  # a readable NIfTI, but not the voxels ingest wrote there
    assert check_file(str(swapped), digest)[0] is Reason.CHECKSUM_MISMATCH


def test_the_digest_is_of_stored_voxels_whatever_the_compression(tmp_path):
    data = np.arange(64, dtype=np.uint16).reshape(4, 4, 4)
    packed, raw = write_nifti(tmp_path / "a.nii.gz", data, np.eye(4)), write_nifti(tmp_path / "a.nii", data, np.eye(4))
    assert packed == raw and check_file(str(tmp_path / "a.nii"), packed) is None


def test_a_file_is_read_once_however_many_slices_use_it(tmp_path, monkeypatch):
    volume = tmp_path / "v.nii.gz"
    digest = _volume(volume, 0)
    reads: list[str] = []
    real = screening.check_file
    monkeypatch.setattr(screening, "check_file", lambda path, sha: reads.append(path) or real(path, sha))
    kept, skipped = screen([_item(volume, digest, s) for s in range(4)], tmp_path)
    assert len(kept) == 4 and not skipped and reads == [str(volume)]


def test_bad_files_are_set_aside_named_by_their_manifest_path_and_the_rest_go_on(tmp_path):
    (tmp_path / "volumes").mkdir()
    good = tmp_path / "volumes" / "good.nii.gz"
    digest = _volume(good, 0)
    items = [_item(good, digest, 0), _item(good, digest, 1), _item(tmp_path / "volumes" / "gone.nii.gz", digest)]
    out = io.StringIO()
    kept, skipped = screen_and_report(items, tmp_path, Console(file=out, width=200), "finetune")
    assert kept == items[:2]
    assert [(s.path, s.reason) for s in skipped] == [("volumes/gone.nii.gz", Reason.MISSING_FILE)]
    assert out.getvalue().strip() == f"finetune: skipped 1 unusable file(s) under {tmp_path.name} (MISSING_FILE 1)"
    silent = io.StringIO()
    screen_and_report(items[:2], tmp_path, Console(file=silent), "finetune")
    assert silent.getvalue() == ""  # nothing to say when all is well


def test_reason_counts_put_the_most_frequent_first(tmp_path):
    items = [_item(tmp_path / f"gone{i}.nii.gz", None) for i in range(3)]
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    items.append(_item(tmp_path / "bad.nii.gz", None))
    _, skipped = screen(items, tmp_path)
    assert list(reason_counts(skipped).items()) == [("MISSING_FILE", 3), ("CORRUPT_FILE", 1)]
