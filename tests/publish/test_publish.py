"""Results back into a real PACS: studies put into Orthanc (which wants a login) are pulled, ingested, scored
by a champion trained here and published as DICOM SRs; Orthanc is then asked for the SRs by study, and they are
read back with highdicom.

A re-run publishes nothing twice, a new champion version publishes its own SRs, a PACS that is down or fails
mid-publish leaves the rest for the next run, and no UID or patient identifier reaches an output, a log line
or MLflow.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import mlflow
import pandas as pd
import pydicom
import pytest
from conftest import SAMPLE, TEST_KEY, finetune_config, make_config
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_auth
from orthanc import dated_copy, free_port, login, needs_orthanc, orthanc, store
from pydicom.sr.codedict import codes
from rich.console import Console

from pipeline.config import Config
from pipeline.finetune import run_finetune
from pipeline.ingest import run_ingest
from pipeline.pseudonym import pseudonym
from pipeline.publish import run_publish
from pipeline.publish.ledger import ledger_path
from pipeline.registry.store import set_alias
from pipeline.score import run_score

pytestmark = [pytest.mark.slow, needs_orthanc]  # a real Orthanc, a detector trained and registered, Dask ingest
SERIES = SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001"
PATIENT = ("POE^EDGAR", "MRN-1849-TEST")  # the studies' patient: never in clear outside the PACS and staging
DAY = dt.date(2026, 3, 2)
KEY = TEST_KEY.encode()
# The PACS wants a login (Orthanc's own basic authentication): the pull and the publish both send it, read
# from a mode-600 file; the password must never show up in what medssl writes.
USERS = {"medssl-pacs": "round-trip-password-4f1c"}


@dataclass
class Study:
    series: str
    instances: set[str]
    key: str = ""  # its series_key in the manifest


@dataclass
class Site:
    where: Path
    url: str  # Orthanc's DICOMweb root
    config: Config  # the publish settings: the day's scores.csv, its manifest, the PACS
    store: str  # MLflow tracking URI
    studies: dict[str, Study] = field(default_factory=dict)

    def srs(self, study: str) -> list[pydicom.Dataset]:
        """QIDO-RS: the SR instances Orthanc holds in ``study``; WADO-RS: each of them."""
        client = DICOMwebClient(self.url, session=create_session_from_auth(login(USERS, ())))
        found = []
        for series in client.search_for_series(study, search_filters={"Modality": "SR"}):
            uid = series["0020000E"]["Value"][0]
            for inst in client.search_for_instances(study, uid):
                found.append(client.retrieve_instance(study, uid, inst["00080018"]["Value"][0]))
        return found


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def site(tmp_path_factory, dask_scheduler, pneumonia_manifest) -> Iterator[Site]:
    """A PACS holding two studies of one patient, pulled and ingested; a champion detector trained on the
    sample's chest X-rays scores their series into scores.csv."""
    where = tmp_path_factory.mktemp("publish")
    tracking = f"sqlite:///{where}/mlflow.db"
    with orthanc(where / "pacs", users=USERS) as root:
        url = f"{root}/dicom-web"
        payloads = [dated_copy(SERIES, DAY, PATIENT, f"medssl-publish-{i}") for i in range(2)]
        store(root, [p for study in payloads for p in study], auth=login(USERS, ()))
        out = where / "out"
        credentials = where / "pacs-login"
        credentials.write_text(":".join(next(iter(USERS.items()))) + "\n")
        credentials.chmod(0o600)
        auth = {"method": "basic", "file": str(credentials)}
        cfg = make_config([], out, dask_scheduler, tracking, dicomweb={"url": url, "timeout": 10, "auth": auth})
        run_ingest(cfg, _quiet())
        ft = finetune_config(pneumonia_manifest, where / "ft", tracking, budget="16shot", seeds=1)
        detector = run_finetune(ft, _quiet())
        set_alias("medssl-detector", "champion", detector.model_uri.rsplit("/", 1)[1], cfg.tracking)
        config = cfg.model_copy(update={"score": cfg.score.model_copy(update={"manifest": out / "manifest.parquet"})})
        run_score(config, _quiet())
        site = Site(where, url, config, tracking)
        manifest = pd.read_parquet(out / "manifest.parquet")
        for study in payloads:
            headers = [pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True) for p in study]
            uid = headers[0].StudyInstanceUID
            (key,) = manifest.series_key[manifest.study == pseudonym(KEY, uid)]
            site.studies[uid] = Study(headers[0].SeriesInstanceUID, {h.SOPInstanceUID for h in headers}, key)
        yield site


def _scores(site: Site) -> pd.DataFrame:
    return pd.read_csv(site.where / "out" / "scores.csv", dtype={"version": str, "series_key": str})


def _new_champion(site: Site) -> str:
    """Another version of the detector becomes champion (as a later week's promote makes it); it scores the day."""
    client = mlflow.MlflowClient(site.store)
    champion = client.get_model_version_by_alias("medssl-detector", "champion")
    other = client.create_model_version("medssl-detector", champion.source, champion.run_id)
    set_alias("medssl-detector", "champion", other.version, site.config.tracking)
    run_score(site.config, _quiet())
    return str(other.version)


def _check_sr(ds: pydicom.Dataset, study: Study, row: pd.Series) -> None:
    """An SR read back with highdicom says what scores.csv says, about the series it was made from."""
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert (sr.VerificationFlag, sr.CompletionFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "COMPLETE", "PRELIMINARY")
    assert (str(sr.PatientName), sr.PatientID) == PATIENT  # copied from the source DICOM
    evidence = sr.get_evidence()
    assert {e[1] for e in evidence} == {study.series} and {e[2] for e in evidence} == study.instances
    (observer,) = sr.content.get_observer_contexts()
    assert observer.observer_type == codes.DCM.Device
    (group,) = sr.content.get_image_measurement_groups()
    assert {img.referenced_sop_instance_uid for img in group.source_images} == study.instances
    measured = {m.name.meaning: m.value for m in group.get_measurements()}
    assert measured == pytest.approx({"Abnormality score": row.score, "Threshold Value": row.threshold})
    (verdict,) = group.get_qualitative_evaluations()
    assert verdict.name == codes.DCM.Normality
    assert verdict.value == (codes.SCT.Abnormal if row.decision == "abnormal" else codes.SCT.Normal)
    items = group[0].ContentSequence  # the measurement group's own items (TID 1501), algorithm (TID 4019) among them
    algorithm = {item.name.meaning: item.value for item in items if item.name.meaning.startswith("Algorithm")}
    assert algorithm == {"Algorithm Name": row.model, "Algorithm Version": row.version}


def test_results_round_trip_through_the_pacs(site, caplog):
    console = io.StringIO()
    with caplog.at_level("DEBUG"):
        first = run_publish(site.config, Console(file=console, width=200))
    assert (first.published, first.already, dict(first.failed)) == (2, 0, {})
    scores = _scores(site)
    for uid, study in site.studies.items():
        (ds,) = site.srs(uid)
        _check_sr(ds, study, scores[scores.series_key == study.key].iloc[0])

    again = run_publish(site.config, _quiet())  # nothing twice
    assert (again.published, again.already) == (0, 2)
    assert [len(site.srs(uid)) for uid in site.studies] == [1, 1]

    version = _new_champion(site)  # a new champion version publishes its own SRs
    with caplog.at_level("DEBUG"):
        third = run_publish(site.config, Console(file=console, width=200))
    assert (third.published, third.already) == (2, 2)
    scores = _scores(site)
    for uid, study in site.studies.items():
        srs = {hd.sr.Comprehensive3DSR.from_dataset(ds).SeriesDescription: ds for ds in site.srs(uid)}
        assert len(srs) == 2
        row = scores[(scores.series_key == study.key) & (scores.version == version)].iloc[0]
        _check_sr(srs[f"AI result, unverified: medssl-detector {version}"], study, row)
    ledger = json.loads(ledger_path(site.where / "out" / "scores.csv").read_text())["published"]
    assert len(ledger) == 4

    # No UID (the studies', their series', instances', or the SRs' own) nor the patient in clear anywhere medssl
    # writes: outputs (all but the staging folder, which holds the DICOM as the PACS sent it), logs, MLflow.
    sr_uids = {u for uid in site.studies for ds in site.srs(uid) for u in (ds.SeriesInstanceUID, ds.SOPInstanceUID)}
    studied = {u for uid, s in site.studies.items() for u in (uid, s.series, *s.instances)}
    identifiers = {*PATIENT, *USERS.values(), *sr_uids} | studied
    experiment = mlflow.MlflowClient(site.store).get_experiment_by_name("medssl")
    artifacts = Path(experiment.artifact_location.removeprefix("file://"))
    written = [
        p
        for p in site.where.rglob("*")
        if p.is_file() and not {"staging", "pacs"} & set(p.parts) and p.name != "pacs-login"  # the login's own file
    ]
    written += [p for p in artifacts.rglob("*") if p.is_file()]
    seen = "\n".join([console.getvalue(), caplog.text, *(p.read_bytes().decode("latin-1") for p in written)])
    assert any(p.name == "mlflow.db" for p in written) and any(p.name == "scores.csv" for p in artifacts.rglob("*"))
    assert [i for i in identifiers if i.lower() in seen.lower()] == []


def test_a_pacs_down_or_failing_mid_publish_leaves_the_rest_for_the_next_run(site, tmp_path, caplog):
    """Each run sends the results the ledger lacks; what the PACS did not take keeps a reason, and a series
    whose files are gone has its own. In the end each result is in the PACS once."""
    scores = tmp_path / "scores.csv"  # the day's table, with a ledger of its own: nothing sent yet
    shutil.copyfile(site.where / "out" / "scores.csv", scores)
    n = len(_scores(site))
    with orthanc(tmp_path / "other-pacs") as root:
        down = f"http://127.0.0.1:{free_port()}/dicom-web"
        publish = site.config.publish.model_copy(
            update={"scores": scores, "manifest": site.where / "out" / "manifest.parquet", "url": down}
        )
        config = site.config.model_copy(update={"publish": publish})
        with caplog.at_level("DEBUG"):
            result = run_publish(config, _quiet())
        assert (result.published, dict(result.failed), result.pending) == (0, {"CONNECTION_LOST": n}, n)
        assert not ledger_path(scores).exists()

        config.publish.url = f"{root}/dicom-web"
        (tmp_path / "other-pacs" / "stow.txt").write_text("1")  # the second STOW-RS on is answered HTTP 500
        result = run_publish(config, _quiet())
        assert (result.published, dict(result.failed), result.pending) == (1, {"HTTP_500": n - 1}, n - 1)

        (tmp_path / "other-pacs" / "stow.txt").unlink()
        sent = {name.split("|")[0] for name in json.loads(ledger_path(scores).read_text())["published"]}
        uid, study = next((u, s) for u, s in site.studies.items() if s.key not in sent)
        staged = site.where / "out" / "staging" / pseudonym(KEY, "study|" + uid)
        staged.rename(staged.with_name("moved-away"))
        try:
            result = run_publish(config, _quiet())
        finally:
            staged.with_name("moved-away").rename(staged)
        gone = int((_scores(site).series_key == study.key).sum())
        assert (result.published, dict(result.failed)) == (n - 1 - gone, {"SOURCE_MISSING": gone})
        assert set(result.failures) == {
            f"{study.key}|{r.model}|{r.version}" for r in _scores(site).itertuples() if r.series_key == study.key
        }

        final = run_publish(config, _quiet())
        assert (final.published, final.already, dict(final.failed)) == (gone, n - gone, {})
        client = DICOMwebClient(f"{root}/dicom-web")
        assert len(client.search_for_series(search_filters={"Modality": "SR"})) == n  # one per result, none twice

        ledger_path(scores).unlink()  # a ledger lost (a kill between a store and its entry, at worst one)
        resent = run_publish(config, _quiet())
        assert resent.published == n  # sent again, with the same UIDs: the same instances to the PACS
        assert len(client.search_for_series(search_filters={"Modality": "SR"})) == n
        assert len(client.search_for_instances(search_filters={"Modality": "SR"})) == n
    assert not [i for i in (*PATIENT, uid, study.series, *study.instances) if i in caplog.text]
