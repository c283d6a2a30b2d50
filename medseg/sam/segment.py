"""Prompted SAM2 segmentation of slices (encode once, prompt many times) and volumes (propagation).

Coordinates: a plane normal to ``axis`` has rows/cols = the two other array axes in
order (:func:`medseg.sam.prompts.in_plane_axes`); SAM2's ``(x, y)`` are ``(col, row)``
scaled by ``image_size / cols`` and ``image_size / rows``, as ``sam2`` does for video frames.
Results are label :class:`~medseg.Volume` objects on the input grid (same shape and affine).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.sam.preprocess import Preprocess, scale_volume, slice_to_tensor, take_slice
from medseg.sam.prompts import SlicePrompt, in_plane_axes, prompt_from_coordinates
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: Logit magnitude given to a binary mask prompt (SAM2 clamps mask logits to +-32).
MASK_PROMPT_LOGIT = 10.0
#: sam2's default hole filling (8 pixels of the image_size/4 mask), done here with scipy.
SAM2_FILL_HOLE_AREA_LOWRES = 8


# ----------------------------------------------------------------------------- core (shared with fine-tuning)
def encode_images(net: Any, images: Any) -> dict[str, Any]:
    """Run the image encoder on ``images`` ``[B, 3, S, S]`` (normalised); returns SAM decoder features.

    Returns:
        ``{"image_embed": [B, 256, S/16, S/16], "high_res_feats": [[B, 32, S/4, S/4], [B, 64, S/8, S/8]]}``
        (channel counts as in Meta's configurations).
    """
    backbone_out = net.forward_image(images)
    _, vision_feats, _, feat_sizes = net._prepare_backbone_features(backbone_out)
    if net.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + net.no_mem_embed
    b = images.shape[0]
    feats = [f.permute(1, 2, 0).reshape(b, -1, *size) for f, size in zip(vision_feats, feat_sizes)]
    return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}


def decode_masks(
    net: Any,
    feats: dict[str, Any],
    *,
    coords: Any = None,
    labels: Any = None,
    mask_logits: Any = None,
    multimask: bool = False,
) -> tuple[Any, Any]:
    """SAM2 prompt encoder + mask decoder on encoded images.

    Args:
        net: a SAM2 module.
        feats: :func:`encode_images` output for ``B`` images (one prompt set per image).
        coords: ``[B, N, 2]`` float ``(x, y)`` in model input pixels (0..S); boxes are two
            points with labels 2 and 3, placed first.
        labels: ``[B, N]`` int: 1 inside, 0 outside, 2/3 box corners.
        mask_logits: ``[B, 1, S/4, S/4]`` mask prompt logits, or ``None``.
        multimask: return the 3 candidate masks instead of 1.

    Returns:
        ``(low_res_logits [B, C, S/4, S/4], iou_pred [B, C])`` with ``C`` = 3 or 1.
    """
    points = None if coords is None else (coords, labels)
    sparse, dense = net.sam_prompt_encoder(points=points, boxes=None, masks=mask_logits)
    low_res, iou, _, _ = net.sam_mask_decoder(
        image_embeddings=feats["image_embed"],
        image_pe=net.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=feats["high_res_feats"],
    )
    return low_res, iou


def prompt_tensors(prompt: SlicePrompt, plane_shape: tuple[int, int], image_size: int, device: Any) -> tuple[Any, Any, Any]:
    """``(coords [1, N, 2], labels [1, N], mask_logits [1, 1, S/4, S/4])`` for one prompt (``None`` where absent)."""
    import torch
    import torch.nn.functional as F

    rows, cols = plane_shape
    scale = np.array([image_size / cols, image_size / rows])
    xy: list[np.ndarray] = []
    lab: list[np.ndarray] = []
    if prompt.box is not None:
        a0, b0, a1, b1 = prompt.box
        xy.append(np.array([[b0, a0], [b1, a1]]) * scale)
        lab.append(np.array([2, 3]))
    if prompt.points is not None:
        xy.append(prompt.points[:, ::-1] * scale)
        lab.append(prompt.point_labels)
    coords = labels = mask_logits = None
    if xy:
        coords = torch.as_tensor(np.concatenate(xy), dtype=torch.float32, device=device)[None]
        labels = torch.as_tensor(np.concatenate(lab), dtype=torch.int32, device=device)[None]
    if prompt.mask is not None:
        m = torch.as_tensor(prompt.mask, dtype=torch.float32, device=device)[None, None]
        low = image_size // 4
        m = F.interpolate(m, size=(low, low), mode="bilinear", align_corners=False, antialias=True)
        mask_logits = (m * 2.0 - 1.0) * MASK_PROMPT_LOGIT
    return coords, labels, mask_logits


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background components of at most ``max_area`` pixels inside a 2D mask (scipy; no sam2 ``_C``)."""
    if max_area <= 0 or not mask.any():
        return mask
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    areas = np.bincount(labels.ravel())
    small = areas <= max_area
    small[0] = False
    return mask | small[labels]


def _default_hole_area(plane_shape: tuple[int, int], image_size: int) -> int:
    low = (image_size // 4) ** 2
    return int(round(SAM2_FILL_HOLE_AREA_LOWRES * plane_shape[0] * plane_shape[1] / low))


# ----------------------------------------------------------------------------- 2D
@dataclass
class SliceMask:
    """A predicted mask on one plane.

    Attributes:
        mask: ``(rows, cols)`` bool.
        score: SAM2's predicted IoU of the chosen mask.
        logits: ``(rows, cols)`` float32 logits (threshold 0).
        low_res_logits: ``[1, 1, S/4, S/4]`` tensor, usable as the next mask prompt.
    """

    mask: np.ndarray
    score: float
    logits: np.ndarray
    low_res_logits: Any


class EncodedSlice:
    """One slice encoded by the image encoder; :meth:`predict` answers prompts without re-encoding."""

    def __init__(self, net: Any, volume: Volume, slice_index: int, axis: int, feats: dict[str, Any], fill_hole_area: int | None) -> None:
        self.net = net
        self.volume = volume
        self.slice_index = slice_index
        self.axis = axis
        self.feats = feats
        a, b = in_plane_axes(axis)
        self.plane_shape = (volume.spatial_shape[a], volume.spatial_shape[b])
        self.fill_hole_area = (
            _default_hole_area(self.plane_shape, net.image_size) if fill_hole_area is None else int(fill_hole_area)
        )

    def predict_prompt(self, prompt: SlicePrompt, *, multimask: bool | None = None) -> SliceMask:
        """Predict the mask of one :class:`SlicePrompt` (must be on this slice)."""
        import torch
        import torch.nn.functional as F

        if prompt.slice_index != self.slice_index or prompt.axis != self.axis:
            raise InputError(
                f"prompt is on slice {prompt.slice_index} (axis {prompt.axis}); this slice is "
                f"{self.slice_index} (axis {self.axis})"
            )
        prompt.check_plane(self.volume.spatial_shape)
        device = self.feats["image_embed"].device
        coords, labels, mask_logits = prompt_tensors(prompt, self.plane_shape, self.net.image_size, device)
        if multimask is None:  # ambiguous single click: choose among 3 candidates as SAM2 does
            multimask = prompt.box is None and prompt.points is not None and len(prompt.points) == 1
        with torch.inference_mode():
            low_res, iou = decode_masks(
                self.net, self.feats, coords=coords, labels=labels, mask_logits=mask_logits, multimask=multimask
            )
            best = int(torch.argmax(iou[0]))
            low = low_res[:, best : best + 1].clamp(-32.0, 32.0)
            full = F.interpolate(low, size=self.plane_shape, mode="bilinear", align_corners=False)[0, 0]
        logits = full.float().cpu().numpy()
        mask = fill_small_holes(logits > 0, self.fill_hole_area)
        return SliceMask(mask=mask, score=float(iou[0, best]), logits=logits, low_res_logits=low)

    def predict(
        self,
        *,
        points: Any = None,
        labels: Sequence[int] | None = None,
        box: Any = None,
        mask: np.ndarray | None = None,
        coordinates: str = "voxel",
        multimask: bool | None = None,
    ) -> SliceMask:
        """Predict from points, a box and/or a mask on this slice.

        Args:
            points: ``(N, 3)`` voxel ``(i, j, k)`` or world mm, or ``(N, 2)`` in-plane voxel indices.
            labels: ``(N,)`` 1 inside / 0 outside (default all 1).
            box: two corners ``(2, 3)`` (voxel or world) or ``[a0, b0, a1, b1]`` in-plane voxel indices.
            mask: ``(rows, cols)`` bool mask prompt.
            coordinates: ``"voxel"`` or ``"world"`` (RAS+ mm) for 3D points and boxes.
        """
        return self.predict_prompt(
            _make_prompt(self.volume, self.slice_index, self.axis, points, labels, box, mask, coordinates),
            multimask=multimask,
        )

    def to_volume(self, mask: np.ndarray, *, object_id: int = 1) -> Volume:
        """A label Volume on the input grid holding ``mask`` on this slice (zeros elsewhere)."""
        out = np.zeros(self.volume.spatial_shape, dtype=np.uint8 if object_id < 256 else np.uint16)
        idx = [slice(None)] * 3
        idx[self.axis] = self.slice_index
        out[tuple(idx)] = np.where(mask, object_id, 0)
        return _label_volume(self.volume, out)


def _make_prompt(volume, slice_index, axis, points, labels, box, mask, coordinates, object_id: int = 1) -> SlicePrompt:
    if points is None and box is None:
        if mask is None:
            raise InputError("give points, a box or a mask prompt")
        prompt = SlicePrompt(slice_index, axis, object_id, mask=mask)
    else:
        prompt = prompt_from_coordinates(
            volume, axis=axis, object_id=object_id, points=points, point_labels=labels, box=box,
            slice_index=slice_index, coordinates=coordinates,
        )
        if mask is not None:
            prompt.mask = np.asarray(mask, dtype=bool)
    prompt.check_plane(volume.spatial_shape)
    return prompt


def _label_volume(volume: Volume, array: np.ndarray) -> Volume:
    return Volume(array, volume.affine.copy(), {**volume.meta, "source": "sam2"}, is_label=True)


def _check_volume(volume: Volume) -> None:
    if volume.ndim != 3 or volume.channel_first:
        raise InputError(f"SAM2 segments 3D single-channel volumes, got shape {volume.shape}")


class SlicePredictor:
    """Scales a volume once (CT window / MR percentiles), then encodes slices on demand.

    Example::

        predictor = SlicePredictor(net, ct_volume, preprocess=Preprocess(window="liver"))
        enc = predictor.encode(40, axis=2)          # image encoder runs once
        liver = enc.predict(box=[20, 30, 60, 80])   # each prompt: decoder only
        lesion = enc.predict(points=[[41, 57]])
    """

    def __init__(self, net: Any, volume: Volume, *, preprocess: Preprocess | None = None, fill_hole_area: int | None = None) -> None:
        _check_volume(volume)
        self.net = net
        self.volume = volume
        self.preprocess = preprocess or _stored_preprocess(net)
        self.scaled = scale_volume(volume, self.preprocess)
        self.fill_hole_area = fill_hole_area
        self._cache: OrderedDict[tuple[int, int], EncodedSlice] = OrderedDict()

    def encode(self, slice_index: int, axis: int = 2) -> EncodedSlice:
        """Encode one slice (the last 4 encoded slices are cached)."""
        import torch

        key = (int(axis), int(slice_index))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        plane = take_slice(self.scaled, slice_index, axis)
        device = next(self.net.parameters()).device
        image = slice_to_tensor(plane, self.net.image_size, device)[None]
        with torch.inference_mode():
            feats = encode_images(self.net, image)
        enc = EncodedSlice(self.net, self.volume, int(slice_index), int(axis), feats, self.fill_hole_area)
        self._cache[key] = enc
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return enc

    def segment(self, prompts: Sequence[SlicePrompt]) -> Volume:
        """Segment each prompt on its own slice (no propagation); one label Volume on the input grid.

        Objects that overlap on a slice go to the one with the larger logit.
        """
        out = np.zeros(self.volume.spatial_shape, dtype=_label_dtype(prompts))
        by_slice: dict[tuple[int, int], list[SlicePrompt]] = {}
        for p in prompts:
            by_slice.setdefault((p.axis, p.slice_index), []).append(p)
        for (axis, s), group in by_slice.items():
            enc = self.encode(s, axis)
            best = np.full(enc.plane_shape, 0.0, dtype=np.float32)
            plane = np.zeros(enc.plane_shape, dtype=out.dtype)
            for p in group:
                res = enc.predict_prompt(p)
                win = res.mask & (res.logits > best)
                plane[win] = p.object_id
                best = np.where(win, res.logits, best)
            idx = [slice(None)] * 3
            idx[axis] = s
            out[tuple(idx)] = np.where(plane > 0, plane, out[tuple(idx)])
        return _label_volume(self.volume, out)


def _label_dtype(prompts: Sequence[SlicePrompt]) -> Any:
    return np.uint8 if max((p.object_id for p in prompts), default=1) < 256 else np.uint16


def _stored_preprocess(net: Any) -> Preprocess:
    stored = getattr(net, "medseg_sam2", {}).get("preprocess")
    return Preprocess.from_dict(stored) if stored else Preprocess()


def segment_slice(
    volume: Volume,
    slice_index: int,
    axis: int = 2,
    *,
    model: Any,
    points: Any = None,
    labels: Sequence[int] | None = None,
    box: Any = None,
    mask: np.ndarray | None = None,
    coordinates: str = "voxel",
    preprocess: Preprocess | None = None,
    object_id: int = 1,
) -> Volume:
    """Segment one slice of ``volume`` from a point / box / mask prompt.

    For many prompts on the same slice use :class:`SlicePredictor` (encodes once).

    Args:
        volume: 3D image ``[i, j, k]`` (CT in HU, or MR).
        slice_index: plane index along ``axis``.
        axis: 0, 1 or 2 (i, j, k).
        model: a SAM2 module from :func:`medseg.sam.build_sam2` / :func:`medseg.sam.load_sam2`.
        points, labels, box, mask, coordinates: see :meth:`EncodedSlice.predict`.
        preprocess: intensity mapping (default: the checkpoint's, else auto CT/MR).
        object_id: label value written for the object.

    Returns:
        a label Volume on the input grid, ``object_id`` on the segmented slice, 0 elsewhere.
    """
    predictor = SlicePredictor(model, volume, preprocess=preprocess)
    enc = predictor.encode(slice_index, axis)
    prompt = _make_prompt(volume, int(slice_index), int(axis), points, labels, box, mask, coordinates, object_id)
    return enc.to_volume(enc.predict_prompt(prompt).mask, object_id=object_id)


# ----------------------------------------------------------------------------- 3D propagation
class _Frames:
    """Slices of a scaled volume turned into SAM2 input tensors on demand (no JPEG round trip)."""

    def __init__(self, scaled: np.ndarray, axis: int, image_size: int) -> None:
        self.scaled, self.axis, self.image_size = scaled, axis, image_size

    def __len__(self) -> int:
        return self.scaled.shape[self.axis]

    def __getitem__(self, index: int) -> Any:
        return slice_to_tensor(take_slice(self.scaled, int(index), self.axis), self.image_size)


def _init_state(net: Any, frames: _Frames, plane_shape: tuple[int, int]) -> dict[str, Any]:
    """The inference state of ``SAM2VideoPredictor.init_state`` for in-memory frames."""
    device = next(net.parameters()).device
    return {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": False,
        "video_height": plane_shape[0],
        "video_width": plane_shape[1],
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def _merge(prompts: Sequence[SlicePrompt]) -> list[SlicePrompt]:
    """One prompt per (object, slice): points concatenated; two boxes or two masks are an error."""
    merged: dict[tuple[int, int], SlicePrompt] = {}
    for p in prompts:
        key = (p.object_id, p.slice_index)
        if key not in merged:
            merged[key] = SlicePrompt(p.slice_index, p.axis, p.object_id, p.points, p.point_labels, p.box, p.mask)
            continue
        m = merged[key]
        if (m.box is not None and p.box is not None) or (m.mask is not None and p.mask is not None):
            raise InputError(f"object {p.object_id} has two boxes or two masks on slice {p.slice_index}")
        if p.points is not None:
            m.points = p.points if m.points is None else np.concatenate([m.points, p.points])
            m.point_labels = p.point_labels if m.point_labels is None else np.concatenate([m.point_labels, p.point_labels])
        m.box = p.box if m.box is None else m.box
        m.mask = p.mask if m.mask is None else m.mask
    return list(merged.values())


def _float_memory(state: dict[str, Any]) -> None:
    """Cast stored memory features back to float32.

    ``SAM2VideoPredictor`` stores them as bfloat16, which only works under CUDA autocast;
    medseg runs float32 on every device, so a memory made only of those features would
    meet float32 weights in the memory attention.
    """
    import torch

    for per_obj in state["output_dict_per_obj"].values():
        for outputs in per_obj.values():
            for out in outputs.values():
                feats = out.get("maskmem_features")
                if feats is not None and feats.dtype == torch.bfloat16:
                    out["maskmem_features"] = feats.float()


def propagate(
    model: Any,
    volume: Volume,
    prompts: Sequence[SlicePrompt],
    *,
    preprocess: Preprocess | None = None,
    fill_hole_area: int | None = None,
    direction: str = "both",
) -> Volume:
    """Propagate prompted key slices through the volume with SAM2's video memory.

    Every object (``object_id``) may be prompted on one or more key slices (all along
    the same ``axis``). Slices are fed to the video predictor from memory in index order;
    tracking runs forward from the first key slice and backward from the last one, and
    where both passes cover a slice their logits are averaged. Overlaps go to the object
    with the larger logit.

    Args:
        model: a SAM2 module (:func:`medseg.sam.build_sam2` / :func:`medseg.sam.load_sam2`).
        volume: 3D image ``[i, j, k]``.
        prompts: key-slice prompts (points/box, or a mask alone on a slice).
        preprocess: intensity mapping (default: the checkpoint's, else auto CT/MR).
        fill_hole_area: fill background holes up to this many in-plane voxels
            (default: sam2's 8 low-resolution pixels, scaled to the plane).
        direction: ``"both"``, ``"forward"`` (increasing index) or ``"backward"``.

    Returns:
        a label Volume on the input grid (uint8 / uint16 object ids).
    """
    import torch

    _check_volume(volume)
    if not prompts:
        raise InputError("propagation needs at least one prompt")
    if direction not in ("both", "forward", "backward"):
        raise InputError(f"direction must be 'both', 'forward' or 'backward', got {direction!r}")
    axes = {p.axis for p in prompts}
    if len(axes) != 1:
        raise InputError(f"all key-slice prompts must share one slice axis, got axes {sorted(axes)}")
    axis = axes.pop()
    for p in prompts:
        p.check_plane(volume.spatial_shape)
    pre = preprocess or _stored_preprocess(model)
    a, b = in_plane_axes(axis)
    plane_shape = (volume.spatial_shape[a], volume.spatial_shape[b])
    holes = _default_hole_area(plane_shape, model.image_size) if fill_hole_area is None else int(fill_hole_area)
    state = _init_state(model, _Frames(scale_volume(volume, pre), axis, model.image_size), plane_shape)
    device = state["device"]
    with torch.inference_mode():
        for p in _merge(prompts):
            if p.points is None and p.box is None:
                model.add_new_mask(state, frame_idx=p.slice_index, obj_id=p.object_id, mask=torch.as_tensor(p.mask))
                continue
            if p.mask is not None:
                log.warning("object %d slice %d: mask prompt ignored in propagation (points/box used)", p.object_id, p.slice_index)
            pts = None if p.points is None else torch.as_tensor(p.points[:, ::-1].copy(), dtype=torch.float32, device=device)
            lab = None if p.points is None else torch.as_tensor(p.point_labels, dtype=torch.int32, device=device)
            box = None if p.box is None else torch.as_tensor(p.box[[1, 0, 3, 2]], dtype=torch.float32, device=device)
            model.add_new_points_or_box(state, frame_idx=p.slice_index, obj_id=p.object_id, points=pts, labels=lab, box=box)
        obj_ids = list(state["obj_ids"])
        model.propagate_in_video_preflight(state)  # encodes the key slices' memories (bfloat16)
        _float_memory(state)
        forward: dict[int, np.ndarray] = {}
        final: dict[int, np.ndarray] = {}
        if direction in ("both", "forward"):
            for frame, _, logits in model.propagate_in_video(state, reverse=False):
                _float_memory(state)
                forward[frame] = logits[:, 0].float().cpu().numpy().astype(np.float16)
        if direction in ("both", "backward"):
            for frame, _, logits in model.propagate_in_video(state, reverse=True):
                _float_memory(state)
                back = logits[:, 0].float().cpu().numpy()
                final[frame] = back if frame not in forward else (back + forward.pop(frame).astype(np.float32)) / 2
        for frame, logit in forward.items():
            final[frame] = logit.astype(np.float32)
    ids = np.asarray(obj_ids)
    out = np.zeros(volume.spatial_shape, dtype=np.uint8 if ids.max() < 256 else np.uint16)
    for frame, logit in final.items():
        masks = np.stack([fill_small_holes(lg > 0, holes) for lg in logit])
        score = np.where(masks, logit, -np.inf)
        winner = np.argmax(score, axis=0)
        plane = np.where(masks.any(0), ids[winner], 0)
        idx = [slice(None)] * 3
        idx[axis] = frame
        out[tuple(idx)] = plane
    log.info("propagated %d object(s) over %d slices along axis %d", len(ids), len(final), axis)
    return _label_volume(volume, out)


__all__ = [
    "encode_images",
    "decode_masks",
    "prompt_tensors",
    "fill_small_holes",
    "SliceMask",
    "EncodedSlice",
    "SlicePredictor",
    "segment_slice",
    "propagate",
]
