"""The ingest stage: archive folders in, NIfTI volumes and ``manifest.parquet`` out.

Discovery (header-only reads) and conversion (one task per stack) run on Dask; grouping and the stack
checks run on the client, on small records. Every finished row goes to a journal as it arrives, so a run
that is killed loses at most the rows of its last seconds, and the next run redoes only what is missing.
With ``ingest.dicomweb.url`` set, new studies are first pulled from the PACS into a staging folder
(``pipeline.ingest.dicomweb``), which is then one more source.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import KilledWorker, as_completed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import tracking
from pipeline.cluster import dask_client
from pipeline.config import Config, IngestConfig
from pipeline.data.labels import LabelRow, read_labels
from pipeline.data.manifest import MANIFEST, write_manifest
from pipeline.data.reasons import Reason
from pipeline.errors import IngestError
from pipeline.ingest.backends import resolve
from pipeline.ingest.convert import convert_images, convert_stack, nifti_name
from pipeline.ingest.dicomweb import PullResult, pull_studies
from pipeline.ingest.group import StackPlan, plan_stacks
from pipeline.ingest.headers import DicomHeader, FileRecord, FileRejection, ImageFileHeader
from pipeline.ingest.journal import JOURNAL_DIR, Journal
from pipeline.ingest.manifest_rows import file_rejection_row, image_row, input_digest, stack_row
from pipeline.ingest.scan import scan, walk
from pipeline.ingest.sources import policy
from pipeline.pseudonym import file_key, image_key, label_key, pseudonym, resolve_key, scrub

log = logging.getLogger(__name__)
IMAGES_PER_TASK = 64


@dataclass
class IngestResult:
    manifest: Path
    n_files: int
    seconds: float
    converted: int
    unchanged: int
    accepted: int
    rejected: Counter[str] = field(default_factory=Counter)
    dataset_digest: str | None = None
    pull: PullResult | None = None  # the PACS pull that ran first, when ingest.dicomweb.url is set

    @property
    def files_per_second(self) -> float:
        return self.n_files / self.seconds if self.seconds > 0 else 0.0


def _settings(cfg: IngestConfig) -> str:
    """The settings that change what conversion writes; part of every input digest."""
    return json.dumps(
        {
            k: getattr(cfg, k)
            for k in (
                "compress",
                "tilt",
                "nonuniform_spacing",
                "site",
                "reject_localizers",
                "spacing_tolerance",
                "orientation_tolerance",
                "tilt_tolerance_deg",
            )
        },
        default=str,
        sort_keys=True,
    )


def _load_labels(paths: list[Path]) -> dict[str, LabelRow]:
    labels: dict[str, LabelRow] = {}
    for p in paths:
        labels.update(read_labels(p))
    return labels


def _image_extra(
    h: ImageFileHeader, labels: dict[str, LabelRow], secret: bytes, settings: str, site: str | None
) -> dict[str, Any]:
    lab = labels.get(str(Path(h.path).resolve()))
    return {
        "series_key": image_key(secret, h.path),
        # Folders such as patient00001/study1/ name the patient the label CSV gives: scrubbed like DICOM's.
        "source_dir": scrub(os.path.dirname(h.path), [lab.patient_id] if lab else [], secret),
        "label": lab.label if lab else None,
        "label_key": label_key(secret, h.path) if lab else "",
        "patient": pseudonym(secret, lab.patient_id) if lab else "",
        "site": (lab.site if lab and lab.site else None) or site or "",
        "group": lab.group if lab else "",
        "input_digest": input_digest([(h.path, h.size, h.mtime_ns)], settings + repr(lab)),
    }


def _series_label(plan: StackPlan, labels: dict[str, LabelRow], secret: bytes) -> dict[str, Any] | None:
    """The label columns of a DICOM series whose file, or whose folder, a label CSV names."""
    if not labels:  # no label CSV: nothing to find, and resolving every file's path costs a few syscalls each
        return None
    for h in plan.files:
        path = Path(h.path).resolve()
        for named in (str(path), str(path.parent)):
            if (lab := labels.get(named)) is not None:
                return {"label": lab.label, "group": lab.group, "label_key": label_key(secret, named)}
    return None


def _crash_row(row: dict[str, Any]) -> dict[str, Any]:
    detail = "decoding crashed the worker process (a native decoder)"
    return {**row, "status": "rejected", "reason": str(Reason.DECODE_FAILED), "detail": detail}


def _clean_partials(out_dir: Path) -> None:
    """Remove temp files a killed run may have left (atomic writes never leave anything else)."""
    for folder in (out_dir / "volumes", out_dir / JOURNAL_DIR):
        for tmp in folder.glob(".*.part*"):
            tmp.unlink(missing_ok=True)


def _gather(futures: list[Any], progress: Progress, task: Any, crashed: dict[str, Any] | None = None) -> Iterator[Any]:
    """Results as they finish. ``crashed`` maps a task's key to the rows it stands for when its worker died
    (a native decoder crash): those rows are rejected by name and the batch goes on."""
    for fut in as_completed(futures):
        try:
            result = fut.result()
        except KilledWorker:
            if crashed is None:
                raise
            result = crashed[fut.key]
        progress.advance(task)
        fut.release()
        yield result


@dataclass
class _Work:
    """What discovery and planning leave for conversion, and the rows already known."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    stacks: list[tuple[StackPlan, str]] = field(default_factory=list)
    images: list[tuple[ImageFileHeader, dict[str, Any]]] = field(default_factory=list)
    inputs: dict[str, list[str]] = field(default_factory=dict)  # row key -> keyed hashes of its files
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # series row key -> its label columns
    unchanged: int = 0


def _plan_work(
    records: list[FileRecord],
    cfg: IngestConfig,
    secret: bytes,
    labels: dict[str, LabelRow],
    previous: dict[str, dict[str, Any]],
    out_dir: Path,
) -> _Work:
    """Sort scan results into rows known now (rejections, unchanged) and conversions still to run."""
    settings = _settings(cfg)
    knobs = policy(cfg)
    work = _Work()

    def fresh(key: str, digest: str) -> bool:
        old = previous.get(key)
        if old is None or old.get("input_digest") != digest:
            return False
        return old["status"] == "rejected" or (out_dir / str(old["output_path"])).exists()

    def hashed(paths: Iterable[str]) -> list[str]:
        return [pseudonym(secret, p) for p in paths]

    for rej in (r for r in records if isinstance(r, FileRejection)):
        key = file_key(secret, rej.path)
        digest = input_digest([(rej.path, rej.size, rej.mtime_ns)], settings)
        work.inputs[key] = hashed([rej.path])
        if fresh(key, digest):
            work.rows[key] = previous[key]
            work.unchanged += 1
        else:
            work.rows[key] = file_rejection_row(rej, key, digest)
    headers = [r for r in records if isinstance(r, DicomHeader)]
    for plan in plan_stacks(headers, knobs, secret, cfg.reject_localizers):
        label = _series_label(plan, labels, secret)
        if label is not None:
            work.labels[plan.key] = label
        digest = input_digest([(h.path, h.size, h.mtime_ns) for h in plan.files], settings + repr(label or ""))
        work.inputs[plan.key] = hashed(h.path for h in plan.files)
        if fresh(plan.key, digest):
            work.rows[plan.key] = previous[plan.key]
            work.unchanged += 1
        elif plan.reason is not None:
            work.rows[plan.key] = stack_row(plan, cfg.site, digest)
        else:
            work.stacks.append((plan, digest))
    for h in (r for r in records if isinstance(r, ImageFileHeader)):
        extra = _image_extra(h, labels, secret, settings, cfg.site)
        work.inputs[extra["series_key"]] = hashed([h.path])
        if fresh(extra["series_key"], extra["input_digest"]):
            work.rows[extra["series_key"]] = previous[extra["series_key"]]
            work.unchanged += 1
        else:
            work.images.append((h, extra))
    # Largest stacks first, so one big series does not start last and hold up the end of the run.
    work.stacks.sort(key=lambda item: -sum(h.size for h in item[0].files))
    return work


def _merge(previous: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]], scanned: set[str]) -> dict:
    """Earlier rows, minus those whose files were scanned again under another key (a fixed file, a series
    that now splits differently), plus this run's rows."""
    kept = {k: r for k, r in previous.items() if k in rows or not scanned.intersection(r.get("_inputs", ()))}
    return {**kept, **rows}


def run_ingest(config: Config, console: Console | None = None) -> IngestResult:
    """Ingest ``config.ingest.sources`` into ``config.ingest.out``; returns counts and the manifest path."""
    cfg = config.ingest
    console = console or Console(stderr=True)
    if not cfg.sources and not cfg.dicomweb.url:
        raise IngestError("no sources given (SRC arguments, ingest.sources or --dicomweb URL)")
    if cfg.out is None:
        raise IngestError("no output folder given (--out or ingest.out)")
    out_dir = Path(cfg.out)
    missing = [str(s) for s in cfg.sources if not Path(s).exists() and not Path(s).is_symlink()]
    if missing:
        raise IngestError(f"source not found: {', '.join(missing)}")
    try:
        (out_dir / "volumes").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IngestError(f"cannot create output folder {out_dir}: {exc.strerror}") from exc
    _clean_partials(out_dir)
    secret = resolve_key(cfg.secret(), out_dir)
    labels = _load_labels(cfg.labels)  # a bad label CSV fails here, before the cluster starts
    sources = list(cfg.sources)
    pull: PullResult | None = None
    if cfg.dicomweb.url:
        staging = Path(cfg.dicomweb.staging or out_dir / "staging")
        pull = pull_studies(cfg.dicomweb, staging, secret, console)  # a DicomwebError is an IngestError
        sources.append(staging)
    journal = Journal(out_dir)
    previous = journal.load()
    exts = tuple(e.lower() for e in cfg.image_extensions)
    backend = resolve(cfg.header_backend)  # a backend asked for by name but not installed fails here

    with (
        tracking.stage_run(config, "ingest"),
        dask_client(config.dask) as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal and bool(os.environ.get("CI")),
        ) as progress,
    ):
        # Throughput counts from here: MLflow and cluster set-up are fixed costs, not per-file work.
        start = time.perf_counter()
        files = walk(sources, out_dir, skip_files=cfg.labels)  # label CSVs are inputs, not rejects
        chunks = [files[i : i + cfg.files_per_task] for i in range(0, len(files), cfg.files_per_task)]
        scan_task = progress.add_task(f"scan {len(files)} files", total=len(chunks))
        records: list[FileRecord] = []
        for batch in scan(client, chunks, secret, exts, backend):
            records.extend(batch)
            progress.advance(scan_task)

        work = _plan_work(records, cfg, secret, labels, previous, out_dir)
        rows = work.rows
        new_rows = [r for k, r in rows.items() if r is not previous.get(k)]
        conv_futures, crashed = [], {}
        for plan, digest in work.stacks:
            fut = client.submit(convert_stack, plan, str(out_dir), cfg.compress, cfg.site, digest, pure=False)
            conv_futures.append(fut)
            crashed[fut.key] = [_crash_row(stack_row(plan, cfg.site, digest))]
        for i in range(0, len(work.images), IMAGES_PER_TASK):
            part = work.images[i : i + IMAGES_PER_TASK]
            fut = client.submit(convert_images, part, str(out_dir), cfg.compress, pure=False)
            conv_futures.append(fut)
            crashed[fut.key] = [_crash_row(image_row(h, extra)) for h, extra in part]
        conv_task = progress.add_task(
            f"convert {len(work.stacks)} stacks, {len(work.images)} images", total=len(conv_futures)
        )
        for done in itertools.chain([new_rows], _gather(conv_futures, progress, conv_task, crashed)):
            for row in done:
                row["_inputs"] = work.inputs.get(row["series_key"], [])
                row.update(work.labels.get(row["series_key"], {}))
                rows[row["series_key"]] = row
            journal.add(done)
        converted = len(rows) - work.unchanged

        merged = _merge(previous, rows, {pseudonym(secret, p) for p in files})
        manifest_path = out_dir / MANIFEST
        df = write_manifest(merged.values(), manifest_path)
        journal.compact(merged)
        seconds = time.perf_counter() - start
        rejected = Counter(r["reason"] for r in rows.values() if r["status"] == "rejected")
        accepted = sum(r["status"] == "accepted" for r in rows.values())
        result = IngestResult(
            manifest_path, len(files), seconds, converted, work.unchanged, accepted, rejected, pull=pull
        )
        tracking.log_metrics(
            {
                "files": len(files),
                "seconds": seconds,
                "files_per_s": result.files_per_second,
                "accepted": accepted,
                "rejected": sum(rejected.values()),
                "converted": converted,
                "unchanged": work.unchanged,
                **{f"rejected.{k}": v for k, v in rejected.items()},
                **_pull_metrics(pull),
            }
        )
        result.dataset_digest = tracking.log_table_input(df, manifest_path, "manifest", "ingest")
    return result


def _pull_metrics(pull: PullResult | None) -> dict[str, float]:
    if pull is None:
        return {}
    return {
        "pull.studies_found": pull.found,
        "pull.studies_fetched": pull.fetched,
        "pull.studies_already_fetched": pull.already,
        "pull.studies_failed": sum(pull.failed.values()),
        "pull.instances": pull.instances,
        "pull.seconds": pull.seconds,
        **{f"pull.failed.{k}": v for k, v in pull.failed.items()},
    }


def summary_table(result: IngestResult) -> Table:
    table = Table(title="medssl ingest", show_header=True, header_style="bold")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    if (pull := result.pull) is not None:  # first, as it ran first
        table.add_row("PACS studies found", str(pull.found))
        table.add_row("PACS studies fetched", f"{pull.fetched} ({pull.instances} instances)")
        table.add_row("PACS studies already fetched", str(pull.already))
        for reason, n in sorted(pull.failed.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"PACS studies failed: {reason}", str(n))
        table.add_row("staging folder", str(pull.staging), end_section=True)
    table.add_row("accepted", str(result.accepted))
    for reason, n in sorted(result.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"rejected: {reason}", str(n))
    table.add_row("new or changed this run", str(result.converted))
    table.add_row("unchanged (skipped)", str(result.unchanged))
    table.add_row("files scanned", str(result.n_files))
    table.add_row("files/s (scan to manifest)", f"{result.files_per_second:.1f}")
    table.add_row("manifest", str(result.manifest))
    return table


__all__ = ["IngestResult", "PullResult", "nifti_name", "run_ingest", "summary_table"]
