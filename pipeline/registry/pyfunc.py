"""The served detector: the registered detector as an ``mlflow.pyfunc`` model, image paths or arrays in,
anomaly scores out.

Anyone with MLflow can score images with ``mlflow.pyfunc.load_model("models:/medssl-detector@champion")``
without running the pipeline: the model carries this module, the detector (``detector.pt``) and the
preprocessing the detector was trained with (ingest's image layout, then the pretrain stage's intensity
scaling, resize and centre crop), so a PNG scores the same here as after ``medssl ingest``.

Inputs ``predict`` accepts: a DataFrame with a ``path`` column, a path or a list of paths, one 2D array ``(rows,
cols)``, a stack ``(n, rows, cols)``, or a list of 2D arrays (grey, or ``(rows, cols, 3)`` colour), as an
image viewer shows them. Output: a DataFrame with one ``score`` per image (higher: more likely abnormal).

What it serves is 2D images, scaled as ingest scales PNG and JPEG (percentiles). A detector of 3D volumes,
or one trained on DICOM series (a CT window in Hounsfield units, slices averaged per scan), scores those
series after ``medssl ingest`` with ``medssl score``; this model refuses 3D detectors rather than guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from pipeline.data.images import read_image, volume_layout
from pipeline.data.transforms import KEY, centred

DICOM_SUFFIXES = (".dcm", ".dicom", "")


def _channels_first(pixels: np.ndarray) -> np.ndarray:
    """An image's pixels -> ingest's layout -> ``(C, X, Y)`` float, as ``load_volume`` reads it back."""
    vol = volume_layout(np.asarray(pixels))[:, :, 0]
    return np.ascontiguousarray(np.moveaxis(vol, -1, 0) if vol.ndim == 3 else vol[None]).astype(np.float32)


def _images(model_input: Any) -> list[np.ndarray]:
    if isinstance(model_input, pd.DataFrame):
        if "path" not in model_input.columns:
            raise ValueError(f"a DataFrame input needs a 'path' column, has {list(model_input.columns)}")
        model_input = model_input["path"].tolist()
    if isinstance(model_input, str | Path):
        model_input = [model_input]
    if isinstance(model_input, np.ndarray):
        model_input = [model_input] if model_input.ndim == 2 else list(model_input)
    out = []
    for item in model_input:
        if isinstance(item, str | Path):
            if Path(item).suffix.lower() in DICOM_SUFFIXES:
                raise ValueError(f"{Path(item).name}: DICOM goes through medssl ingest first; give PNG/JPEG or arrays")
            item = read_image(item)
        out.append(_channels_first(item))
    return out


class ServedDetector(mlflow.pyfunc.PythonModel):
    """Loads ``detector.pt`` (a torch module with ``input_spec``) and scores images with it on the CPU."""

    # MLflow wraps a subclass's predict to validate inputs against its type hints, and warns (on every import
    # of this module, so in every stage) when there are none; paths or arrays have no hint to give.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.detector = torch.load(context.artifacts["detector"], map_location="cpu", weights_only=False).eval()
        spec = self.detector.input_spec
        self.prepare = centred(spec["spatial_dims"], spec["size"], spec.get("volume_side", 128))

    # No annotation on model_input: MLflow reads one as an input schema, and paths or arrays have none.
    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        if self.detector.input_spec["spatial_dims"] != 2:
            raise ValueError(
                "this detector scores 3D volumes: ingest the series (medssl ingest) and score them with medssl score"
            )
        batch = torch.stack(
            [torch.as_tensor(self.prepare({KEY: image, "modality": "OT"})[KEY]) for image in _images(model_input)]
        )
        with torch.no_grad():
            scores = self.detector(batch.float()).numpy()
        return pd.DataFrame({"score": scores.astype(np.float64)})
