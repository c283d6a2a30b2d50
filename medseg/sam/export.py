"""Export a SAM2 model as a medseg model folder (``model.pt`` + ``model.json``).

The folder is the same contract as the U-Nets' exports (:mod:`medseg.models.export`):
``load_sam2(folder)`` and ``medseg.models.export.load_exported(folder)`` both rebuild it.
``model.json`` records the architecture (``config``, ``image_size``, ``overrides``), the
intensity preprocessing and ``inference.mode = "prompted"`` (SAM2 needs prompts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medseg.sam.preprocess import Preprocess


def export_sam2(
    net: Any,
    out_dir: str | os.PathLike[str],
    *,
    preprocess: Preprocess | None = None,
    labels: dict[str, str] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``net`` (a SAM2 module from :func:`medseg.sam.build_sam2`) to ``out_dir``; atomic files.

    Args:
        net: the SAM2 module (its ``medseg_sam2`` settings describe the architecture).
        out_dir: export folder (created).
        preprocess: intensity mapping for inference (default: the one stored on ``net``, else auto).
        labels: label value -> name of the objects it was tuned for (default ``{"1": "object"}``).
        training: free-form record of the fine-tune (steps, data, scores).
    """
    from medseg.models.export import save_export

    settings = dict(getattr(net, "medseg_sam2", {}))
    stored = settings.get("preprocess")
    pre = preprocess or (Preprocess.from_dict(stored) if stored else Preprocess())
    info = {
        "model": {"name": "sam2", "config": {"config": settings.get("config", "sam2.1_hiera_t"),
                                             "image_size": int(settings.get("image_size", net.image_size)),
                                             "overrides": list(settings.get("overrides", []))}},
        "spatial_dims": 2,
        "labels": {"0": "background", **(labels or {"1": "object"})},
        "preprocessing": {"preprocess": pre.to_dict()},
        "inference": {"mode": "prompted", "image_size": int(net.image_size)},
        "training": dict(training or {}),
    }
    return save_export(out_dir, net, info)


__all__ = ["export_sam2"]
