"""The file MLflow logs as the served detector's code ("models from code"): it names the class, so the
logged model holds no pickled Python object. Not imported by the pipeline; MLflow runs it on load."""

from mlflow.models import set_model

from pipeline.registry.pyfunc import ServedDetector

set_model(ServedDetector())
