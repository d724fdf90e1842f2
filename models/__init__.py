"""Torch modules and losses only (encoders, SSL methods, heads): no file I/O, no MLflow, no config files.

``METHODS`` maps a method name from a config to its class, as solo-learn's registry does.
"""

from models.simclr import SimCLR

METHODS = {"simclr": SimCLR}

__all__ = ["METHODS", "SimCLR"]
