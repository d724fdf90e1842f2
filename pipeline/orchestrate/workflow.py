"""The whole pipeline in one call: [review export] -> ingest -> pretrain -> finetune -> curve -> evaluate -> promote.

One MLflow parent run holds one nested run per stage. Each stage's input comes from the stage before (the
manifest ingest wrote, the encoder pretrain registered, the detector finetune registered), so the config
only needs the sources, the label CSVs and the settings. A stage whose inputs are unchanged is skipped and
says so: ingest converts only new or changed files, pretrain finds its finished run by its fingerprint, and
finetune, evaluate and promote are skipped when the digest of their settings and inputs equals the one
recorded in ``run-state.json`` after their last run. ``force`` redoes the stages it names.

With ``review.feed`` the loop closes: the review database's labels are exported first into
``review-export/labels.csv`` under the run's folder, and that file is ``finetune.labels`` for every stage
(finetune trains on it, pretrain keeps its validation part out); the detector's run is tagged with the
export's run (``medssl.review_export_run``) and logs the CSV as its ``labels`` dataset input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.atomic import write_text
from pipeline.config import Config, PretrainConfig
from pipeline.curve import run_curve
from pipeline.data.items import digest, items, scans
from pipeline.data.labelled import excluded_scans, labelled_items, validation_split
from pipeline.data.manifest import read_manifest, union_manifest
from pipeline.errors import DataError, LabelsError, WorkflowError
from pipeline.evaluate import run_evaluate
from pipeline.finetune import run_finetune
from pipeline.ingest import run_ingest
from pipeline.pretrain import run_pretrain
from pipeline.promote import run_promote
from pipeline.registry.store import CHAMPION, alias_version, detector_name
from pipeline.review import run_review_export
from pipeline.review.export import LABELS_TAG
from pipeline.tracking import find_run, log_metrics, stage_run

STAGES = ("ingest", "pretrain", "finetune", "curve", "evaluate", "promote")


@dataclass
class WorkflowResult:
    """What each stage did (``ran`` or ``skipped: <why>``) and where its output is."""

    state: Path
    outcome: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


def _file_digest(path: Path | None) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path is not None and Path(path).is_file() else ""


def _weights(model: str) -> str:
    """What names a model's weights: a registry URI (its versions are immutable) or a file's digest, so a
    stage fed a file that was written again does not take the old one's outputs as its own."""
    return model if model.startswith("models:/") else _file_digest(Path(model))


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _State:
    """``run-state.json``: each stage's input digest and outputs after its last completed run."""

    def __init__(self, path: Path, force: Iterable[str]) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
        self.force = set(force)

    def unchanged(self, stage: str, key: str) -> dict[str, Any] | None:
        saved = self.data.get(stage)
        return saved["outputs"] if saved and saved["key"] == key and stage not in self.force else None

    def record(self, stage: str, key: str, outputs: dict[str, Any]) -> None:
        self.data[stage] = {"key": key, "outputs": outputs}
        write_text(self.path, json.dumps(self.data, indent=2, default=str))


class Steps:
    """One pipeline run's wiring: each stage as one method, fed by what the stage before returned.

    ``out`` holds every stage's output folder and ``run-state.json``; the ``medssl run`` command chains the
    methods in one process, the weekly Airflow DAG calls one per task and passes the returned paths and URIs
    between tasks."""

    def __init__(self, config: Config, console: Console, out: Path, force: Iterable[str] = ()) -> None:
        unknown = set(force) - set(STAGES)
        if unknown:
            raise WorkflowError(f"--force: no stage {', '.join(sorted(unknown))} (stages: {', '.join(STAGES)})")
        if "ingest" in force:
            raise WorkflowError(
                "--force ingest: ingest always redoes what is new or changed; to convert everything again, "
                "remove ingest.out (or run medssl ingest into a fresh folder)"
            )
        if config.review.feed:  # the readers' labels replace the configured ones, in every stage
            fine = config.finetune.model_copy(update={"labels": out / "review-export" / "labels.csv"})
            config = config.model_copy(update={"finetune": fine})
        if config.finetune.labels is None or config.evaluate.labels is None:
            raise WorkflowError("run needs finetune.labels (training labels) and evaluate.labels (a held-out set)")
        self.config, self.console, self.out = config, console, out
        self.state = _State(out / "run-state.json", force)
        self.result = WorkflowResult(self.state.path)
        self._digests: dict[Path, str] = {}

    def _cached(self, stage: str, key: Callable[[], str], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``stage`` unless its inputs' key is the recorded one; either way return its outputs. The key is
        recorded as the stage leaves its inputs (promote moves the aliases it reads)."""
        if (outputs := self.state.unchanged(stage, key())) is not None:
            self.result.outcome[stage] = "skipped: inputs unchanged"
            self.console.print(f"[dim]{stage}: inputs unchanged since the last run, skipped[/]")
        else:
            outputs = run()
            self.state.record(stage, key(), outputs)
            self.result.outcome[stage] = "ran"
        self.result.outputs.update({f"{stage}.{k}": str(v) for k, v in outputs.items()})
        return outputs

    def _data(self, manifest: Path) -> str:
        """Digest of the scans the training stages read from ``manifest``; read once per run (finetune and
        curve both key on it)."""
        if manifest not in self._digests:
            pre = self.config.pretrain
            rows = items(read_manifest(manifest), manifest.parent, pre.spatial_dims, pre.slices_per_volume)
            self._digests[manifest] = digest(rows)
        return self._digests[manifest]

    def review_export(self) -> Path | None:
        """With ``review.feed``, the review database's labels into the CSV finetune trains on (``review.out``
        is set aside for the page's own exports); None without."""
        if not self.config.review.feed:
            return None
        labels = self.config.finetune.labels
        review = self.config.review.model_copy(update={"out": labels})
        done = run_review_export(self.config.model_copy(update={"review": review}), self.console)
        self.result.outcome["review"] = "ran"
        self.result.outputs["review.labels"] = str(done.out)
        return done.out

    def ingest(self) -> Path:
        """Convert what is new or changed in ``ingest.sources``; the manifest path."""
        ingested = run_ingest(self.config, self.console)
        self.result.outcome["ingest"] = "ran" if ingested.converted else "skipped: no new or changed files"
        self.result.outputs["ingest.manifest"] = str(ingested.manifest)
        return ingested.manifest

    def validation(self, manifest: Path) -> Path | None:
        """The validation part finetune's split keeps back (the scans its AUROC is measured on), as a
        manifest of those rows for ``pretrain.exclude``; None when there is none (one class only, or no
        scan matched). The same items and split as ``run_finetune`` makes."""
        pre, fine = self.config.pretrain, self.config.finetune
        try:
            found = labelled_items(
                manifest,
                fine.labels,
                self.config.ingest.secret(),
                pre.spatial_dims,
                pre.slices_per_volume,
                self.console,
                held=excluded_scans(manifest, self._finetune_exclude(), self.config.ingest.secret(), self.console),
            )
            held = scans(validation_split(found, fine.val_fraction, fine.seed)[1])
        except LabelsError:  # an unreadable CSV is the user's to fix
            raise
        except DataError:
            return None
        return union_manifest(self.out / "held-out" / "validation.parquet", [(manifest, held)])[0]

    def _judged(self, *more: Path | None) -> list[Path]:
        """The label CSVs of the scans evaluate and promote judge models on (and ``more``): what no stage
        that learns from unlabelled scans may see."""
        listed = (self.config.evaluate.labels, self.config.promote.labels, *more)
        return list(dict.fromkeys(p for p in listed if p is not None))

    def _finetune_exclude(self) -> list[Path]:
        """What finetune may neither train on, even labelled, nor take as unlabelled (semi mode)."""
        return [*self.config.finetune.exclude, *self._judged()]

    def pretrain_config(self, manifest: Path) -> PretrainConfig:
        """The pretrain settings of this run: the manifest, the output folder, and in ``exclude`` what no
        encoder may see, even unlabelled: the evaluation set's scans and finetune's validation part.
        ``medssl pretrain`` with these settings trains on the same scans."""
        cfg = self.config.pretrain
        exclude = [*cfg.exclude, *self._judged(self.validation(manifest))]
        return cfg.model_copy(
            update={"manifest": manifest, "out": cfg.out or self.out / "pretrain", "exclude": exclude}
        )

    def pretrain(self, manifest: Path) -> str:
        """The encoder's registry URI (or file when tracking is off); a finished run is found by its fingerprint."""
        cfg = self.pretrain_config(manifest)
        if "pretrain" in self.state.force:
            (cfg.out / "pretrain.json").unlink(missing_ok=True)
            (cfg.out / "checkpoint.pt").unlink(missing_ok=True)
        done = run_pretrain(self.config.model_copy(update={"pretrain": cfg}), self.console)
        self.result.outcome["pretrain"] = (
            "skipped: finished run with these settings and data" if done.skipped else "ran"
        )
        encoder = done.model_uri or str(done.encoder)
        self.result.outputs["pretrain.encoder"] = encoder
        return encoder

    def finetune(self, manifest: Path, encoder: str) -> str:
        """The detector's registry URI (registered as challenger); skipped when settings, data, encoder weights
        and labels are those of the last run."""
        fine = self.config.finetune
        fine = fine.model_copy(
            update={
                "manifest": manifest,
                "encoder": encoder,
                "out": fine.out or self.out / "finetune",
                "exclude": self._finetune_exclude(),
            }
        )
        inputs = (fine.model_dump(mode="json"), self._data(manifest), _weights(encoder), _file_digest(fine.labels))

        def finetune() -> dict[str, Any]:
            tags = self._lineage(inputs[3])
            done = run_finetune(self.config.model_copy(update={"finetune": fine}), self.console, tags)
            return {"detector": done.model_uri or str(done.detector), "val_auroc": done.mean}

        return self._cached("finetune", lambda: _key(*inputs), finetune)["detector"]

    def _lineage(self, digest: str) -> dict[str, str]:
        """Tags naming the review export the training labels (of ``digest``) came from, found by that digest
        so a DAG task finds the run another task made; none when the labels are the configured ones."""
        if not self.config.review.feed:
            return {}
        export = find_run(self.config, "review-export", LABELS_TAG, digest)
        return {"medssl.labels_source": "review", "medssl.review_export_run": export or "unknown"}

    def curve(self, manifest: Path, encoder: str) -> dict[str, Any]:
        """The label-efficiency curve of ``encoder`` against scratch, when ``curve.budgets`` names budgets."""
        if not self.config.curve.budgets:
            self.result.outcome["curve"] = "skipped: no curve.budgets"
            return {}
        fine = self.config.finetune.model_copy(
            update={
                "manifest": manifest,
                "encoder": encoder,
                "exclude": self._finetune_exclude(),
            }
        )
        cfg = self.config.curve.model_copy(update={"out": self.config.curve.out or self.out / "curve"})
        config = self.config.model_copy(update={"finetune": fine, "curve": cfg})

        def curve() -> dict[str, Any]:
            return {"figure": run_curve(config, self.console).figure}

        key = _key(
            fine.model_dump(mode="json"),
            cfg.model_dump(mode="json"),
            self._data(manifest),
            _weights(encoder),
            _file_digest(fine.labels),
        )
        return self._cached("curve", lambda: key, curve)

    def evaluate(self, detector: str) -> dict[str, Any]:
        """Metrics of ``detector`` on ``evaluate.labels`` (metrics.json, scores.csv, roc.png)."""
        ev = self.config.evaluate
        ev = ev.model_copy(update={"model": detector, "out": ev.out or self.out / "evaluate"})

        def evaluate() -> dict[str, Any]:
            done = run_evaluate(self.config.model_copy(update={"evaluate": ev}), self.console)
            return {"metrics": ev.out / "metrics.json", "auroc": done.metrics["auroc"]["value"]}

        key = _key(ev.model_dump(mode="json"), _weights(detector), _file_digest(ev.labels))
        return self._cached("evaluate", lambda: key, evaluate)

    def promote(self, detector: str) -> dict[str, Any]:
        """Move ``champion`` to ``detector`` (this run's finetune, by its registry version: a rerun gates the
        same version whatever ``challenger`` names by then) when it wins on the evaluation set."""
        if not self.config.tracking.enabled:
            self.result.outcome["promote"] = "skipped: tracking is off (the registry holds the aliases)"
            return {}
        name = detector_name(self.config.finetune.name)
        if not detector.startswith(f"models:/{name}/"):
            self.result.outcome["promote"] = "skipped: this run's detector is not registered"
            return {}
        cfg = self.config.promote.model_copy(
            update={
                "name": name,
                "challenger": detector.removeprefix(f"models:/{name}/"),
                "labels": self.config.promote.labels or self.config.evaluate.labels,
                "out": self.config.promote.out or self.out / "promotion",
            }
        )

        def key() -> str:
            return _key(
                cfg.model_dump(mode="json"),
                alias_version(cfg.name, CHAMPION, self.config.tracking),
                _file_digest(cfg.labels),
            )

        def promote() -> dict[str, Any]:
            done = run_promote(self.config.model_copy(update={"promote": cfg}), self.console)
            return {"decision": cfg.out / "decision.json", "promoted": done.promoted, "reason": done.reason}

        return self._cached("promote", key, promote)


def run_workflow(config: Config, console: Console, force: Iterable[str] = ()) -> WorkflowResult:
    """Run every stage in order, each fed by the one before; see the module docstring."""
    if config.ingest.out is None:
        raise WorkflowError("run needs ingest.out: the folder every stage's output goes under")
    steps = Steps(config, console, config.ingest.out, force)
    with stage_run(config, "pipeline"):
        steps.review_export()
        manifest = steps.ingest()
        encoder = steps.pretrain(manifest)
        detector = steps.finetune(manifest, encoder)
        steps.curve(manifest, encoder)
        steps.evaluate(detector)
        steps.promote(detector)
        log_metrics({f"skipped_{s}": float(o.startswith("skipped")) for s, o in steps.result.outcome.items()})
    return steps.result
