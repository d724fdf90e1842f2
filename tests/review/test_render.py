"""CT is drawn under Hounsfield windows (lung, soft tissue, bone), and a loaded scan is read from disk once
while it is unchanged."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from pipeline.data.manifest import voxel_digest
from pipeline.review.render import Renderer, ScanFile

HU = (-1000, -600, 40, 400, 1000)  # air, the lung window's level, soft tissue's, bone's, dense bone


@pytest.fixture
def ct(tmp_path) -> Renderer:
    """A 5x4x3 CT whose columns hold the values of HU, the same on every slice."""
    voxels = np.tile(np.array(HU, np.int16)[:, None, None], (1, 4, 3))
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), path)
    return Renderer({"ct": ScanFile(path, voxel_digest(voxels), "CT")}, cache_size=2)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("lung", [60, 128, 236, 255, 255]),  # level -600, width 1500: -1350..150
        ("soft-tissue", [0, 0, 128, 255, 255]),  # level 40, width 400: -160..240
        ("bone", [0, 0, 77, 128, 213]),  # level 400, width 1800: -500..1300
    ],
)
def test_ct_windows_are_in_hounsfield_units(ct, preset, expected):
    image = Image.open(io.BytesIO(ct.png("ct", 1, preset)))
    assert image.size == (5, 4)
    assert np.asarray(image)[0].astype(int).tolist() == pytest.approx(expected, abs=1)


def test_an_unchanged_scan_is_read_once_and_a_bad_request_is_a_value_error(ct, monkeypatch):
    ct.png("ct", 0, "lung")
    monkeypatch.setattr("pipeline.review.render.read_checked", lambda *_: pytest.fail("read again"))
    ct.png("ct", 2, "bone")
    with pytest.raises(ValueError, match="preset must be one of lung, soft-tissue, bone"):
        ct.png("ct", 0, "auto")
    with pytest.raises(ValueError, match=r"slice must be in 0\.\.2"):
        ct.png("ct", 3, "lung")


def test_a_scan_asked_for_twice_at_once_is_read_once(ct, monkeypatch):
    """The page prefetches the next scan; the reader opening it meanwhile waits for that load, not a second."""
    import threading

    from pipeline.review import render

    reads, entered, again, release = [], threading.Event(), threading.Event(), threading.Event()
    real = render.read_checked

    def slow_read(*args):
        reads.append(args)
        (again if entered.is_set() else entered).set()
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(render, "read_checked", slow_read)
    images: list[bytes] = []
    first = threading.Thread(target=lambda: images.append(ct.png("ct", 0, "lung")))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=lambda: images.append(ct.png("ct", 1, "lung")))
    second.start()
    # Without the per-scan gate the second request reads the file too, within this second; with it, it
    # waits for the first load (a correct renderer never reads twice, however slow this machine is).
    again.wait(1.0)
    release.set()
    first.join(10)
    second.join(10)
    assert len(reads) == 1 and len(images) == 2 and all(png.startswith(b"\x89PNG") for png in images)
