"""One scored series as a DICOM Structured Report: a Comprehensive 3D SR following TID 1500 (Measurement Report),
the form the IHE AI Results profile uses, so any PACS viewer shows it beside the images it speaks of.

The report holds one measurement group (TID 1501) for the whole series: the qualitative evaluation
Normality = Normal / Abnormal (DCM 121402 with SNOMED CT values), the score and the operating threshold as
measurements (the score has no standard code: a private ``99MEDSSL`` one says what it is), the model name and
version as its algorithm identification (TID 4019), and every instance of the series as its source images. The
observer is a device (the model), and the document is marked unverified and preliminary: no radiologist has
signed it. Patient and study attributes are copied by highdicom from the series' own headers (``evidence``),
in memory; nothing here is written to disk.

The SR's UIDs are derived from the evaluated series' UID, the model and its version, so publishing the same
result again (after a ledger write was lost to a kill) stores the same instance again instead of a second one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

MANUFACTURER = "medssl"
SCORE = hd.sr.CodedConcept("ABNORMALITY_SCORE", "99MEDSSL", "Abnormality score")
THRESHOLD = codes.DCM.ThresholdValue
NORMALITY = codes.DCM.Normality
VERDICT = {"normal": codes.SCT.Normal, "abnormal": codes.SCT.Abnormal}
# Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1) that the SR copies from
# its evidence: present in every conformant image, but archives hold images without them; empty is valid.
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber")
TYPE2 += ("StudyID", "ReferringPhysicianName")


@dataclass(frozen=True)
class Result:
    """One row of the results table: what the model said about one series."""

    series_key: str
    score: float
    decision: str
    threshold: float
    model: str
    version: str


def sr_uids(series_uid: str, result: Result) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SR of ``result``: the same for the same series and model
    version on every run, distinct for any other."""
    seed = [series_uid, result.model, result.version]
    return generate_uid(entropy_srcs=[*seed, "medssl-sr-series"]), generate_uid(entropy_srcs=[*seed, "medssl-sr"])


def build_report(evidence: Sequence[Dataset], result: Result, series_number: int) -> hd.sr.Comprehensive3DSR:
    """The SR of ``result`` about the series whose instances' headers are ``evidence`` (one series); the
    headers gain the empty type 2 attributes they lack."""
    for ds in evidence:
        for keyword in TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    algorithm = hd.sr.AlgorithmIdentification(name=result.model, version=result.version)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["medssl-device", result.model, result.version]),
        name=f"{result.model} {result.version}",
        manufacturer_name=MANUFACTURER,
        model_name=result.model,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    unit = codes.UCUM.NoUnits
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            # One tracking UID per series and model, whatever the version: a viewer follows the finding across them.
            uid=generate_uid(entropy_srcs=[evidence[0].SeriesInstanceUID, result.model, "medssl-tracking"]),
            identifier=f"{result.model} result",
        ),
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=SCORE, value=result.score, unit=unit, algorithm_id=algorithm),
            hd.sr.Measurement(name=THRESHOLD, value=result.threshold, unit=unit, algorithm_id=algorithm),
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(NORMALITY, VERDICT[result.decision])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in evidence],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=[group]
    )
    series_uid, sop_uid = sr_uids(evidence[0].SeriesInstanceUID, result)
    with warnings.catch_warnings():  # highdicom's warning about an odd PatientName quotes the name: keep it out
        warnings.filterwarnings("ignore", message="The string .* is unlikely to represent", category=UserWarning)
        return hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=f"AI result, unverified: {result.model} {result.version}"[:64],
        )
