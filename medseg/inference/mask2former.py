"""``medseg predict-images`` for a Mask2Former export whose task is ``instance`` or ``panoptic`` (the family's
registry ``image_predictor``; a ``semantic`` export takes the dense path of
:func:`medseg.inference.images.predict_image_folder`, whose argmax is transformers' semantic post-processing).

Each image is normalised as the export says (:func:`medseg.models.apply2d.image_tensor`) and run once
through :func:`medseg.models.mask2former.segments` (zero-padded at the bottom and right to the backbone's
multiple of 32; transformers' ``post_process_instance_segmentation`` or ``post_process_panoptic_segmentation``
with no resize, cropped back to the image's own ``H x W``; the same function scores the validation of
instance training). Segments of class 0 (background) and of classes the export does not name are dropped;
a panoptic export's stuff classes (its labels that are not the ``dataset.things`` of its training data)
have one segment each. The rest are written by :mod:`medseg.inference.instances` (``<stem>_instances.png/.json`` + the semantic
union ``<stem>.png``), ids 1, 2, ... in decreasing score. The score threshold is ``threshold``, else the
export's ``inference.threshold``, else transformers' 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from medseg.errors import ModelError
from medseg.models.mask2former import THRESHOLD, segments


def predict_mask2former_folder(model: str | os.PathLike[str], input_dir: str | os.PathLike[str],
                               output_dir: str | os.PathLike[str], *, device: str | None = None,
                               overwrite: bool = False, on_image: Callable[[dict[str, Any]], None] | None = None,
                               threshold: float | None = None) -> list[dict[str, Any]]:
    """Segment every image of ``input_dir`` with an instance or panoptic Mask2Former export (module docstring).

    Returns:
        One record per image in stem order (``input``, ``output``, ``shape``, ``seconds``, ``status``,
        ``error``, ``instances``).

    Raises:
        InputError: no images, ``output_dir`` equal to ``input_dir``.
        ModelError: not a Mask2Former export of an instance or panoptic task.
    """
    from medseg.inference.images import export_task
    from medseg.inference.instances import check_folders, segment_folder
    from medseg.models.apply2d import image_tensor
    from medseg.models.export import load_exported, resolve_device
    from medseg.models.mask2former import segment_processor

    src, out = check_folders(input_dir, output_dir)
    dev = resolve_device(device)
    net, info = load_exported(model, device=dev)
    task = export_task(info)
    if not hasattr(net, "model") or task not in ("instance", "panoptic"):
        raise ModelError(f"{model}: a {info['model']['name']!r} export of task {task!r}, not an instance or "
                         "panoptic Mask2Former")
    processor = segment_processor(net.num_classes)
    spec = (info.get("preprocessing") or {}).get("normalization")
    in_channels = int(info["model"]["config"].get("in_channels", 3))
    cut = float(threshold if threshold is not None else (info.get("inference") or {}).get("threshold", THRESHOLD))
    classes = sorted(int(k) for k in info.get("labels") or {}) or None
    things = (info.get("dataset") or {}).get("things")
    stuff = sorted(set(classes or ()) - set(things) - {0}) if task == "panoptic" and things is not None else None

    def segment(image: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        return segments(net, processor, image_tensor(image, spec, in_channels), task=task, threshold=cut, device=dev,
                        classes=classes, stuff=stuff)

    return segment_folder(src, out, segment, overwrite=overwrite, on_image=on_image)


__all__ = ["THRESHOLD", "segments", "predict_mask2former_folder"]
