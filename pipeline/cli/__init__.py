"""The ``medssl`` command line: thin wrappers that build a config and call one stage function each."""

from pipeline.cli import data, review, ship, site, train
from pipeline.cli.app import app

__all__ = ["app", "data", "review", "ship", "site", "train"]
