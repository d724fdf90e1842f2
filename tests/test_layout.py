"""The house rules of docs/ARCHITECTURE.md, read off the code: stages meet only through ``run_<stage>``,
``pipeline/data`` and ``models`` import no stage, one error family, no module too long to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PIPELINE = ROOT / "pipeline"
STAGES = (
    *("ingest", "pretrain", "finetune", "curve", "evaluate", "promote", "score", "publish", "suggest", "adapt"),
    "review",
)
# What a stage offers the others: its stage function, its result type, and the summary the CLI prints.
PUBLIC = {
    # Ingest also offers what publishing results back needs: its DICOMweb client and the way back to a row's files.
    "ingest": {"run_ingest", "IngestResult", "summary_table", "NOT_DICOM", "SeriesRow", "series_sources"}
    | {"connect", "failure_reason", "quiet_http_logs", "safe_url"},
    "pretrain": {"run_pretrain", "PretrainResult", "summary_table"},
    "finetune": {"run_finetune", "FinetuneResult", "summary_table"},
    "evaluate": {"run_evaluate", "EvaluateResult", "summary_table"},
}


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``path``, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def _package(path: Path) -> str:
    return path.relative_to(PIPELINE).parts[0].removesuffix(".py")


@pytest.mark.parametrize("stage", sorted(PUBLIC))
def test_other_modules_reach_a_training_stage_only_through_its_stage_function(stage):
    wrong = [
        f"{path.relative_to(ROOT)}: from {module} import {', '.join(names)}"
        for path in _modules(PIPELINE)
        if _package(path) != stage
        for module, names in _imports(path)
        if module.startswith(f"pipeline.{stage}") and (module != f"pipeline.{stage}" or set(names) - PUBLIC[stage])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_data_layer_imports_no_stage_and_models_nothing_of_pipeline():
    above = {*STAGES, "orchestrate", "cli", "inference", "registry", "tracking", "report"}
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _modules(PIPELINE / "data")
        for module, _ in _imports(path)
        if module.startswith("pipeline.") and module.split(".")[1] in above
    ]
    wrong += [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _modules(ROOT / "models")
        for module, _ in _imports(path)
        if module.split(".")[0] == "pipeline"
    ]
    assert not wrong, "\n".join(wrong)


def test_every_error_a_user_can_fix_is_a_medssl_error_and_the_cli_catches_the_base_alone():
    defined = [
        f"{path.relative_to(ROOT)}: {node.name}"
        for path in _modules(PIPELINE)
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Error")
    ]
    assert not defined, "error classes belong in pipeline/errors.py:\n" + "\n".join(defined)
    named = {
        node.id
        for path in _modules(PIPELINE / "cli")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Name) and node.id.endswith("Error")
    }
    assert named == {"MedsslError"}


def test_config_shapes_are_checked_in_the_config_alone():
    raising = [
        str(path.relative_to(ROOT))
        for path in _modules(PIPELINE)
        if path.parent.name != "config"
        and path.name != "errors.py"
        and "ConfigError(" in path.read_text(encoding="utf-8")
    ]
    assert not raising, raising


def test_no_module_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for folder in ("pipeline", "models", "dags")
        for path in _modules(ROOT / folder)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, long
