"""``python -m pipeline.cli``: the ``medssl`` command where no console script is installed (``torchrun -m``
on the GPU machine, whose Python has medssl on its path but not installed)."""

from pipeline.cli.app import app

app()
