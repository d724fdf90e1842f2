"""Where detectors registered before ``pipeline/registry`` existed find their class.

Their logged code (``scorer_model.py``) runs ``from pipeline.scorer import DetectorScorer``; in a process
that has already imported this ``pipeline`` (every medssl stage), that import resolves here. The class is
the served detector of today, which loads their ``detector.pt`` artifact unchanged.
"""

from pipeline.registry.pyfunc import ServedDetector as DetectorScorer

__all__ = ["DetectorScorer"]
