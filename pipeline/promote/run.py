"""The promote stage: the champion/challenger gate of the model registry.

``finetune`` registers every new detector as ``<name>@challenger``. Here both the challenger (or the version
``promote.challenger`` names: a scheduled run gates its own detector, whatever the alias says by then) and the current
``@champion`` are evaluated on the same labelled images (ones neither was trained on), and the champion
alias moves to the challenger only when it is better beyond chance: the paired 95 % interval of the AUROC
difference on those images has its lower bound above ``promote.margin``. With no champion yet, the
challenger becomes the first one. The decision, both evaluations and the reason are
written to ``decision.json`` and logged as one MLflow run, so every alias move can be traced.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.errors import PromoteError
from pipeline.evaluate import run_evaluate
from pipeline.inference import adapted_to
from pipeline.intervals import paired_difference
from pipeline.registry.store import CHALLENGER, CHAMPION, alias_version, load_model, set_alias
from pipeline.tracking import log_artifact, log_metrics, stage_run


@dataclass(frozen=True)
class PromoteResult:
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None
    challenger_auroc: float
    champion_auroc: float | None
    margin: float
    # challenger minus champion on the scans both were scored on, with its paired 95 % interval
    difference: dict[str, float] | None = None


def _evaluated(config: Config, name: str, version: str, out: Path, console: Console) -> tuple[float, pd.DataFrame]:
    """(AUROC, per-image scores) of one version on the promotion set (evaluate's own outputs)."""
    evaluate = config.evaluate.model_copy(
        update={
            "model": f"models:/{name}/{version}",
            "labels": config.promote.labels,
            "out": out / f"v{version}",
            "ingested": out / "ingested",
        }
    )
    result = run_evaluate(config.model_copy(update={"evaluate": evaluate}), console)
    return result.metrics["auroc"]["value"], pd.read_csv(result.out / "scores.csv")


def compare(challenger: pd.DataFrame, champion: pd.DataFrame, resamples: int, seed: int) -> dict[str, float]:
    """The paired AUROC difference on the images both scored (an image one of them could not score is out)."""
    named = challenger.columns[0]  # path, or series_key for a CSV that names scans so
    both = challenger.merge(champion, on=[named, "label"], suffixes=("_challenger", "_champion"))
    return paired_difference(both.label, both.score_challenger, both.score_champion, resamples, seed)


def decide(difference: dict[str, float] | None, margin: float) -> tuple[bool, str]:
    """Promote or not, and why, in words that go into the log: only when the lower bound of the paired
    interval clears the margin, so a challenger that is better by chance on this set stays a challenger."""
    if difference is None:
        return True, "no champion yet: the challenger becomes the first"
    d, low, high, n = difference["difference"], difference["ci_low"], difference["ci_high"], difference["scans"]
    measured = f"AUROC difference {d:+.4f} (paired 95 % CI {low:+.4f} to {high:+.4f}, {n} scans)"
    if low > margin:
        return True, f"{measured}: its lower bound clears the margin {margin}"
    return False, f"{measured}: its lower bound does not clear the margin {margin}"


def shift_gate(report: Path, max_shift: float, adapted: str | None) -> str | None:
    """Why the shift of the report's target site forbids this challenger, or None when it does not."""
    try:
        shift = json.loads(Path(report).read_text())
        shifted, auroc, p, target = shift["shifted"], shift["domain_auroc"], shift["mmd_p"], shift["target_digest"]
    except (OSError, ValueError, KeyError) as exc:
        raise PromoteError(f"promote.shift: {report} is not a readable shift.json ({exc})") from None
    if not shifted or auroc <= max_shift or adapted == target:
        return None
    return (
        f"target site {shift.get('target', '?')} has shifted (MMD p {p:.3g}, domain AUROC {auroc:.3f} > "
        f"{max_shift}) and the challenger was not adapted to it"
    )


def run_promote(config: Config, console: Console) -> PromoteResult:
    cfg = config.promote
    if cfg.labels is None:
        raise PromoteError("promote needs the label CSV of an evaluation set (--labels)")
    challenger = cfg.challenger or alias_version(cfg.name, CHALLENGER, config.tracking)
    if challenger is None:
        raise PromoteError(f"no {cfg.name}@{CHALLENGER} in the registry: run medssl finetune first")
    champion = alias_version(cfg.name, CHAMPION, config.tracking)
    out = cfg.out or Path("promotion")
    refusal = None
    if champion == challenger:  # recorded like any decision, so decision.json is this run's
        refusal = "the challenger is already the champion"
    elif cfg.shift is not None:
        module, tags = load_model(f"models:/{cfg.name}/{challenger}", config.tracking)
        refusal = shift_gate(cfg.shift, cfg.max_shift, adapted_to(module) or tags.get("adapted_to"))
    champion_auroc, difference = None, None
    if refusal is not None:
        challenger_auroc, promoted, reason = float("nan"), False, refusal
    else:
        challenger_auroc, challenger_scores = _evaluated(config, cfg.name, challenger, out, console)
        if champion is not None:
            champion_auroc, champion_scores = _evaluated(config, cfg.name, champion, out, console)
            difference = compare(challenger_scores, champion_scores, cfg.bootstrap, cfg.seed)
        promoted, reason = decide(difference, cfg.margin)
        # The registry has no compare-and-set: at least do not overwrite a champion that another promote put
        # in place while these two were evaluated, since this challenger was never compared with it.
        if promoted and (now := alias_version(cfg.name, CHAMPION, config.tracking)) != champion:
            promoted, reason = False, f"the champion moved to version {now} during this evaluation: promote again"
    result = PromoteResult(
        promoted, reason, challenger, champion, challenger_auroc, champion_auroc, cfg.margin, difference
    )
    tags = {"medssl.decision": "promoted" if promoted else "refused", "medssl.challenger_version": challenger}
    tags["medssl.reason"] = reason
    with stage_run(config, "promote", tags=tags):
        # The record first: a run killed before the alias moves decides the same again; one killed after it
        # would otherwise leave a champion without the reason, and its rerun would find nothing to decide.
        record = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(result).items()}
        write_text(out / "decision.json", json.dumps(record, indent=2))  # strict JSON: no bare NaN
        if promoted:
            set_alias(cfg.name, CHAMPION, challenger, config.tracking)
        log_metrics({"promoted": float(promoted)})
        if refusal is None:
            log_metrics({"challenger_auroc": challenger_auroc})
        if champion_auroc is not None:
            log_metrics({"champion_auroc": champion_auroc})
        if difference is not None:
            log_metrics({f"auroc_difference{'' if k == 'difference' else '_' + k}": v for k, v in difference.items()})
        log_artifact(out / "decision.json")
    return result
