"""SAM2 on medical volumes: promptable slice segmentation, propagation through volumes, fine-tuning.

Wraps Meta's ``sam2`` package (Apache-2.0; installed without its CUDA extension).
Public API (imported lazily, so ``import medseg.sam`` does not import torch)::

    from medseg.sam import build_sam2, load_sam2, SlicePredictor, segment_slice, propagate
    from medseg.sam import Preprocess, SlicePrompt, load_prompts, prompts_from_mask

Axis order: volumes are ``[i, j, k]``; a slice along ``axis`` has rows/cols = the two
other axes in order. Prompt coordinates are voxel indices or world RAS+ mm.
"""

from __future__ import annotations

from medseg.lazy import lazy_exports

_EXPORTS = {
    "build_sam2": "medseg.models.sam2",
    "load_sam2": "medseg.models.sam2",
    "save_checkpoint": "medseg.models.sam2",
    "read_checkpoint": "medseg.models.sam2",
    "CONFIGS": "medseg.models.sam2",
    "Preprocess": "medseg.sam.preprocess",
    "CT_WINDOWS": "medseg.sam.preprocess",
    "SlicePrompt": "medseg.sam.prompts",
    "load_prompts": "medseg.sam.prompts",
    "save_prompts": "medseg.sam.prompts",
    "parse_prompts": "medseg.sam.prompts",
    "prompts_from_mask": "medseg.sam.prompts",
    "prompt_from_coordinates": "medseg.sam.prompts",
    "SlicePredictor": "medseg.sam.segment",
    "segment_slice": "medseg.sam.segment",
    "propagate": "medseg.sam.segment",
    "export_sam2": "medseg.sam.export",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
