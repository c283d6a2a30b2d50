"""Ordinary (non-medical) 2D images: Pillow I/O and folder evaluation with the same metrics.

- :mod:`~medseg.general.images`: ``read_image`` (``[H, W, C]``), ``read_mask`` (``[H, W]``
  integer labels; palette PNGs keep their indices), ``save_mask``;
- :mod:`~medseg.general.evaluate`: ``evaluate_image_folder`` (mmsegmentation-style
  mIoU/mDice/aAcc from one dataset confusion matrix, per-image Dice/IoU/Boundary IoU);
- :mod:`~medseg.general.predict`: ``predict_image_folder`` (an exported 2D model over a
  folder of images, ``<stem>.png`` masks and ``predictions.jsonl``).

The models for ordinary images (``deeplabv3plus``, ``segformer``) live in
:mod:`medseg.models.general2d` and are created with ``medseg.models.create_model``.
Submodules are imported on first use, so ``import medseg.general`` loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_image": "images", "read_mask": "images", "save_mask": "images",
    "IMAGE_SUFFIXES": "images", "MASK_SUFFIXES": "images",
    "evaluate_image_folder": "evaluate", "ImageEvaluationResult": "evaluate", "match_images": "evaluate",
    "load_class_names": "evaluate", "dataset_metrics": "evaluate",
    "predict_image_folder": "predict",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"medseg.general.{module}"), name)


__all__ = sorted(_EXPORTS)
