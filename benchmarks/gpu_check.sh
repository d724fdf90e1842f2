#!/usr/bin/env bash
# The one call on the lent GPU machine: `bash benchmarks/gpu_check.sh` (carry [".gpu"], made here first by
# benchmarks/gpu_prepare.sh). The CPU dry run, here: `bash benchmarks/gpu_check.sh --device cpu --quick`.
# Arguments go on to benchmarks/gpu_check.py (--steps, --out, ...); the figures come out as RESULTS.md rows,
# and in $OUT/gpu-check.md when the device tool gives an $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  # The GPU machine: its image's Python and torch, and the wheels its image lacks, unpacked beside them.
  PY=python3
  SITE=/tmp/medssl-site
  [ -d "$SITE" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu/wheels/*.whl
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d ../shared/data ] || export MEDSSL_SHARED_DATA="$PWD/.gpu/data"
OUTDIR=${OUT:-benchmarks/work/gpu-check}
exec "$PY" benchmarks/gpu_check.py --out "$OUTDIR" "$@"
