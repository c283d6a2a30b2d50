"""Preprocessing (one implementation shared by training and inference) and MONAI recipes.

``medseg.transforms.preprocess`` holds the deterministic steps (orientation, spacing,
intensity normalisation); ``medseg.transforms.recipes`` builds MONAI dictionary
transform pipelines from YAML. Nothing heavy is imported here.
"""

from __future__ import annotations

from medseg.transforms.preprocess import (
    normalize_intensity,
    preprocess_pair,
    resample_to_grid,
    resample_to_spacing,
    to_canonical,
)

__all__ = ["normalize_intensity", "preprocess_pair", "resample_to_grid", "resample_to_spacing", "to_canonical"]
