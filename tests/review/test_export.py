"""The export: one series_key,label row per settled scan, written whole, read by fine-tuning's label
matching, and logged to MLflow by reader pseudonym."""

from __future__ import annotations

import io
import threading

import mlflow
import pandas as pd
import yaml
from conftest import TEST_KEY
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.labelled import labelled_items
from review.conftest import TOKENS, decide, read_all


def _expected(keys: list[str]) -> dict[str, int]:
    """ann and bob agree on images 0, 1 (normal) and 3, 4 (abnormal); cleo settles 2 as abnormal; 5 stays
    split and the volume has only unsure and skip."""
    return {keys[0]: 0, keys[1]: 0, keys[2]: 1, keys[3]: 1, keys[4]: 1}


def test_the_export_holds_settled_labels_and_finetune_reads_it(site, reviewed, tmp_path):
    ann, _, keys = read_all(site, reviewed)
    decide(site.client("cleo"), keys[2], "abnormal")
    assert ann.post("/api/export", headers={"X-CSRF-Token": ""}).status_code == 403
    answer = ann.post("/api/export")
    assert answer.json() == {"normal": 2, "abnormal": 3, "readers": 3}
    table = pd.read_csv(tmp_path / "labels.csv", dtype={"series_key": str})
    assert list(table.columns) == ["series_key", "label"]
    assert dict(zip(table.series_key, table.label, strict=True)) == _expected(keys)
    manifest = reviewed["out"] / "manifest.parquet"
    found = labelled_items(manifest, tmp_path / "labels.csv", None, 2, 0, Console(file=io.StringIO()))
    assert {it["scan"]: it["label"] for it in found} == _expected(keys)


def test_the_cli_export_is_atomic_and_logged_to_mlflow_by_pseudonym(site, reviewed, tmp_path):
    read_all(site, reviewed)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {
        "review": {
            "manifest": str(reviewed["out"] / "manifest.parquet"),
            "database": f"sqlite:///{tmp_path / 'review.db'}",
            "readers": [{"name": name, "token": token} for name, token in TOKENS.items()],
        },
        "ingest": {"pseudonym_key": TEST_KEY},
        "tracking": {"enabled": True, "uri": store, "experiment": "review-test"},
    }
    (tmp_path / "review.yaml").write_text(yaml.safe_dump(settings))
    out = tmp_path / "exported" / "labels.csv"
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # every look at the file finds it absent or whole
        while not done.is_set():
            if out.is_file():
                seen.append(out.read_text())

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = CliRunner().invoke(app, ["review", "export", "--config", str(tmp_path / "review.yaml"), "--out", str(out)])
    done.set()
    watcher.join()
    assert result.exit_code == 0, result.output
    final = out.read_text()
    assert all(text == final for text in seen)
    assert [p.name for p in out.parent.iterdir()] == ["labels.csv"]  # no temp file left behind
    assert len(final.splitlines()) == 1 + 4  # keys 2 and 5 split, nobody adjudicated

    mlflow.set_tracking_uri(store)
    (run,) = mlflow.search_runs(experiment_names=["review-test"], output_format="list")
    assert run.data.tags["medssl.stage"] == "review-export"
    assert run.data.metrics["labels.normal"] == 2 and run.data.metrics["labels.abnormal"] == 2
    assert run.data.metrics["readers"] == 2
    assert [m for m in run.data.metrics if m.startswith("kappa.")] and "ann" not in str(run.data)
    assert run.data.params["review.readers"] == "3 reader(s)"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "review-labels"


def test_a_review_without_its_manifest_or_readers_is_one_error_line(reviewed, tmp_path):
    (tmp_path / "none.yaml").write_text("review: {}\n")
    result = CliRunner().invoke(app, ["review", "export", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "error (review): no manifest given" in result.output
    manifest = reviewed["out"] / "manifest.parquet"
    (tmp_path / "nobody.yaml").write_text(
        f"ingest: {{pseudonym_key: {TEST_KEY}}}\nreview: {{manifest: {manifest}, database: 'sqlite://'}}\n"
    )
    result = CliRunner().invoke(app, ["review", "--config", str(tmp_path / "nobody.yaml")])
    assert result.exit_code == 2 and "error (review): no readers" in result.output
