"""Listen: a DICOM C-STORE receiver, so a PACS can route studies to medssl (an AE title and a port) for the
daily batch, as many departments route to an AI node, instead of medssl pulling them over DICOMweb."""

from __future__ import annotations

import signal
import threading

from rich.console import Console

from pipeline.config import Config
from pipeline.errors import ListenError
from pipeline.listen.receiver import ListenResult, Receiver, utc_today
from pipeline.orchestrate.schedule import DAILY, archive_key, partition

__all__ = ["ListenResult", "Receiver", "receiver", "run_listen"]


def receiver(config: Config, console: Console) -> Receiver:
    """The receiver ``config`` describes, filing into ``schedule.incoming`` under the archive's pseudonym key
    (the one every batch uses, so its keyed names are the DICOMweb pull's for the same study)."""
    incoming = config.schedule.incoming
    if incoming is None:
        raise ListenError("set schedule.incoming: the folder the daily batch reads, where received studies go")
    key = archive_key(config, partition(config, DAILY, utc_today())).get_secret_value().encode()
    return Receiver(config.listen, incoming, key, console)


def run_listen(config: Config, console: Console) -> ListenResult:
    """Serve until SIGINT or SIGTERM, then stop cleanly (see ``Receiver.stop``); the counts of the whole run."""
    rx = receiver(config, console)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rx.start()
        cfg = config.listen
        allowed = ", ".join(cfg.allowed_aes) or "any AE"
        console.print(
            f"listen: AE {cfg.ae_title} on {cfg.host}:{cfg.port} (from {allowed}) into "
            f"{rx.incoming}/YYYY-MM-DD (Ctrl-C or SIGTERM stops it)",
            markup=False,
            highlight=False,
        )
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        result = rx.stop()
    return result
