"""What a pull does with answers Orthanc never gives: a listed study that retrieves to nothing, and parts that
are not DICOM instances.

Orthanc conforms (it lists only studies it holds and serves what it validated on upload), so these two
reasons cannot be provoked from it; the server here is a stand-in for a non-conformant PACS, reduced to
the one call a retrieval makes (``iter_study``). Each case sits between two real studies, read from the
bundled sample, which must still arrive.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import SAMPLE, TEST_KEY
from rich.console import Console

from pipeline.ingest.dicomweb import PullResult, _fetch_all
from pipeline.ingest.ledger import LEDGER, Ledger
from pipeline.pseudonym import pseudonym

KEY = TEST_KEY.encode()


def _one_per_study() -> list[Path]:
    """A file of each study in the bundled dicom2nifti cases (three studies)."""
    first: dict[str, Path] = {}
    for path in sorted((SAMPLE / "dicom2nifti_testdata").rglob("*.dcm")):
        first.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID), path)
    return list(first.values())


class ListedServer:
    """Answers WADO-RS study retrievals from a dict: study UID -> what the server sends for it."""

    def __init__(self, answers: dict[str, list]) -> None:
        self.answers = answers

    def iter_study(self, uid: str, media_types=None) -> Iterator:
        yield from self.answers[uid]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda good: [], "EMPTY_STUDY"),
        # After a good instance, so a partial folder exists when the bad part comes and must go.
        (lambda good: [good, pydicom.Dataset()], "BAD_PAYLOAD"),  # no UIDs, which every instance carries
        (lambda good: [good, b"\x00" * 132], "BAD_PAYLOAD"),  # bytes the client failed to parse
    ],
    ids=["empty", "no-uids", "not-a-dataset"],
)
def test_unusable_answer_is_named_and_the_other_studies_arrive(tmp_path, answer, reason):
    first, bad, last = (pydicom.dcmread(path) for path in _one_per_study())
    uids = {name: str(ds.StudyInstanceUID) for name, ds in (("first", first), ("bad", bad), ("last", last))}
    server = ListedServer({uids["first"]: [first], uids["bad"]: answer(bad), uids["last"]: [last]})
    studies = {name: pseudonym(KEY, "study|" + uid) for name, uid in uids.items()}
    staging = tmp_path / "staging"
    staging.mkdir()
    ledger, result = Ledger(staging, KEY), PullResult(staging, found=3)
    todo = [(uids[name], studies[name], None) for name in ("first", "bad", "last")]

    _fetch_all(server, todo, staging, KEY, ledger, result, Console(file=io.StringIO()))
    ledger.flush()

    assert result.failures == {studies["bad"]: reason}
    assert result.fetched == 2
    assert sorted(p.name for p in staging.iterdir()) == sorted([LEDGER, studies["first"], studies["last"]])
    assert (staging / LEDGER).read_text().count(studies["bad"]) == 0  # so the next pull asks for it again
