"""``medseg predict-images`` for a Mask2Former export whose task is ``instance`` or ``panoptic`` (the family's
registry ``image_predictor``; a ``semantic`` export takes the dense path of
:func:`medseg.inference.images.predict_image_folder`, whose argmax is transformers' semantic post-processing).

Each image is normalised as the export says (:func:`medseg.models.apply2d.image_tensor`), zero-padded at
the bottom and right to the backbone's multiple of 32, and run once; transformers'
``Mask2FormerImageProcessor.post_process_instance_segmentation`` or ``post_process_panoptic_segmentation``
(no resize: the processor is built with ``do_resize=False``) turns the queries into segments at the padded
size, cropped back to the image's own ``H x W``. Segments of class 0 (background) are dropped; the rest are
written by :mod:`medseg.inference.instances` (``<stem>_instances.png/.json`` + the semantic union
``<stem>.png``), ids 1, 2, ... in decreasing score.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from medseg.errors import ModelError

#: transformers' default score threshold of a kept query
THRESHOLD = 0.5


def segments(net: Any, processor: Any, chw: np.ndarray, *, task: str, threshold: float,
             device: Any = "cpu") -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``(ids [H, W] uint16, table)`` of one normalised ``[C, H, W]`` image through a Mask2Former wrapper
    (:mod:`medseg.models.mask2former`) and transformers' ``task`` post-processing."""
    import torch

    from medseg.inference.instances import ordered_segments
    from medseg.models.apply2d import pad_to_multiple
    from medseg.models.mask2former import MASK2FORMER_STRIDE

    h, w = chw.shape[1:]
    x = torch.from_numpy(pad_to_multiple(chw, MASK2FORMER_STRIDE))[None].to(device)
    post = {"instance": processor.post_process_instance_segmentation,
            "panoptic": processor.post_process_panoptic_segmentation}[task]
    with torch.inference_mode():
        out = net.model(pixel_values=x)
        [result] = post(out, threshold=threshold, target_sizes=[tuple(x.shape[2:])])
    seg = result["segmentation"][:h, :w].cpu().numpy()
    kept = [s for s in result["segments_info"] if int(s["label_id"]) != 0]
    masks = [seg == s["id"] for s in kept]
    return ordered_segments(masks, [int(s["label_id"]) for s in kept], [float(s["score"]) for s in kept], (h, w))


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
    from transformers import Mask2FormerImageProcessor

    from medseg.inference.images import export_task
    from medseg.inference.instances import check_folders, segment_folder
    from medseg.models.apply2d import image_tensor
    from medseg.models.export import load_exported, resolve_device

    src, out = check_folders(input_dir, output_dir)
    dev = resolve_device(device)
    net, info = load_exported(model, device=dev)
    task = export_task(info)
    if not hasattr(net, "model") or task not in ("instance", "panoptic"):
        raise ModelError(f"{model}: a {info['model']['name']!r} export of task {task!r}, not an instance or "
                         "panoptic Mask2Former")
    processor = Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False,
                                          num_labels=net.num_classes)
    spec = (info.get("preprocessing") or {}).get("normalization")
    in_channels = int(info["model"]["config"].get("in_channels", 3))
    cut = float(threshold if threshold is not None else (info.get("inference") or {}).get("threshold", THRESHOLD))

    def segment(image: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        return segments(net, processor, image_tensor(image, spec, in_channels), task=task, threshold=cut, device=dev)

    return segment_folder(src, out, segment, overwrite=overwrite, on_image=on_image)


__all__ = ["THRESHOLD", "segments", "predict_mask2former_folder"]
