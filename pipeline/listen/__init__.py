"""Listen: a DICOM C-STORE receiver, so a PACS can route studies to medssl (an AE title and a port) for the
daily batch, as many departments route to an AI node, instead of medssl pulling them over DICOMweb."""

from __future__ import annotations

import signal
import threading

from rich.console import Console

from pipeline.config import Config
from pipeline.listen.receiver import ListenResult, Receiver

__all__ = ["ListenResult", "Receiver", "run_listen"]


def run_listen(config: Config, console: Console) -> ListenResult:
    """Serve until SIGINT or SIGTERM, then stop cleanly (see ``Receiver.stop``); the counts of the whole run."""
    rx = Receiver(config, console)
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
