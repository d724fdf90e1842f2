"""The label CSV the page's decisions add up to, in the form ``medssl finetune --labels`` reads.

Rows are ``series_key,label`` (1 = abnormal): the page knows scans only by key, and a source path could
name a patient. The file is written atomically; with tracking on, each export is an MLflow run
(``review-export``) with the CSV as a dataset input, the counts per label, the number of readers and each
pair's kappa, readers named by their pseudonyms; the run is tagged with the CSV's sha256
(``medssl.labels_sha256``), which is how a detector trained on the file finds the export it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.review.agreement import Pair, final_labels, kappas
from pipeline.review.store import current
from pipeline.tracking import log_metrics, log_table_input, stage_run

LABELS_TAG = "medssl.labels_sha256"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    normal: int
    abnormal: int
    readers: int
    pairs: list[Pair]
    run_id: str | None = None


def export_labels(config: Config, engine: Engine, out: Path) -> ExportResult:
    decisions = current(engine)
    labels = final_labels(decisions)
    table = pd.DataFrame({"series_key": list(labels), "label": list(labels.values())}, columns=["series_key", "label"])
    csv = table.to_csv(index=False)
    write_text(out, csv)
    pairs = kappas(decisions)
    result = ExportResult(
        out, int((table.label == 0).sum()), int((table.label == 1).sum()), len({d.reader for d in decisions}), pairs
    )
    tags = {LABELS_TAG: hashlib.sha256(csv.encode()).hexdigest()}
    with stage_run(config, "review-export", tags=tags) as run:
        if run is not None:
            result = replace(result, run_id=run.info.run_id)
            log_table_input(table, out, "review-labels", "labels")
            metrics = {"labels.normal": result.normal, "labels.abnormal": result.abnormal, "readers": result.readers}
            metrics |= {f"kappa.{p.a}.{p.b}": p.kappa for p in pairs if p.kappa is not None}
            log_metrics(metrics)
    return result
