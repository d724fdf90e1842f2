"""PACS pull: find studies over QIDO-RS, retrieve them over WADO-RS into a staging folder that ingest then reads.

The staging folder is an archive like any other, laid out so that a pull can be killed at any moment:

    <staging>/<study key>/<series key>/<instance key>.dcm   one folder per complete study
    <staging>/.partial-<study key>/                         a study being retrieved (removed on the next run)
    <staging>/.ledger.json                                  the studies already retrieved, with instance counts

Keys are keyed hashes (``pipeline.pseudonym``) of the DICOM UIDs, so no folder or log line carries a patient's
name, ID or a UID that the PACS could be asked about. A study is written into its ``.partial-`` folder and renamed
into place only once complete, so a half study is never taken for a whole one; the ledger then records it, and a
study in the ledger is not fetched again (even after its folder is pruned), unless the server now holds more
instances of it than were fetched. Hidden entries are skipped by ingest, so it never reads a partial study.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.config import DicomwebConfig
from pipeline.credentials import http_auth, source
from pipeline.errors import DicomwebError
from pipeline.ingest.ledger import Ledger
from pipeline.pseudonym import pseudonym

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

log = logging.getLogger(__name__)
PARTIAL = ".partial-"
RETIRED = ".retired-"
# Any transfer syntax: the instances as stored, not transcoded (Orthanc cannot transcode some, e.g. JPEG-LS).
AS_STORED = (("application/dicom", "*"),)
# DICOM tags in DICOM JSON (PS3.18 F.2): StudyInstanceUID, StudyDate, NumberOfStudyRelatedInstances.
STUDY_UID, STUDY_DATE, N_INSTANCES = "0020000D", "00080020", "00201208"
SEARCH_PAGE = 1000  # studies asked for per QIDO-RS request


class _Empty(Exception):
    """The server listed the study, but retrieving it gave no instances."""


@dataclass
class PullResult:
    """What a pull did: studies the search found, fetched now, already there, and failed (by reason)."""

    staging: Path
    found: int = 0
    fetched: int = 0
    already: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # study key -> reason
    instances: int = 0
    seconds: float = 0.0


def safe_url(url: str) -> str:
    """``url`` without a user name or password, for messages and logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def connect(cfg: DicomwebConfig) -> DICOMwebClient:
    """A client of ``cfg.url`` for a pull or a publish; a URL that cannot be one is a ``DicomwebError`` line."""
    url = str(cfg.url or "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomwebError(f"DICOMweb URL must look like http://host:port/dicom-web, not {safe_url(url)!r}")
    if parts.username or parts.password:  # the URL is logged with the config (MLflow params): no secrets in it
        raise DicomwebError(f"put no user name or password in the DICOMweb URL (it is logged): {safe_url(url)}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise DicomwebError(f"bad DICOMweb URL {safe_url(url)!r}: {exc}") from None
    auth = http_auth(cfg.auth)  # a missing or open credential fails here, before the server is asked anything
    from dicomweb_client.api import DICOMwebClient  # only a pull or a publish needs it (0.4 s of imports)
    from dicomweb_client.session_utils import create_session_from_auth

    try:
        return DICOMwebClient(url, session=create_session_from_auth(auth) if auth else None, timeout=cfg.timeout)
    except ValueError:
        raise DicomwebError(f"bad DICOMweb URL {safe_url(url)!r}") from None


def quiet_http_logs() -> None:
    """Keep dicomweb-client's and urllib3's INFO/DEBUG lines out of the logs: they carry UIDs in URLs."""
    for name in ("dicomweb_client", "urllib3.connectionpool"):
        logging.getLogger(name).setLevel(logging.WARNING)


def date_filter(since: date | None, until: date | None) -> dict[str, str]:
    """QIDO-RS StudyDate range matching (PS3.4 C.2.2.2.5): ``A-B``, ``A-`` or ``-B``, both ends inclusive."""
    if since is None and until is None:
        return {}
    low = since.strftime("%Y%m%d") if since else ""
    high = until.strftime("%Y%m%d") if until else ""
    return {"StudyDate": f"{low}-{high}"}


def _value(study: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON dataset, or None."""
    entry = study.get(tag)
    values = entry.get("Value") if isinstance(entry, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _in_range(study_date: Any, since: date | None, until: date | None) -> bool:
    """Client-side check of the range: a server may ignore a filter it does not support."""
    if not isinstance(study_date, str) or len(study_date) < 8 or not study_date[:8].isdigit():
        return True  # no usable date: the server's matching decided
    day = study_date[:8]
    return not (since and day < since.strftime("%Y%m%d")) and not (until and day > until.strftime("%Y%m%d"))


def _hint(code: int, cfg: DicomwebConfig) -> str:
    """What an HTTP error status to the search most likely means, naming where the credential came from."""
    if code not in (401, 403):
        return "is it the DICOMweb root (e.g. http://host:8042/dicom-web)?"
    if cfg.auth.method == "none":
        login = "it wants a login: set ingest.dicomweb.auth" if code == 401 else "it refuses this client"
    else:
        login = f"it refuses the {cfg.auth.method} credential in {source(cfg.auth)}"
    return f"HTTP_{code}, {login}"


def _search_page(client: DICOMwebClient, cfg: DicomwebConfig, offset: int) -> list[dict[str, Any]]:
    """One page of a QIDO-RS study search; every way it can fail becomes one ``DicomwebError`` line."""
    where = safe_url(str(cfg.url))
    try:
        page = client.search_for_studies(
            search_filters=date_filter(cfg.since, cfg.until),
            fields=["StudyDate", "NumberOfStudyRelatedInstances"],
            limit=SEARCH_PAGE,
            offset=offset,
        )
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        raise DicomwebError(f"{where} answered HTTP {code} to a QIDO-RS study search: {_hint(code, cfg)}") from None
    except requests.Timeout:
        raise DicomwebError(f"DICOMweb server at {where} did not answer within {cfg.timeout:g} s") from None
    except requests.JSONDecodeError:
        raise DicomwebError(f"{where} did not answer a QIDO-RS study search with DICOM JSON") from None
    except requests.RequestException as exc:
        raise DicomwebError(f"cannot reach DICOMweb server at {where} ({type(exc).__name__})") from None
    except ValueError:
        raise DicomwebError(f"{where} did not answer a QIDO-RS study search with DICOM JSON") from None
    if not all(isinstance(study, dict) for study in page):  # e.g. Orthanc's own REST API, not its DICOMweb root
        raise DicomwebError(
            f"{where} did not answer a QIDO-RS study search with DICOM JSON: is it the DICOMweb root "
            "(e.g. http://host:8042/dicom-web)?"
        )
    return page


def search(client: DICOMwebClient, cfg: DicomwebConfig) -> list[tuple[str, int | None]]:
    """QIDO-RS: the studies in the date range, as (StudyInstanceUID, instance count if the server says).

    Pages until one brings nothing new: a server may cap a page below the limit asked for (PS3.18 8.3.4.4),
    and one that ignores ``offset`` would otherwise be asked for the same page forever.
    """
    studies: dict[str, int | None] = {}
    seen: set[str] = set()
    offset = 0
    while page := _search_page(client, cfg, offset):
        offset += len(page)
        uids = [_value(study, STUDY_UID) for study in page]
        if seen.issuperset(uids):
            break
        for uid, study in zip(uids, page, strict=True):
            if isinstance(uid, str) and uid and _in_range(_value(study, STUDY_DATE), cfg.since, cfg.until):
                studies[uid] = _int(_value(study, N_INSTANCES))
        seen.update(uids)
    return sorted(studies.items())


def _count(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.dcm"))


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _clean(staging: Path) -> None:
    """Remove what a killed pull left: partial studies, and old copies retired while a study was replaced."""
    for entry in staging.iterdir():
        if entry.name.startswith((PARTIAL, RETIRED)):
            _remove(entry)


def failure_reason(exc: requests.RequestException) -> str:
    """A reason code for a study the server did not deliver (or an SR it did not store); never the exception's
    text, which holds its UID."""
    if isinstance(exc, requests.HTTPError):
        return f"HTTP_{exc.response.status_code}" if exc.response is not None else "HTTP_ERROR"
    if isinstance(exc, requests.Timeout):
        return "TIMEOUT"
    if isinstance(exc, requests.ConnectionError):
        return "CONNECTION_LOST"
    return "TRANSFER_ERROR"


def _retrieve(client: DICOMwebClient, uid: str, tmp: Path, key: bytes, on_instance: Callable[[], None]) -> int:
    """WADO-RS: stream the study's instances, as stored, into ``tmp``; returns how many were written."""
    n = 0
    for ds in client.iter_study(uid, media_types=AS_STORED):
        sop, series = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)  # AttributeError: not an instance
        folder = tmp / pseudonym(key, "series|" + series)
        folder.mkdir(exist_ok=True)
        ds.save_as(folder / f"{pseudonym(key, 'instance|' + sop)}.dcm", enforce_file_format=True)
        n += 1
        on_instance()
    if n == 0:
        raise _Empty
    return n


def _fetch(
    client: DICOMwebClient, uid: str, staging: Path, study: str, key: bytes, on_instance: Callable[[], None]
) -> int | str:
    """One study into place: its instance count, or the reason it failed (the partial folder is removed)."""
    tmp = staging / (PARTIAL + study)
    _remove(tmp)
    try:
        tmp.mkdir()
        n = _retrieve(client, uid, tmp, key, on_instance)
        _commit(tmp, staging / study)
        return n
    except _Empty:
        reason = "EMPTY_STUDY"
    except requests.RequestException as exc:  # before OSError, which it subclasses
        reason = failure_reason(exc)
    except OSError as exc:  # the staging disk, not the server: every other study would fail the same way
        raise DicomwebError(f"cannot write to staging folder {staging}: {exc.strerror}") from None
    except Exception as exc:  # a payload pydicom cannot read or write must not stop the other studies
        log.debug("study %s: unreadable payload (%s)", study, type(exc).__name__)
        reason = "BAD_PAYLOAD"
    _remove(tmp)
    return reason


def _commit(tmp: Path, final: Path) -> None:
    """Put a complete study in place; an older copy is renamed aside first and removed after."""
    if final.exists():
        retired = final.with_name(RETIRED + final.name)
        final.rename(retired)
        tmp.rename(final)
        _remove(retired)
    else:
        tmp.rename(final)


def _fetched(study: str, ledgers: list[Ledger]) -> int | None:
    """The most instances of ``study`` any of ``ledgers`` records, or None when none holds it."""
    counts = [int(entry.get("instances", 0)) for ledger in ledgers if (entry := ledger.get(study)) is not None]
    return max(counts) if counts else None


def _plan(
    studies: list[tuple[str, int | None]], staging: Path, ledger: Ledger, others: list[Ledger], key: bytes
) -> tuple[list[tuple[str, str, int | None]], int]:
    """The studies still to fetch (uid, study key, count), and how many are already here or in ``others``.

    A complete study folder the ledger lacks (a kill between its rename and the next ledger write) is adopted
    when it holds as many instances as the server reports; otherwise it is fetched again.
    """
    todo: list[tuple[str, str, int | None]] = []
    already = 0
    for uid, n in studies:
        study = pseudonym(key, "study|" + uid)
        held = _fetched(study, [ledger, *others])
        final = staging / study
        if held is not None and (n is None or n <= held):
            already += 1
        elif (
            ledger.get(study) is None and final.is_dir() and (count := _count(final)) > 0 and (n is None or count >= n)
        ):
            ledger.add(study, count)
            already += 1
        else:
            todo.append((uid, study, n))
    return todo, already


def _fetch_all(
    client: DICOMwebClient,
    todo: list[tuple[str, str, int | None]],
    staging: Path,
    key: bytes,
    ledger: Ledger,
    result: PullResult,
    console: Console,
) -> None:
    """Fetch ``todo`` one study after another under a progress bar, counting into ``result``.

    Once the server is gone (connection refused after the client's retries), the studies left are counted
    failed without being tried: each would wait through the same retries, and the next pull fetches them.
    """
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[instances]} instances"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal and bool(os.environ.get("CI")),
    ) as progress:
        task = progress.add_task(f"pull {len(todo)} studies from PACS", total=len(todo), instances=0)

        def on_instance() -> None:
            result.instances += 1
            progress.update(task, instances=result.instances)

        for i, (uid, study, _) in enumerate(todo):
            outcome = _fetch(client, uid, staging, study, key, on_instance)
            progress.advance(task)
            if not isinstance(outcome, str):
                ledger.add(study, outcome)
                result.fetched += 1
                continue
            result.failed[outcome] += 1
            result.failures[study] = outcome
            log.warning("study %s not fetched: %s", study, outcome)
            progress.console.print(f"[yellow]study {study} not fetched:[/] {outcome}")
            if outcome == "CONNECTION_LOST":
                left = todo[i + 1 :]
                result.failed[outcome] += len(left)
                result.failures.update((s, outcome) for _, s, _ in left)
                progress.console.print(f"[yellow]DICOMweb server lost: {len(left)} more studies left for the next pull")
                break


def pull_studies(cfg: DicomwebConfig, staging: Path, key: bytes, console: Console | None = None) -> PullResult:
    """Retrieve the studies of ``cfg.url`` in [``cfg.since``, ``cfg.until``] not already in ``staging`` (or in
    the staging folders of ``cfg.ledgers``, whose ledgers are read, never written).

    ``key`` is the pseudonym key (the ingest output's), so folder names are keyed hashes that ingest's users can
    recompute but no one else can reverse. A study that fails is reported with a reason and left out of the
    ledger, so the next pull tries it again; the others go on. Raises ``DicomwebError`` when the pull cannot run.
    """
    console = console or Console(stderr=True)
    start = time.perf_counter()
    quiet_http_logs()
    client = connect(cfg)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        staging.chmod(0o700)  # it holds DICOM as the PACS has it, PHI included; whoever made it, whatever umask
        _clean(staging)
    except OSError as exc:
        raise DicomwebError(f"cannot use staging folder {staging}: {exc.strerror}") from None
    ledger = Ledger(staging, key)
    others = [Ledger(Path(folder), key) for folder in cfg.ledgers if Path(folder).resolve() != staging.resolve()]
    # The search fails fast: a wrong URL is likelier than a blip, and a scheduler retries the whole task anyway.
    # dicomweb-client otherwise retries any exception, a refused connection included, for about 30 s.
    client.set_http_retry_params(retry=False)
    studies = search(client, cfg)
    client.set_http_retry_params()  # retrieval rides out a busy or restarting server (503, 429, dropped links)
    result = PullResult(staging, found=len(studies))
    todo, result.already = _plan(studies, staging, ledger, others, key)
    try:
        _fetch_all(client, todo, staging, key, ledger, result, console)
    finally:
        ledger.flush()
    result.seconds = time.perf_counter() - start
    return result


__all__ = [
    "DicomwebError",
    "Ledger",
    "PullResult",
    "connect",
    "date_filter",
    "failure_reason",
    "pull_studies",
    "quiet_http_logs",
    "safe_url",
    "search",
]
