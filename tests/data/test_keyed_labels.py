"""A label CSV may name scans by the manifest's series_key (the review page's export): it matches the
manifest directly, without the pseudonym key, and a path CSV is matched as before."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from conftest import PNEUMONIA, pneumonia_images
from rich.console import Console

from pipeline.data.items import scans
from pipeline.data.labelled import excluded_scans, labelled_items, labelled_scans
from pipeline.data.labels import read_keyed_labels, read_labels
from pipeline.errors import LabelsError


@pytest.fixture
def four_images(ingest, tmp_path):
    """Four chest X-rays (two per class) ingested with a key file; (manifest, series keys by file name)."""
    source = tmp_path / "images"
    chosen = pneumonia_images(source, 2)
    result, manifest = ingest(source, pseudonym_key=None)
    return result.manifest, dict(zip(chosen.path, chosen.label, strict=True)), manifest


def test_a_series_key_csv_labels_the_manifest_rows_it_names_without_the_key(four_images, tmp_path):
    manifest_path, _, manifest = four_images
    keys = list(manifest.series_key[manifest.status == "accepted"])
    csv = tmp_path / "keyed.csv"
    pd.DataFrame({"series_key": [*keys, "0000000000000000"], "label": [0, 1, 1, "", 1]}).to_csv(csv, index=False)
    (manifest_path.parent / ".pseudonym_key").unlink()  # a keyed CSV needs no pseudonym key
    assert labelled_scans(manifest_path, csv, None) == set(keys[:3])
    found = labelled_items(manifest_path, csv, None, 2, 0, Console(file=io.StringIO()))
    assert {it["scan"]: it["label"] for it in found} == dict(zip(keys[:3], [0, 1, 1], strict=True))
    assert len(scans(found)) == 3


def test_a_csv_names_scans_by_path_or_by_series_key(four_images, tmp_path):
    _, labels, _ = four_images
    csv = tmp_path / "by_path.csv"
    pd.DataFrame({"path": [str(PNEUMONIA / "train" / n) for n in labels], "label": list(labels.values())}).to_csv(
        csv, index=False
    )
    assert read_keyed_labels(csv) is None and len(read_labels(csv)) == 4
    (tmp_path / "neither.csv").write_text("name,label\na,1\n")
    with pytest.raises(LabelsError, match="'path' \\(or 'file'\\) or 'series_key'"):
        read_keyed_labels(tmp_path / "neither.csv")
    (tmp_path / "keyed.csv").write_text("series_key,label\nabc,1\n")
    with pytest.raises(LabelsError, match="names scans by series_key"):
        read_labels(tmp_path / "keyed.csv")


def test_scans_an_exclude_list_names_are_not_trained_on_even_labelled(four_images, tmp_path):
    """A review export can label a scan the evaluation set holds: finetune's exclude wins over its label."""
    manifest_path, _, manifest = four_images
    keys = list(manifest.series_key[manifest.status == "accepted"])
    labels, judged = tmp_path / "export.csv", tmp_path / "evaluation.csv"
    pd.DataFrame({"series_key": keys, "label": [0, 1, 0, 1]}).to_csv(labels, index=False)
    pd.DataFrame({"series_key": keys[:1], "label": [0]}).to_csv(judged, index=False)
    out = io.StringIO()
    console = Console(file=out, width=200)
    held = excluded_scans(manifest_path, [judged], None, console)
    found = labelled_items(manifest_path, labels, None, 2, 0, console, held=held)
    assert scans(found) == set(keys[1:])
    assert "1 labelled scan(s) are held out by exclude" in out.getvalue()
