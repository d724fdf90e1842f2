"""The pretrain stage: a self-supervised encoder from the accepted rows of an ingest manifest.

Inputs are files with digests (the manifest, the config); outputs are files in ``pretrain.out``
(``checkpoint.pt`` after every epoch, ``encoder.pt`` and ``pretrain.json`` at the end) and, with tracking,
one MLflow run and a registered ``<name>-encoder``. A killed run resumes from its checkpoint and its MLflow
run; a finished one with the same fingerprint is not run again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from monai.data import ThreadDataLoader
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from pipeline.atomic import atomic_path, write_text
from pipeline.checkpoint import read_state, restore_state, save_state
from pipeline.config import Config, PretrainConfig, TrackingConfig
from pipeline.data.augment import views
from pipeline.data.items import Item, digest
from pipeline.data.screen import SkippedFile, reason_counts
from pipeline.data.transforms import KEY, centred
from pipeline.device import DeviceSetup, init_distributed, resolve
from pipeline.errors import DataError, PretrainError, RegistryError
from pipeline.pretrain.loop import seed_epoch, train_epoch
from pipeline.pretrain.model import build_model, fingerprint, learning_rate, start_from
from pipeline.pretrain.monitor import knn_monitor
from pipeline.pretrain.scans import training_items
from pipeline.pretrain.views import ViewPairs, dataset
from pipeline.registry.store import ADAPTED, encoder_name, log_model, pin_model
from pipeline.report import report_table
from pipeline.tracking import log_artifact, log_metrics, log_table_input, stage_run


@dataclass(frozen=True)
class PretrainResult:
    out: Path
    encoder: Path
    model_uri: str | None
    run_id: str | None
    method: str
    dataset_digest: str
    items: int
    epochs: int
    resumed_from: int
    loss: float
    knn_auroc: float | None
    images_per_s: float
    files_skipped: dict[str, int] = field(default_factory=dict)  # {reason: files} set aside by the screen
    skipped: bool = False


def _finished(out: Path, fp: str, published: str | None) -> PretrainResult | None:
    """The result of an earlier run with this fingerprint, if it finished (its encoder is on disk) and was
    published as this run would be: ``published`` is the start of the model URI it needs (None: tracking
    off). A run finished with tracking off, or not registered, is published again from its last checkpoint
    (a resume with no epoch left), rather than found done and never registered."""
    summary = out / "pretrain.json"
    if not summary.is_file():
        return None
    done = json.loads(summary.read_text(encoding="utf-8"))
    if done.pop("fingerprint", None) != fp or not Path(done["encoder"]).is_file():
        return None
    if published is not None and not (done["model_uri"] and done["model_uri"].startswith(published)):
        return None
    done.update(out=Path(done["out"]), encoder=Path(done["encoder"]), skipped=True)
    return PretrainResult(**done)


def _resumable(path: Path, fp: str, console: Console, setup: DeviceSetup) -> dict[str, Any] | None:
    """The checkpoint's state if it belongs to this fingerprint. Another run's checkpoint is set aside by
    the main process alone, before any process reads it: each renaming it, all but one would find it gone,
    and a process that found it gone would skip the wait the others are in."""
    state = read_state(path) if setup.is_main and path.is_file() else None
    if state is not None and (old := state.get("fingerprint")) != fp:
        aside = path.with_name(f"checkpoint-{old or 'old'}.pt")
        path.rename(aside)
        console.print(f"Existing checkpoint is from other settings or data: kept as {aside.name}, starting over.")
        state = None
    if setup.distributed:
        dist.barrier()
        if not setup.is_main:  # what rank 0 left in place is this run's
            state = read_state(path) if path.is_file() else None
    return state


def _loader(
    data: Any, pairs: ViewPairs, batch: int, setup: DeviceSetup, seed: int
) -> tuple[ThreadDataLoader, Any, torch.Generator]:
    order = torch.Generator()
    common = {"batch_size": batch, "drop_last": True, "collate_fn": pairs}
    if setup.distributed:
        sampler = DistributedSampler(data, setup.world_size, setup.rank, shuffle=True, seed=seed, drop_last=True)
        return ThreadDataLoader(data, sampler=sampler, **common), sampler, order
    return ThreadDataLoader(data, shuffle=True, generator=order, **common), None, order


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]pretrain[/] epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


def run_pretrain(config: Config, console: Console) -> PretrainResult:
    """Pretrain ``config.pretrain.method`` on the manifest's accepted rows; log, save and register the encoder."""
    cfg = config.pretrain
    if cfg.manifest is None:
        raise PretrainError("no manifest given: pass --manifest or set pretrain.manifest")
    train, skipped = training_items(cfg.manifest, cfg, config.ingest.secret(), console)
    if not train:
        wanted = "volumes (depth > 1)" if cfg.spatial_dims == 3 else "images or volumes"
        unusable = f" ({len(skipped)} unusable: {reason_counts(skipped)})" if skipped else ""
        raise DataError(f"{cfg.manifest}: no usable {wanted} for spatial_dims={cfg.spatial_dims}{unusable}")
    data_digest = digest(train)
    out = cfg.out or cfg.manifest.parent / "pretrain"
    trained = cfg
    if cfg.init is not None:  # the version it names now: an alias that has moved since means another run
        try:
            name, version, ref = pin_model(cfg.init, config.tracking)
        except RegistryError as exc:
            raise PretrainError(f"pretrain.init: {exc}") from None
        cfg = cfg.model_copy(update={"init": ref})  # loaded, and named in the lineage, as that version
        trained = cfg.model_copy(update={"init": f"{name}@{version}"})  # a file by its digest, wherever it lies
    fp = fingerprint(trained, data_digest)
    published = (
        (f"models:/{encoder_name(cfg.name)}/" if cfg.register_encoder else "") if config.tracking.enabled else None
    )
    if (done := _finished(out, fp, published)) is not None:
        return done
    setup = resolve(cfg.device, cfg.amp)
    init_distributed(setup)
    if len(train) // setup.world_size < 2:
        raise DataError(f"{cfg.manifest}: {len(train)} training items; each process needs at least 2")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    if cfg.init is not None:
        start_from(model, cfg.init, config.tracking)
    model = model.to(setup.device)
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.amp and setup.device.type == "cuda")  # fp16
    state = _resumable(out / "checkpoint.pt", fp, console, setup)
    parts = {"model": model, "optimiser": optimiser, "scaler": scaler}
    if state:
        restore_state(state, parts)
    start = int(state["epoch"]) if state else 0
    run_id = state.get("run_id") if state else None

    pairs = ViewPairs(views(cfg.spatial_dims, cfg.size, cfg.method, **cfg.views.model_dump()))
    data = dataset(train, cfg.spatial_dims, cfg.size, setup.device, cfg.cache_rate, cfg.cache_workers, cfg.volume_side)
    batch = min(cfg.batch_size, len(train) // setup.world_size)
    loader, sampler, order = _loader(data, pairs, batch, setup, cfg.seed)
    net: nn.Module = model
    if setup.distributed:
        if setup.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = DistributedDataParallel(net, device_ids=[setup.local_rank] if setup.device.type == "cuda" else None)
    monitor = knn_monitor(cfg, train, console) if setup.is_main else None
    steps = len(loader)
    total, warmup = steps * cfg.epochs, steps * cfg.warmup_epochs
    tracked = config if setup.is_main else config.model_copy(update={"tracking": TrackingConfig(enabled=False)})
    tags = {"medssl.method": cfg.method, "medssl.dataset_digest": data_digest}
    if skipped and setup.is_main:
        _write_skipped(out / "skipped.csv", skipped)
    # A run killed after its last checkpoint but before publishing resumes with no epoch left to run: the
    # checkpoint's figures are the ones it publishes.
    last = state or {}
    losses, knn, speed = [last.get("loss", float("nan"))], last.get("knn_auroc"), last.get("images_per_s", 0.0)

    with stage_run(tracked, "pretrain", tags=tags, run_id=run_id) as run, _progress(console, setup.is_main) as bar:
        run_id = run.info.run_id if run is not None else None
        if run is not None and start == 0:
            table = pd.DataFrame([{k: v for k, v in it.items() if k != "label"} for it in train])
            log_table_input(table, cfg.manifest, f"pretrain-{data_digest}", "pretrain")
            log_metrics({"files_skipped": float(len(skipped))}, step=0)
            if skipped:
                log_artifact(out / "skipped.csv")
        task = bar.add_task("pretrain", total=total, completed=start * steps, epoch=start + 1, loss=float("nan"))
        for epoch in range(start, cfg.epochs):
            seed_epoch(cfg.seed, epoch, order, data.transform, pairs)
            if sampler is not None:
                sampler.set_epoch(epoch)

            def before(i: int, epoch: int = epoch) -> None:
                step = epoch * steps + i
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate(step, total, warmup, cfg.lr)
                model.set_progress(step / total)

            if setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(setup.device)
            began = time.perf_counter()
            losses = train_epoch(
                net, loader, optimiser, scaler, setup, before, lambda v: bar.update(task, advance=1, loss=v)
            )
            speed = steps * batch * setup.world_size / (time.perf_counter() - began)
            bar.update(task, epoch=min(epoch + 2, cfg.epochs))
            metrics = {"loss": float(np.mean(losses)), "lr": optimiser.param_groups[0]["lr"], "images_per_s": speed}
            if setup.device.type == "cuda":
                metrics["gpu_memory_gib"] = torch.cuda.max_memory_allocated(setup.device) / 2**30
            if monitor is not None and ((epoch + 1) % cfg.monitor.every == 0 or epoch + 1 == cfg.epochs):
                knn = metrics["knn_auroc"] = monitor(model, setup.device)
            log_metrics(metrics, step=epoch + 1)
            if setup.is_main:
                save_state(
                    out / "checkpoint.pt",
                    parts,
                    epoch=epoch + 1,
                    fingerprint=fp,
                    run_id=run_id,
                    loss=metrics["loss"],
                    knn_auroc=knn,
                    images_per_s=speed,
                )
            if setup.distributed:
                dist.barrier()

        result = PretrainResult(
            out=out,
            encoder=out / "encoder.pt",
            model_uri=None,
            run_id=run_id,
            method=cfg.method,
            dataset_digest=data_digest,
            items=len(train),
            epochs=cfg.epochs,
            resumed_from=start,
            loss=float(np.mean(losses)),
            knn_auroc=knn,
            images_per_s=speed,
            files_skipped=reason_counts(skipped),
        )
        if setup.is_main:
            result = _publish(model, result, cfg, fp, train[0])
    return result


def _write_skipped(path: Path, skipped: list[SkippedFile]) -> None:
    """The set-aside files (manifest output paths, which carry no patient identifier) and their reasons."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, pd.DataFrame([asdict(s) for s in skipped]).to_csv(index=False))


def _publish(model: nn.Module, result: PretrainResult, cfg: PretrainConfig, fp: str, item: Item) -> PretrainResult:
    """Save the encoder beside the checkpoint, log and register it, and write the stage's summary."""
    encoder = model.encoder.cpu().eval()
    # What a later stage needs to feed it, carried by the module itself (file or registry alike).
    encoder.input_spec = {"spatial_dims": cfg.spatial_dims, "size": cfg.size, "volume_side": cfg.volume_side}
    if cfg.init is not None:  # continued on these scans: adapted to them (the promotion gate reads it)
        encoder.adapted_to = result.dataset_digest
    with atomic_path(result.encoder) as tmp:
        torch.save(encoder, tmp)
    example = np.asarray(centred(cfg.spatial_dims, cfg.size, cfg.volume_side)(dict(item))[KEY], np.float32)[None]
    tags = {
        "method": cfg.method,
        "dataset_digest": result.dataset_digest,
        "spatial_dims": str(cfg.spatial_dims),
        "input_size": str(cfg.size),
        "in_channels": "1",
    }
    alias = cfg.method
    if cfg.init is not None:  # an adapted encoder gets its own alias: @<method> stays the archive's encoder
        tags.update(adapted_from=cfg.init, adapted_to=result.dataset_digest)
        alias = f"{cfg.method}{ADAPTED}"
    uri = log_model(encoder, example, encoder_name(cfg.name), cfg.register_encoder, tags, alias=alias)
    result = replace(result, model_uri=uri)
    summary = {**asdict(result), "out": str(result.out), "encoder": str(result.encoder), "fingerprint": fp}
    summary.pop("skipped")
    write_text(result.out / "pretrain.json", json.dumps(summary, indent=2))
    log_artifact(result.out / "pretrain.json")
    return result


def summary_table(result: PretrainResult) -> Table:
    rows = [
        ("method", result.method),
        ("training items", str(result.items)),
        ("files skipped", ", ".join(f"{r} {n}" for r, n in result.files_skipped.items()) or "0"),
        ("dataset digest", result.dataset_digest),
        ("epochs", f"{result.epochs}" + (f" (resumed after {result.resumed_from})" if result.resumed_from else "")),
        ("final loss", f"{result.loss:.4f}"),
        ("kNN AUROC", "-" if result.knn_auroc is None else f"{result.knn_auroc:.3f}"),
        ("images/s", f"{result.images_per_s:.1f}"),
        ("encoder", str(result.encoder)),
        ("registered", result.model_uri or "-"),
    ]
    return report_table("pretrain" + (" (already done: nothing to train)" if result.skipped else ""), rows)
