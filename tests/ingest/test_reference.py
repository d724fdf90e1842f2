"""Voxel-for-voxel agreement with every dcm2niix / dicom2nifti reference in the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HAS_SHARED, SHARED, data_root, needs_shared
from reference import cases, match

CASES = cases(data_root())


def _matches(out: Path, outputs: list[str], ref: Path, scaled: bool) -> list[str]:
    found = []
    for rel in outputs:
        equal, affine_diff, what = match(out / rel, ref, scaled)
        if equal and affine_diff < 1e-3:
            return []
        found.append(what)
    return found or ["no accepted output"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_conversion(case, ingest, tmp_path):
    _result, manifest = ingest(case.inputs, **dict(case.options))
    accepted = manifest[manifest.status == "accepted"]
    for ref in case.refs:
        problems = _matches(tmp_path / "out", list(accepted.output_path), ref, case.scaled)
        assert not problems, f"{case.name}: no output equals {ref.name}: {problems}"


def test_every_reference_is_covered():
    """The case list must not silently shrink: all nine transfer syntaxes, plus the other suites."""
    names = {c.name for c in CASES}
    expected_ts = 9 if HAS_SHARED else 4
    assert sum(n.startswith("dcm_qa_ts/") for n in names) == expected_ts
    if HAS_SHARED:
        assert {"dcm_qa_12bit", "dcm_qa_enh/Philips", "dcm_qa_enh/XA10", "dcm_qa_ct/raw"} <= names
        assert sum(n.startswith("dcm_qa_nih/") for n in names) == 6
        assert sum(n.startswith("dicom2nifti/") for n in names) >= 20


@pytest.mark.slow
@needs_shared
def test_whole_shared_archive(ingest, tmp_path):
    """`medssl ingest ../shared/data`: every row accepted or rejected with a named reason, references met."""
    from pipeline.data.reasons import Reason

    result, manifest = ingest(SHARED)
    rejected = manifest[manifest.status == "rejected"]
    assert set(manifest.status) <= {"accepted", "rejected"}
    assert rejected.reason.isin([r.value for r in Reason]).all()
    assert (manifest[manifest.status == "accepted"].reason == "").all()
    # Grouping across the whole tree must still give each reference its own output.
    accepted = manifest[(manifest.status == "accepted") & (manifest.kind == "dicom")]
    by_shape: dict[tuple, list[str]] = {}
    for rel, shape in zip(accepted.output_path, accepted["shape"], strict=True):
        by_shape.setdefault(tuple(sorted(shape[:3])), []).append(rel)
    for case in cases(SHARED):
        if case.options:
            continue  # needs non-default options
        for ref in case.refs:
            import nibabel as nib

            key = tuple(sorted(d for d in nib.load(ref).shape[:3]))
            problems = _matches(tmp_path / "out", by_shape.get(key, []), ref, case.scaled)
            assert not problems, f"{case.name} / {ref.name}: {problems}"
    assert result.n_files > 7000
