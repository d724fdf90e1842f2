"""Torch modules and losses only (encoders, SSL methods, heads): no file I/O, no MLflow, no config files.

``METHODS`` maps a method name from a config to its class, as solo-learn's registry does.
"""

from models.dino import DINO
from models.moco import MoCo
from models.simclr import SimCLR

METHODS = {"simclr": SimCLR, "moco": MoCo, "dino": DINO}

__all__ = ["DINO", "METHODS", "MoCo", "SimCLR"]
