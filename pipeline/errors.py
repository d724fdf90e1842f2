"""One family of errors a user can fix: each names its stage and says in one line what is wrong.

The command line and the DAGs catch ``MedsslError`` once and print ``error (<stage>): <message>``; anything
else is a bug and keeps its traceback. Each stage raises its own subclass, so an error names the stage the
user called, not the helper that noticed.
"""

from __future__ import annotations


class MedsslError(ValueError):
    """Bad input, settings or state, with the one line that says what to do about it."""

    stage = "medssl"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MedsslError):
    """A config file or override that does not validate; the message names the key."""

    stage = "config"


class DataError(MedsslError):
    """A manifest or its files that cannot feed a stage; the message says what is missing."""

    stage = "data"


class LabelsError(DataError):
    """A label CSV that cannot be used; the message says which file and what is wrong."""

    stage = "labels"


class ClusterError(MedsslError):
    """A Dask cluster that cannot be reached or started."""

    stage = "dask"


class IngestError(MedsslError):
    """A problem with the request itself (no sources, unusable output folder), not with one input file:
    those get a named reason in the manifest and the batch goes on."""

    stage = "ingest"


class DicomwebError(IngestError):
    """The pull cannot run at all (bad URL, server unreachable, login missing, open to others or refused,
    staging unusable); one line, no identifiers and no secret."""

    stage = "ingest.dicomweb"


class ListenError(MedsslError):
    """The C-STORE receiver cannot start (no incoming folder, address in use); one line, no identifiers."""

    stage = "listen"


class PretrainError(MedsslError):
    stage = "pretrain"


class FinetuneError(MedsslError):
    stage = "finetune"


class CurveError(MedsslError):
    stage = "curve"


class EvaluateError(MedsslError):
    stage = "evaluate"


class PromoteError(MedsslError):
    stage = "promote"


class ScoreError(MedsslError):
    stage = "score"


class PublishError(MedsslError):
    """Results cannot be sent at all (no table, no PACS, no pseudonym key); a series that fails on its own
    gets a reason and the others go on."""

    stage = "publish"


class SuggestError(MedsslError):
    stage = "suggest"


class ShiftError(MedsslError):
    stage = "shift"


class AdaptError(MedsslError):
    stage = "adapt"


class RegistryError(MedsslError):
    """A model the registry (or the disk) does not hold: the reference the user gave names nothing."""

    stage = "registry"


class WorkflowError(MedsslError):
    stage = "run"


class ScheduleError(MedsslError):
    stage = "schedule"


class ReviewError(MedsslError):
    """The review app cannot start or export (no manifest, no readers, no pseudonym key to name readers)."""

    stage = "review"
