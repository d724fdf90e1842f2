"""The MLflow model registry: ``store`` logs, registers, aliases, pins and loads models; ``pyfunc`` is the
detector MLflow serves to anyone who loads ``models:/<name>-detector@champion``."""
