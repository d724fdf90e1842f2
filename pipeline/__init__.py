"""medssl pipeline: the stages (ingest, pretrain, finetune, ...) as plain functions, plus the CLI that wraps them."""

__version__ = "0.1.0"
