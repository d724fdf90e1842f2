"""Atomic writes: a reader sees the old file or the new one, never part of one, and a failed write leaves
nothing behind (the next run trusts what it finds on disk)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from pipeline.atomic import atomic_path, write_durable, write_text


def test_the_file_appears_only_when_the_block_succeeds(tmp_path):
    dest = tmp_path / "deep" / "folder" / "out.json"
    with atomic_path(dest) as tmp:
        tmp.write_text("{}")
        assert tmp.parent == dest.parent and tmp.name.startswith(".out.") and not dest.exists()
    assert dest.read_text() == "{}" and os.listdir(dest.parent) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "state.json"
    write_text(dest, "old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert dest.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_a_durable_write_replaces_whole_and_a_failed_one_leaves_no_temp(tmp_path):
    dest = tmp_path / "study" / "instance.dcm"
    write_durable(dest, b"first")
    write_durable(dest, b"second copy")
    assert dest.read_bytes() == b"second copy" and os.listdir(dest.parent) == ["instance.dcm"]
    with pytest.raises(TypeError):  # fails inside the write, after the temp file is made
        write_durable(dest, "text, not bytes")  # type: ignore[arg-type]
    assert dest.read_bytes() == b"second copy" and os.listdir(dest.parent) == ["instance.dcm"]


def test_the_temp_name_keeps_the_suffixes_writers_choose_a_format_by(tmp_path):
    """nibabel compresses by the name it is given: a ``.part`` name without ``.nii.gz`` would write raw NIfTI
    into a file called ``.nii.gz``."""
    dest = tmp_path / "scan.nii.gz"
    with atomic_path(dest) as tmp:
        assert tmp.name.endswith(".part.nii.gz")
        nib.save(nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4)), tmp)
    assert dest.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    np.testing.assert_array_equal(np.asarray(nib.load(dest).dataobj).ravel(), np.arange(8))


def test_a_process_killed_inside_the_block_leaves_the_old_file_whole(tmp_path):
    dest = tmp_path / "manifest.txt"
    write_text(dest, "complete")
    script = textwrap.dedent(
        f"""
        import os, signal
        from pipeline.atomic import atomic_path
        with atomic_path({str(dest)!r}) as tmp:
            tmp.write_text("par")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -9
    assert dest.read_text() == "complete"
    left = [p.name for p in tmp_path.iterdir() if p.name != "manifest.txt"]
    assert all(name.startswith(".manifest.") and ".part" in name for name in left)  # a hidden temp, never read
