"""What the receiver accepts: image storage in the transfer syntaxes ingest decodes, and verification (C-ECHO).

Both lists are read off the libraries rather than written out, so they follow what is installed:
- transfer syntaxes: every one pydicom has a working pixel decoder for here (uncompressed, deflate, RLE, JPEG
  baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K with the plugins of the lock), since ingest decodes
  through exactly those. A sender offering only another syntax (MPEG video, JPIP) has that context refused at
  association and can transcode, instead of its instances being stored and rejected by ingest the next day.
- SOP classes: pynetdicom's storage classes whose DICOM name is an "... Image Storage". Structured reports,
  presentation states, segmentations, RT objects, waveforms and documents carry no image ingest can learn
  from (it rejects them as NOT_AN_IMAGE); refusing them also keeps the SRs medssl publishes to the PACS from
  being routed back to it.
"""

from __future__ import annotations

from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification


def readable_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixel data pydicom can decode with the decoders installed here."""
    readable = []
    for uid in AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                readable.append(uid)
        except NotImplementedError:  # pydicom has no decoder for it at all (video, JPIP)
            continue
    return readable


def image_storage_classes() -> list[str]:
    """The storage SOP classes of images (CT, MR, CR/DX, US, PET, NM, XA, secondary capture, VL, ...)."""
    return [
        cx.abstract_syntax for cx in AllStoragePresentationContexts if "Image Storage" in UID(cx.abstract_syntax).name
    ]


def supported_contexts() -> list[PresentationContext]:
    """Every image storage class in every readable syntax, and verification."""
    syntaxes = readable_syntaxes()
    return [build_context(sop_class, syntaxes) for sop_class in image_storage_classes()] + [build_context(Verification)]
