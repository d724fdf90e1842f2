"""The C-STORE SCP: each instance a PACS or modality sends is filed where the daily batch of its day reads it.

    <incoming>/<YYYY-MM-DD>/<study key>/<series key>/<instance key>.dcm

The date is the UTC day the association began (the calendar of the scheduler's logical dates), so the daily
run of that day ingests it and a study sent across midnight stays whole in one folder. Keys are keyed hashes
of the UIDs, made as the DICOMweb pull names its staging folders, so no name carries a UID; one instance has
one path, and a re-sent instance replaces its copy instead of doubling it. The file holds the dataset exactly
as it was sent (pynetdicom hands over the encoded bytes, which are not decoded and encoded again), behind the
file meta pynetdicom writes for it.

pynetdicom calls the store handler only with a dataset received whole, so a connection dropped or aborted
mid-instance writes nothing. The write is atomic and synced before success is answered (a sender forgets an
instance once told it is stored); a write that fails is answered with a failure status, which the sender
retries. Files are created mode 600 (the atomic temp file's): the user the daily DAG runs as must run this.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer
from rich.console import Console
from rich.markup import escape

from pipeline.atomic import write_durable
from pipeline.config import Config
from pipeline.errors import ListenError
from pipeline.listen.contexts import supported_contexts
from pipeline.orchestrate.schedule import DAILY, archive_key, incoming_folder, partition
from pipeline.pseudonym import pseudonym

log = logging.getLogger(__name__)
# C-STORE statuses (PS3.4 B.2.3): stored; not stored for want of resources (the sender may retry); a dataset
# that lacks what its SOP class requires (here the study and series UIDs it is filed under).
SUCCESS, OUT_OF_RESOURCES, DATASET_MISMATCH = 0x0000, 0xA700, 0xA900


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass
class ListenResult:
    """What the receiver did while it ran: associations served and refused, instances stored and failed."""

    associations: int = 0
    refused: int = 0
    received: int = 0
    failed: int = 0


@dataclass
class _Tally:
    """One association: its calling AE title, the day its instances are filed under, and its counts."""

    ae_title: str
    day: dt.date
    received: int = 0
    failed: int = 0


class Receiver:
    """A pynetdicom storage SCP as ``config.listen`` says, filing into ``schedule.incoming``; ``start`` serves in
    the background, ``stop`` ends it. ``today`` gives the day an association's instances are filed under (the
    UTC date by default).
    """

    def __init__(self, config: Config, console: Console, today: Callable[[], dt.date] = utc_today) -> None:
        if config.schedule.incoming is None:
            raise ListenError("set schedule.incoming: the folder the daily batch reads, where received studies go")
        self.config, self.incoming, self.console, self.today = config, config.schedule.incoming, console, today
        # The archive's key, which every batch uses: the names are the DICOMweb pull's for the same study.
        self.key = archive_key(config, partition(config, DAILY, today())).get_secret_value().encode()
        self.result = ListenResult()
        self._open: dict[Association, _Tally] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Bind the port and serve associations in the background."""
        # pynetdicom's own INFO and DEBUG lines carry UIDs (and, at DEBUG, whole datasets).
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ListenError(f"cannot use incoming folder {self.incoming}: {exc.strerror}") from None
        cfg = self.config.listen
        ae = AE(ae_title=cfg.ae_title)
        ae.supported_contexts = supported_contexts()
        ae.require_calling_aet = cfg.allowed_aes
        handlers: list[Any] = [
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_RELEASED, self._ended),
            (evt.EVT_ABORTED, self._ended),
        ]
        try:
            self._server = ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise ListenError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from None

    def stop(self) -> ListenResult:
        """Stop taking associations, abort those under way (their senders retry what was not acknowledged) and
        wait for their threads, so no handler is left half-way through a write when the process exits."""
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            for assoc in server.active_associations:
                assoc.abort()
                assoc.join()
        return self.result

    def _accepted(self, event: evt.Event) -> None:
        with self._lock:
            self._open[event.assoc] = _Tally(event.assoc.requestor.ae_title, self.today())

    def _rejected(self, event: evt.Event) -> None:
        with self._lock:
            self.result.refused += 1
        self._say(f"refused association from AE {event.assoc.requestor.ae_title}: not in listen.allowed_aes")

    def _ended(self, event: evt.Event) -> None:
        """Released or aborted (by the peer, by ``stop``, or a dropped connection): one line with its counts."""
        with self._lock:
            tally = self._open.pop(event.assoc, None)
        if tally is None:
            return
        how = "released" if event.event is evt.EVT_RELEASED else "aborted"
        self._say(f"AE {tally.ae_title}: {tally.received} instances received, {tally.failed} failed ({how})")
        with self._lock:
            self.result.associations += 1

    def _say(self, line: str) -> None:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.console.print(f"[dim]{stamp}[/] {escape(line)}", highlight=False)

    def _store(self, event: evt.Event) -> int:
        """File one instance; the status tells the sender whether it may forget it."""
        tally = self._open.get(event.assoc) or _Tally(event.assoc.requestor.ae_title, self.today())
        status = self._file(event, tally.day)
        with self._lock:
            if status == SUCCESS:
                tally.received += 1
                self.result.received += 1
            else:
                tally.failed += 1
                self.result.failed += 1
        return status

    def _file(self, event: evt.Event, day: dt.date) -> int:
        try:
            ds = event.dataset
            study, series = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
        except Exception:  # a dataset pydicom cannot parse: nothing to file it under
            study = series = ""
        sop = str(event.request.AffectedSOPInstanceUID or "")
        if not (study and series and sop):
            log.warning("instance from AE %s without study, series or instance UID: refused", _calling_ae(event))
            return DATASET_MISMATCH
        path = (
            cast(Path, incoming_folder(self.config, day))
            / pseudonym(self.key, "study|" + study)
            / pseudonym(self.key, "series|" + series)
            / f"{pseudonym(self.key, 'instance|' + sop)}.dcm"
        )
        try:
            write_durable(path, event.encoded_dataset())
        except OSError as exc:  # the message names the keyed path only
            log.warning("cannot store an instance from AE %s: %s", _calling_ae(event), exc)
            return OUT_OF_RESOURCES
        return SUCCESS


def _calling_ae(event: evt.Event) -> str:
    """The calling AE title of the event's association (it names a device, not a patient: fit for a log)."""
    return str(event.assoc.requestor.ae_title)
