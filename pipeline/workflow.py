"""The whole pipeline in one call: ingest -> pretrain -> finetune -> evaluate -> promote.

One MLflow parent run holds one nested run per stage. Each stage's input comes from the stage before (the
manifest ingest wrote, the encoder pretrain registered, the detector finetune registered), so the config
only needs the sources, the label CSVs and the settings. A stage whose inputs are unchanged is skipped and
says so: ingest converts only new or changed files, pretrain finds its finished run by its fingerprint, and
finetune, evaluate and promote are skipped when the digest of their settings and inputs equals the one
recorded in ``run-state.json`` after their last run. ``force`` redoes the stages it names.
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
from pipeline.config import Config, ConfigError
from pipeline.evaluate.run import run_evaluate
from pipeline.finetune.run import run_finetune
from pipeline.ingest import run_ingest
from pipeline.pretrain.rows import digest, items, read_manifest
from pipeline.pretrain.run import run_pretrain
from pipeline.promote import CHALLENGER, CHAMPION, run_promote
from pipeline.tracking import alias_version, log_metrics, stage_run

STAGES = ("ingest", "pretrain", "finetune", "evaluate", "promote")


@dataclass
class WorkflowResult:
    """What each stage did (``ran`` or ``skipped: <why>``) and where its output is."""

    state: Path
    outcome: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


def _file_digest(path: Path | None) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path is not None and Path(path).is_file() else ""


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


def _cached(
    state: _State,
    result: WorkflowResult,
    stage: str,
    key: Callable[[], str],
    run: Callable[[], dict[str, Any]],
    console: Console,
) -> dict[str, Any]:
    """Run ``stage`` unless its inputs' key is the recorded one; either way return its outputs. The key is
    recorded as the stage leaves its inputs (promote moves the aliases it reads)."""
    if (outputs := state.unchanged(stage, key())) is not None:
        result.outcome[stage] = "skipped: inputs unchanged"
        console.print(f"[dim]{stage}: inputs unchanged since the last run, skipped[/]")
    else:
        outputs = run()
        state.record(stage, key(), outputs)
        result.outcome[stage] = "ran"
    result.outputs.update({f"{stage}.{k}": str(v) for k, v in outputs.items()})
    return outputs


def run_workflow(config: Config, console: Console, force: Iterable[str] = ()) -> WorkflowResult:
    """Run every stage in order, each fed by the one before; see the module docstring."""
    unknown = set(force) - set(STAGES)
    if unknown:
        raise ConfigError(f"--force: no stage {', '.join(sorted(unknown))} (stages: {', '.join(STAGES)})")
    if config.ingest.out is None:
        raise ConfigError("run needs ingest.out: the folder every stage's output goes under")
    if config.finetune.labels is None or config.evaluate.labels is None:
        raise ConfigError("run needs finetune.labels (training labels) and evaluate.labels (a held-out set)")
    out = config.ingest.out
    state = _State(out / "run-state.json", force)
    result = WorkflowResult(state.path)

    with stage_run(config, "pipeline"):
        ingested = run_ingest(config, console)
        result.outcome["ingest"] = "ran" if ingested.converted else "skipped: no new or changed files"
        manifest = ingested.manifest
        result.outputs["ingest.manifest"] = str(manifest)
        pre = config.pretrain
        data = digest(items(read_manifest(manifest), manifest.parent, pre.spatial_dims, pre.slices_per_volume))

        pretrain_cfg = pre.model_copy(update={"manifest": manifest, "out": pre.out or out / "pretrain"})
        if "pretrain" in state.force:
            (pretrain_cfg.out / "pretrain.json").unlink(missing_ok=True)
            (pretrain_cfg.out / "checkpoint.pt").unlink(missing_ok=True)
        pretrained = run_pretrain(config.model_copy(update={"pretrain": pretrain_cfg}), console)
        result.outcome["pretrain"] = (
            "skipped: finished run with these settings and data" if pretrained.skipped else "ran"
        )
        encoder = pretrained.model_uri or str(pretrained.encoder)
        result.outputs["pretrain.encoder"] = encoder

        fine = config.finetune.model_copy(
            update={"manifest": manifest, "encoder": encoder, "out": config.finetune.out or out / "finetune"}
        )
        inputs = (fine.model_dump(mode="json"), data, _file_digest(pretrained.encoder), _file_digest(fine.labels))

        def finetune() -> dict[str, Any]:
            done = run_finetune(config.model_copy(update={"finetune": fine}), console)
            return {"detector": done.model_uri or str(done.detector), "val_auroc": done.mean}

        detector = _cached(state, result, "finetune", lambda: _key(*inputs), finetune, console)["detector"]

        evaluation = config.evaluate.model_copy(
            update={"model": detector, "out": config.evaluate.out or out / "evaluate"}
        )

        def evaluate() -> dict[str, Any]:
            done = run_evaluate(config.model_copy(update={"evaluate": evaluation}), console)
            return {"metrics": evaluation.out / "metrics.json", "auroc": done.metrics["auroc"]["value"]}

        _cached(
            state,
            result,
            "evaluate",
            lambda: _key(evaluation.model_dump(mode="json"), _file_digest(evaluation.labels)),
            evaluate,
            console,
        )

        promotion = config.promote.model_copy(
            update={
                "name": f"{fine.name}-detector",
                "labels": config.promote.labels or evaluation.labels,
                "out": config.promote.out or out / "promotion",
            }
        )
        if not config.tracking.enabled:
            result.outcome["promote"] = "skipped: tracking is off (the registry holds the aliases)"
        else:

            def promote_key() -> str:
                versions = [alias_version(promotion.name, a, config.tracking) for a in (CHALLENGER, CHAMPION)]
                return _key(promotion.model_dump(mode="json"), versions, _file_digest(promotion.labels))

            def promote() -> dict[str, Any]:
                done = run_promote(config.model_copy(update={"promote": promotion}), console)
                return {"decision": promotion.out / "decision.json", "promoted": done.promoted, "reason": done.reason}

            _cached(state, result, "promote", promote_key, promote, console)
        log_metrics({f"skipped_{s}": float(o.startswith("skipped")) for s, o in result.outcome.items()})
    return result
