"""The registry module: a detector registered by an earlier layout of the package still loads (its logged
code names ``pipeline.scorer.DetectorScorer``), and a reference that names nothing is a RegistryError."""

from __future__ import annotations

import mlflow
import pytest
import torch
from conftest import TINY_ENCODER

from models.detectors import Classifier
from models.encoders import build_encoder
from pipeline.config import TrackingConfig
from pipeline.errors import RegistryError
from pipeline.registry.store import load_model, pin_model

# The file MLflow logged as a detector's code before the registry package (pipeline/scorer_model.py then).
OLD_MODEL_CODE = """from mlflow.models import set_model

from pipeline.scorer import DetectorScorer

set_model(DetectorScorer())
"""


def test_a_detector_registered_by_the_old_layout_still_loads(tmp_path):
    torch.manual_seed(0)
    encoder, dim = build_encoder(2, 1, TINY_ENCODER["widths"], TINY_ENCODER["layers"])
    detector = Classifier(encoder, dim).eval()
    detector.input_spec = {"spatial_dims": 2, "size": 28, "volume_side": 128}
    torch.save(detector, tmp_path / "detector.pt")
    (tmp_path / "scorer_model.py").write_text(OLD_MODEL_CODE)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_experiment("old-layout")  # this store's, not one an earlier test left active
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="detector",
            python_model=str(tmp_path / "scorer_model.py"),
            artifacts={"detector": str(tmp_path / "detector.pt")},
            registered_model_name="old-detector",
        )
    loaded, _ = load_model("models:/old-detector/1", tracking)
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), detector(images))
    assert pin_model("models:/old-detector/latest", tracking) == ("old-detector", "1", "models:/old-detector/1")


def test_a_reference_that_names_nothing_is_a_registry_error(tmp_path):
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(RegistryError, match="model not found: models:/none@champion"):
        pin_model("models:/none@champion", tracking)
    with pytest.raises(RegistryError, match=r"model not found: .*missing\.pt"):
        load_model(str(tmp_path / "missing.pt"), tracking)
