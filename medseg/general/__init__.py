"""Deprecated alias (kept for one release): the general-image pieces now live in their rooms.

- image I/O: :mod:`medseg.io.images` (``read_image``, ``read_mask``, ``save_mask``);
- folder evaluation: :mod:`medseg.evaluation.images` (``evaluate_image_folder``, ...);
- the image predictor: :mod:`medseg.inference.images` (``predict_image_folder``, ``ImagePredictor``).

``from medseg.general import X`` still works and resolves to those modules on first use.
"""

from __future__ import annotations

from medseg.lazy import lazy_exports

_EXPORTS = {
    "read_image": "medseg.io.images", "read_mask": "medseg.io.images", "save_mask": "medseg.io.images",
    "IMAGE_SUFFIXES": "medseg.io.images", "MASK_SUFFIXES": "medseg.io.images",
    "evaluate_image_folder": "medseg.evaluation.images", "ImageEvaluationResult": "medseg.evaluation.images",
    "match_images": "medseg.evaluation.images", "load_class_names": "medseg.evaluation.images",
    "dataset_metrics": "medseg.evaluation.images",
    "predict_image_folder": "medseg.inference.images",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
