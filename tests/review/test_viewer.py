"""The viewer draws what ingest wrote: a PNG of a 2D image or of a volume's slice, and the screen's reason
instead when the NIfTI is gone or changed."""

from __future__ import annotations

import io
import shutil

import nibabel as nib
import numpy as np
from PIL import Image

from review.conftest import Site, review_config, serving


def _png(answer) -> Image.Image:
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", answer.text
    return Image.open(io.BytesIO(answer.content))


def test_a_2d_image_and_a_volume_slice_are_drawn_from_the_ingested_nifti(site, reviewed):
    client = site.client("ann")
    key = reviewed["images"][reviewed["names"][0]]
    assert client.get(f"/api/scans/{key}").json()["slices"] == 1
    image = _png(client.get(f"/api/scans/{key}/image.png"))
    assert image.size == (28, 28) and image.mode == "L"
    stored = np.asarray(nib.load(reviewed["out"] / f"volumes/{key}.nii.gz").dataobj)[:, :, 0]
    drawn = np.asarray(image).astype(float)
    assert np.corrcoef(drawn.ravel(), stored.T.ravel())[0, 1] > 0.99  # rows and columns as ingest stored them

    volume = reviewed["volume"]
    x, y, z = (int(n) for n in volume["shape"][:3])
    info = client.get(f"/api/scans/{volume.series_key}").json()
    assert info["slices"] == z and info["presets"] == ["auto", "wide", "narrow"]
    for index, preset in ((0, "auto"), (z // 2, "narrow"), (z - 1, "wide")):
        assert _png(client.get(f"/api/scans/{volume.series_key}/image.png?slice={index}&preset={preset}")).size == (
            x,
            y,
        )
    assert client.get(f"/api/scans/{volume.series_key}/image.png?slice={z}").status_code == 400


def test_a_missing_or_changed_nifti_answers_its_reason(reviewed, tmp_path):
    copy = tmp_path / "ingested"
    shutil.copytree(reviewed["out"], copy)
    config = review_config({**reviewed, "out": copy}, tmp_path)
    gone, changed = (reviewed["images"][n] for n in reviewed["names"][:2])
    with serving(config) as url:
        client = Site(url).client("ann")
        assert client.get(f"/api/scans/{gone}/image.png").status_code == 200  # cached from here on
        (copy / f"volumes/{gone}.nii.gz").unlink()
        answer = client.get(f"/api/scans/{gone}/image.png")
        assert answer.status_code == 409 and answer.json()["reason"] == "MISSING_FILE"
        path = copy / f"volumes/{changed}.nii.gz"
        original = nib.load(path)
        nib.save(nib.Nifti1Image(np.zeros(original.shape, np.uint8), original.affine), path)
        answer = client.get(f"/api/scans/{changed}/image.png")
        assert answer.status_code == 409 and answer.json()["reason"] == "CHECKSUM_MISMATCH"
