"""Label CSVs meet manifests through keyed series keys: an image exported twice is one labelled scan, and
the scans a CSV holds back from pretraining are found, or said to be none, never silently lost."""

from __future__ import annotations

import io
import shutil

import pandas as pd
import pytest
from conftest import PNEUMONIA, TEST_KEY, pneumonia_images
from rich.console import Console

from pipeline.config import PretrainConfig
from pipeline.data.items import scans
from pipeline.data.labelled import excluded_scans, labelled_items, labelled_scans
from pipeline.errors import DataError
from pipeline.pretrain.scans import usable_items
from pipeline.pseudonym import KEY_ENV


@pytest.fixture
def with_a_copy(ingest, tmp_path):
    """Six chest X-rays (three per class) and one of them again under another name, all labelled."""
    source = tmp_path / "images"
    chosen = pneumonia_images(source, 3)
    shutil.copyfile(source / chosen.path.iloc[0], source / "copy.png")
    rows = [*zip(chosen.path, chosen.label, strict=True), ("copy.png", int(chosen.label.iloc[0]))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(source / "labels.csv", index=False)
    result, _ = ingest(source)
    return result.manifest, source / "labels.csv"


def test_an_image_exported_twice_is_one_labelled_scan(with_a_copy):
    manifest, labels = with_a_copy
    out = io.StringIO()
    found = labelled_items(manifest, labels, TEST_KEY, 2, 0, Console(file=out, width=200))
    assert len(scans(found)) == 6 and len({it["voxels"] for it in found}) == 6
    assert "1 labelled scan(s) with the voxels of another set aside" in out.getvalue()


def test_excluded_csvs_say_how_many_scans_they_hold_out(with_a_copy, tmp_path):
    manifest, labels = with_a_copy
    other = tmp_path / "other.csv"
    pd.DataFrame({"path": [str(PNEUMONIA / "val" / "val_00000.png")], "label": [1]}).to_csv(other, index=False)
    out = io.StringIO()
    held = excluded_scans(manifest, [labels, other], TEST_KEY, Console(file=out, width=200))
    assert len(held) == 7  # the copy too: it is a scan of its own, labelled in the CSV
    assert out.getvalue().splitlines() == [
        "exclude: labels.csv holds out 7 of the manifest's scans",
        "exclude: other.csv holds out 0 of the manifest's scans",
    ]
    left, _ = usable_items(manifest, PretrainConfig(), Console(file=io.StringIO()), "pretrain", held)
    assert not left


def test_without_the_pseudonym_key_a_csv_cannot_be_matched_and_says_so(with_a_copy, monkeypatch):
    manifest, labels = with_a_copy
    monkeypatch.delenv(KEY_ENV, raising=False)  # ingest was given TEST_KEY: no key file beside the manifest
    with pytest.raises(DataError, match=r"no pseudonym key to match labels\.csv"):
        labelled_scans(manifest, labels, None)
