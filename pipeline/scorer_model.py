"""The file MLflow logs as the detector's model code ("models from code"): it names the scorer class, so
the logged model holds no pickled Python object."""

from mlflow.models import set_model

from pipeline.scorer import DetectorScorer

set_model(DetectorScorer())
