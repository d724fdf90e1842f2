#!/usr/bin/env bash
# Gather here what benchmarks/gpu_check.sh needs on the lent GPU machine, into .gpu/ (git ignores it):
# - .gpu/wheels: cp312 wheels, at the lock's versions, of what medssl imports and the machine's image lacks
#   (../shared/GPU_NOTES.md lists them);
# - .gpu/data: the PneumoniaMNIST npz and BUSI at 128x128 (../shared does not travel).
# Then, from the device tool: run `bash benchmarks/gpu_check.sh` with carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${MEDSSL_SHARED_DATA:-../shared/data}
PKGS="monai nibabel pydicom pylibjpeg pydantic pydantic-core annotated-types typing-inspection pydantic-extra-types
email-validator dask distributed partd locket zict tblib tornado cachetools mlflow-skinny mlflow-tracing databricks-sdk
google-auth googleapis-common-protos opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions
opentelemetry-proto fastapi starlette python-multipart sniffio sqlparse importlib-metadata jsonschema
jsonschema-specifications referencing rpds-py arrow isoduration dill setproctitle"
mkdir -p .gpu/wheels .gpu/data/pneumoniamnist
: > .gpu/wheels.txt
for pkg in $PKGS; do
  grep -i -E "^${pkg}==" requirements.lock >> .gpu/wheels.txt || { echo "not in the lock: $pkg" >&2; exit 1; }
done
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/wheels -r .gpu/wheels.txt
cp "$SHARED/pneumoniamnist/pneumoniamnist_trainval.npz" .gpu/data/pneumoniamnist/
.venv/bin/python - "$SHARED/busi" .gpu/data/busi <<'PY'
"""BUSI's images at 128x128 (the datapath step's source), with its labels.csv."""
import shutil
import sys
from pathlib import Path

from PIL import Image

source, out = Path(sys.argv[1]), Path(sys.argv[2])
for png in sorted(source.rglob("*.png")):
    if "_mask" in png.name:
        continue
    dest = out / png.relative_to(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.open(png).convert("L").resize((128, 128), Image.BILINEAR).save(dest)
shutil.copy(source / "labels.csv", out / "labels.csv")
PY
du -sh .gpu
