"""A randomly initialised 3D U-Net export for the phantom's labels: for tests, benchmarks and examples.

The folder is a normal export (``model.pt`` + ``model.json``) that ``medseg predict`` and
``medseg batch`` accept; nothing is trained or downloaded, so its predictions are
meaningless but its shapes, grids, timings and file formats are real.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence


def make_random_export(
    out_dir: str | os.PathLike[str],
    *,
    model_config: dict[str, Any] | None = None,
    patch_size: Sequence[int] = (32, 32, 16),
    overlap: float = 0.25,
    batch_size: int = 1,
    target_spacing_mm: Sequence[float] = (4.0, 4.0, 5.0),
    seed: int = 0,
) -> Path:
    """Write a random ``unet3d`` export labelled like :data:`medseg.data.phantom.LABELS`.

    Args:
        out_dir: export folder (created).
        model_config: ``unet3d`` settings besides the channel counts (default: a tiny
            MONAI UNet, filters 4-8-8).
        patch_size: sliding-window patch ``[i, j, k]`` in voxels of the model grid.
        overlap, batch_size: sliding-window settings recorded in ``model.json``.
        target_spacing_mm: model grid spacing ``[i, j, k]`` in mm (RAS).
        seed: torch seed of the initialisation.

    Returns:
        the export folder.
    """
    import torch

    from medseg.data.phantom import LABELS
    from medseg.models import create_model
    from medseg.models.export import save_export

    torch.manual_seed(seed)
    cfg = {"in_channels": 1, "out_channels": len(LABELS) + 1,
           **(model_config or {"filters": [4, 8, 8], "strides": [1, 2, 2]})}
    info = {
        "model": {"name": "unet3d", "config": cfg},
        "spatial_dims": 3,
        "labels": {"0": "background", **{str(k): v for k, v in LABELS.items()}},
        "preprocessing": {"orientation": "RAS", "target_spacing_mm": [float(s) for s in target_spacing_mm],
                          "normalization": {"kind": "ct", "clip": [-160.0, 240.0], "mean": 60.0, "std": 50.0}},
        "inference": {"patch_size": [int(p) for p in patch_size], "overlap": float(overlap),
                      "batch_size": int(batch_size)},
    }
    return save_export(out_dir, create_model("unet3d", **cfg), info)


__all__ = ["make_random_export"]
