"""Torch modules and losses only (encoders, SSL methods, heads): no file I/O, no MLflow, no config files."""
