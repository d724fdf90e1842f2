"""View recipes per modality, named so a config can say ``views: us`` instead of three numbers.

A recipe is how much of an image a random view may crop away, which axes it may flip along, and how much
intensity change (gamma, blur, noise) it teaches the encoder to ignore. What is safe to teach differs by
modality, which is why one recipe tuned on 28x28 PneumoniaMNIST does not fit the others:

- chest X-ray (``cxr``): laterality is anatomy (the heart sits left), so no flip; the finding is often a
  subtle density, so intensity changes stay moderate and crops keep most of the lung fields;
- ultrasound (``us``): left-right carries no meaning in a B-mode frame and gain varies by operator, so
  flips and strong intensity changes are free invariances; lesions are small, so crops stay large;
- brain MR (``mr``): roughly left-right symmetric, so flips are safe; scanners differ in contrast, so
  intensity changes are wanted; crops keep most of the slice, as a tumour may sit at its edge.

Each has a ``-weak`` form, the semi mode's weak view: the same geometry, milder crops, no intensity change.
They follow from what each modality allows; benchmarks/view_presets.py compares them with the other recipes
on each set's validation part (benchmarks/RESULTS.md, "View presets", says how far that has got).
"""

from __future__ import annotations

from typing import Any

VIEW_PRESETS: dict[str, dict[str, Any]] = {
    "cxr": {"crop_min": 0.7, "flip_axes": [], "intensity": 0.5},
    "cxr-weak": {"crop_min": 0.9, "flip_axes": [], "intensity": 0.0},
    "us": {"crop_min": 0.6, "flip_axes": [0], "intensity": 1.0},
    "us-weak": {"crop_min": 0.9, "flip_axes": [0], "intensity": 0.0},
    "mr": {"crop_min": 0.6, "flip_axes": [0], "intensity": 0.8},
    "mr-weak": {"crop_min": 0.9, "flip_axes": [0], "intensity": 0.0},
}


def view_preset(value: Any) -> Any:
    """A preset's recipe when ``value`` names one; any other value is left to the recipe's own checks."""
    if not isinstance(value, str):
        return value
    if value not in VIEW_PRESETS:
        raise ValueError(f"unknown view preset {value!r}; presets: {', '.join(VIEW_PRESETS)}")
    return dict(VIEW_PRESETS[value])
