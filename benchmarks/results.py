"""Writing a benchmark's figures into its own marked section of RESULTS.md, leaving the others as they are; and
where the benchmarks find the shared images."""

from __future__ import annotations

import os
from itertools import takewhile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# The public images of ../shared/data; $MEDSSL_SHARED_DATA points elsewhere (the GPU machine, where ../shared
# does not travel and benchmarks/gpu_prepare.sh copies what its check needs).
SHARED = Path(os.environ.get("MEDSSL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def write_section(path: Path, name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{body}\n{end}"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text += f"\n{block}\n"
    path.write_text(text)


def section_rows(path: Path, name: str) -> list[str]:
    """The rows of a section's first table (the ``| ...`` lines right below its first ``|---`` line), so a run
    that measures part of a table can keep the rows it did not measure; tables further down are derived."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    if start not in text:
        return []
    lines = text.split(start, 1)[1].split(end, 1)[0].splitlines()
    below = next((i for i, line in enumerate(lines) if line.startswith("|---")), len(lines))
    return list(takewhile(lambda line: line.startswith("| "), lines[below + 1 :]))
