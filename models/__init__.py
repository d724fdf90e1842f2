"""Torch modules and losses only (encoders, SSL methods, heads): no file I/O, no MLflow, no config files.

``METHODS`` maps a method name from a config to its class, as solo-learn's registry does.
"""

from models.dino import DINO
from models.mae import MAE
from models.moco import MoCo
from models.simclr import SimCLR

# Contrastive and distillation methods take an encoder from models.encoders; MAE builds its own ViT.
METHODS = {"simclr": SimCLR, "moco": MoCo, "dino": DINO, "mae": MAE}

__all__ = ["DINO", "MAE", "METHODS", "MoCo", "SimCLR"]
