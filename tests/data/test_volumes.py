"""Ingest outputs read back as training arrays: shapes, channels, time points, intensity scales."""

from __future__ import annotations

import numpy as np

from pipeline.data.volumes import load_volume, normalise


def _row(manifest, predicate):
    return next(r for r in manifest.itertuples() if predicate(r))


def test_grey_png_is_one_channel_2d(sample_manifest):
    out, manifest = sample_manifest
    row = _row(manifest, lambda r: r.kind == "image")
    data = load_volume(out / row.output_path)
    assert data.shape == (1, 64, 64) and data.dtype == np.float32


def test_rgb_dicom_is_three_channels(sample_manifest):
    out, manifest = sample_manifest
    row = _row(manifest, lambda r: r.dtype == "RGB24")
    data = load_volume(out / row.output_path)
    assert data.shape[0] == 3 and data.ndim == 4


def test_4d_series_gives_one_volume_per_time_point(sample_manifest):
    out, manifest = sample_manifest
    row = _row(manifest, lambda r: len(r.shape) == 4 and r.dtype != "RGB24")
    first, second = load_volume(out / row.output_path, 0), load_volume(out / row.output_path, 1)
    assert first.shape == (1, *row.shape[:3])
    assert not np.array_equal(first, second)


def test_ct_uses_the_hu_window_and_others_percentiles():
    hu = np.array([[[-2000.0, -1000.0, 0.0, 1000.0, 3000.0]]], dtype=np.float32)
    assert np.allclose(normalise(hu, "CT"), [[[0.0, 0.0, 0.5, 1.0, 1.0]]])
    mr = np.random.default_rng(0).gamma(2.0, 100.0, (1, 32, 32)).astype(np.float32)
    scaled = normalise(mr, "MR")
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert 0.05 < np.median(scaled) < 0.6
