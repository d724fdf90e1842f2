"""PNG/JPEG inputs with a labels CSV go through the same manifest as DICOM."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE, SHARED, TEST_KEY, needs_shared
from PIL import Image

from pipeline.data.labels import read_labels
from pipeline.errors import LabelsError
from pipeline.pseudonym import file_key, image_key, pseudonym

CXR = SAMPLE / "cxr_nih1000"


def test_labels_join_the_manifest(ingest, tmp_path):
    _, manifest = ingest(CXR, labels=[str(CXR / "labels.csv")])
    images = manifest[manifest.kind == "image"]
    truth = pd.read_csv(CXR / "labels.csv")
    assert len(images) == len(truth) == 24
    assert (images.status == "accepted").all()
    assert sorted(images.label.tolist()) == sorted(truth.label.tolist())
    # patient IDs are keyed hashes, never the raw ID
    assert set(images.patient) == {pseudonym(TEST_KEY.encode(), str(p)) for p in truth.patient_id}
    assert not set(images.patient) & {str(p) for p in truth.patient_id}


def test_grey_png_stored_as_one_channel_with_same_pixels(ingest, tmp_path):
    src = next(CXR.rglob("*.png"))
    _, manifest = ingest(src)
    (row,) = manifest.itertuples()
    pixels = np.asarray(Image.open(src).convert("RGB"))[..., 0]
    ours = np.asarray(nib.load(tmp_path / "out" / row.output_path).dataobj)[:, :, 0].T
    assert np.array_equal(ours, pixels)
    assert row.dtype == "uint8"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_colour_image_keeps_channels(ingest, tmp_path, suffix):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"colour{suffix}", quality=95)
    rgb = np.asarray(Image.open(tmp_path / f"colour{suffix}"))  # a JPEG's pixels are its decoded ones
    _, manifest = ingest(tmp_path / f"colour{suffix}")
    (row,) = manifest.itertuples()
    assert row.dtype == "RGB24" and row.transfer_syntax == {".png": "PNG", ".jpg": "JPEG"}[suffix]
    raw = np.asarray(nib.load(tmp_path / "out" / row.output_path).dataobj)[:, :, 0]
    assert np.array_equal(np.stack([raw[c] for c in "RGB"], -1).transpose(1, 0, 2), rgb)


def test_bad_labels_csv_is_named(tmp_path):
    (tmp_path / "l.csv").write_text("image,label\na.png,1\n")
    with pytest.raises(LabelsError, match="needs a 'path'"):
        read_labels(tmp_path / "l.csv")
    (tmp_path / "l.csv").write_text("path,label\na.png,maybe\n")
    with pytest.raises(LabelsError, match="label must be 0, 1 or empty"):
        read_labels(tmp_path / "l.csv")


@needs_shared
def test_shared_labels_csvs_read_as_they_are(tmp_path):
    for name in ("cxr_nih1000", "busi", "brain_tumor_mri_nickparvar"):
        labels = read_labels(SHARED / name / "labels.csv")
        assert len(labels) > 500
        first = next(iter(labels))
        assert first.startswith(str((SHARED / name).resolve()))
        assert {r.label for r in labels.values()} == {0, 1}


def test_png_with_wrong_content_is_corrupt(ingest, tmp_path):
    (tmp_path / "fake.png").write_bytes(b"not a png at all" * 10)
    shutil.copy(next(CXR.rglob("*.png")), tmp_path / "real.png")
    _, manifest = ingest(tmp_path)
    by_key = manifest.set_index("series_key")
    assert by_key.loc[file_key(TEST_KEY.encode(), tmp_path / "fake.png"), "reason"] == "CORRUPT_FILE"
    assert by_key.loc[image_key(TEST_KEY.encode(), tmp_path / "real.png"), "status"] == "accepted"
    assert not manifest.astype(str).apply(lambda col: col.str.contains("real.png")).any().any()  # no file names


def test_one_bit_png_is_accepted(ingest, tmp_path):
    bits = np.random.default_rng(2).integers(0, 2, (16, 24)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "mask.png")
    _, manifest = ingest(tmp_path / "mask.png")
    (row,) = manifest.itertuples()
    assert row.status == "accepted", row.detail
    ours = np.asarray(nib.load(tmp_path / "out" / row.output_path).dataobj)[:, :, 0].T
    assert np.array_equal(ours > 0, bits)
