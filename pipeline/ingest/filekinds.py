"""What a file is before it is read as DICOM: the formats an archive holds beside its images, and the
reason a file that does not parse as DICOM gets (another format, or a DICOM file that is corrupt)."""

from __future__ import annotations

import os

from pipeline.data.reasons import Reason, Rejected

# Objects that carry pixel data but are not images of the patient to learn from.
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation object (SEG)",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose grid",
    "1.2.840.10008.1.3.10": "DICOMDIR (media directory)",
}
NON_IMAGE_EXTENSIONS = {
    ".nii": "NIfTI",
    ".gz": "compressed file",
    ".npz": "NumPy archive",
    ".npy": "NumPy array",
    ".json": "JSON",
    ".csv": "CSV table",
    ".bval": "b-values",
    ".bvec": "b-vectors",
    ".md": "Markdown",
    ".txt": "text",
    ".xml": "XML",
    ".html": "HTML",
    ".pdf": "PDF",
    ".zip": "ZIP archive",
    ".sh": "script",
}
DICOM_EXTENSIONS = {".dcm", ".dicom", ".ima", ""}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def looks_like_text(head: bytes) -> bool:
    """UTF-8 without NUL bytes: a sidecar, a note or a script, not a corrupt binary."""
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def classify_non_dicom(path: str, head: bytes) -> Rejected:
    """Why a file pydicom cannot parse is rejected: another format (NOT_AN_IMAGE) or a broken DICOM file."""
    name = os.path.basename(path).lower()
    ext = os.path.splitext(name)[1]
    if name.endswith(".nii.gz") or ext in {".nii", ".npz", ".npy", ".nrrd", ".mha", ".mhd"}:
        return Rejected(
            Reason.NOT_AN_IMAGE, f"{NON_IMAGE_EXTENSIONS.get(ext, ext)} file: not an ingestible input format"
        )
    if ext in DICOM_EXTENSIONS and not looks_like_text(head):
        return Rejected(Reason.CORRUPT_FILE, "not parseable as DICOM")
    if looks_like_text(head):
        return Rejected(Reason.NOT_AN_IMAGE, f"{NON_IMAGE_EXTENSIONS.get(ext, 'text')} file")
    return Rejected(Reason.NOT_AN_IMAGE, f"unrecognised {ext or 'extensionless'} file")
