"""SAM2 as a segmenter: :class:`Sam2Refiner` (prompted by a model or a label map) and
:func:`segment_study` (prompted by a prompts file or mask; ``medseg sam2 segment``).

Both write through :func:`medseg.inference.outputs.write_outputs`, like every segmenter.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from medseg.errors import InputError, MedsegError
from medseg.sam.preprocess import Preprocess
from medseg.sam.prompts import SlicePrompt, load_prompts, parse_prompts, prompts_from_mask, save_prompts

log = logging.getLogger(__name__)

MODES = ("propagate", "slices")


def segment_study(
    model: Any,
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    prompts: str | os.PathLike[str] | list[SlicePrompt] | dict[str, Any] | None = None,
    prompt_mask: str | os.PathLike[str] | None = None,
    prompt_kind: str = "box",
    key_slices: str | int = "largest",
    labels: list[int] | None = None,
    axis: int = 2,
    mode: str = "propagate",
    preprocess: Preprocess | None = None,
    series_uid: str | None = None,
    formats: tuple[str, ...] | None = None,
    label_names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Load a study, prompt SAM2, write ``{stem}_sam2.nii.gz`` (+ ``.dcm`` DICOM-SEG) and a JSON record.

    Args:
        model: a SAM2 module (:func:`medseg.sam.load_sam2`).
        input_path: DICOM folder/file, NIfTI, NRRD or MHA.
        out_dir: output folder.
        prompts: a prompts JSON file (world or voxel coordinates), its decoded content, or prompt objects.
        prompt_mask: alternatively, a label map on the same grid (reference or another model's
            output) from which prompts are derived (``prompt_kind``, ``key_slices``, ``axis``).
        mode: ``"propagate"`` (through the volume from the key slices) or ``"slices"``
            (only the prompted slices).
        labels: with ``prompt_mask``, the label values to prompt (default: all present).
        formats: subset of ``("nifti", "dicomseg")``; default NIfTI, plus DICOM-SEG for DICOM input.
        label_names: names of the object ids for DICOM-SEG (default ``object N``).

    Returns:
        the record written to ``{stem}_sam2.json`` (inputs, prompts, outputs, ``timings_s``).
    """
    from medseg.inference.outputs import OutputNames, resolve_formats, study_stem, write_outputs
    from medseg.io import load
    from medseg.io.atomic import write_text_atomic
    from medseg.sam.segment import SlicePredictor, propagate

    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if (prompts is None) == (prompt_mask is None):
        raise InputError("give exactly one of a prompts file or a prompt mask")
    t0 = time.perf_counter()
    src, out = Path(input_path), Path(out_dir)
    volume = load(src, series_uid=series_uid)
    if isinstance(prompts, list):
        plist = prompts
    elif isinstance(prompts, dict):
        plist = parse_prompts(prompts, volume, source="command-line prompts")
    elif prompts is not None:
        plist = load_prompts(prompts, volume)
    else:
        ref = load(Path(prompt_mask))
        if not ref.same_grid(volume, atol=1e-3):
            raise InputError(f"{prompt_mask}: prompt mask is not on the grid of {src} "
                             f"(shape {ref.spatial_shape} vs {volume.spatial_shape})")
        plist = prompts_from_mask(ref, axis=axis, kind=prompt_kind, key_slices=key_slices, labels=labels)
        if not plist:
            raise InputError(f"{prompt_mask}: the prompt mask is empty")
    wanted = resolve_formats(volume, formats, strict=True, source=str(src))
    t_load = time.perf_counter()
    if mode == "propagate":
        labels = propagate(model, volume, plist, preprocess=preprocess)
    else:
        labels = SlicePredictor(model, volume, preprocess=preprocess).segment(plist)
    t_seg = time.perf_counter()
    stem = study_stem(src)
    ids = sorted({p.object_id for p in plist})
    names = {i: (label_names or {}).get(i, f"object {i}") for i in ids}
    written = write_outputs(labels, volume, out, names=OutputNames.for_stem(stem, tag="sam2"), formats=wanted,
                            label_names=names, algorithm_name="medseg SAM2")
    outputs = {k: str(v) for k, v in written.paths.items()}
    outputs["prompts"] = str(save_prompts(plist, out / f"{stem}_sam2_prompts.json", volume=volume))
    record = {
        "input": str(src),
        "series_uid": volume.meta.get("series_uid"),
        "mode": mode,
        "model": dict(getattr(model, "medseg_sam2", {})),
        "objects": ids,
        "prompts": len(plist),
        "voxels_per_object": {str(i): int((labels.array == i).sum()) for i in ids},
        "outputs": outputs,
        "checksums": dict(written.checksums),
        "timings_s": {"load": round(t_load - t0, 4), "segment": round(t_seg - t_load, 4),
                      "write": round(sum(written.timings_s.values()), 4), "total": round(time.perf_counter() - t0, 4)},
    }
    write_text_atomic(out / f"{stem}_sam2.json", json.dumps(record, indent=2) + "\n")
    log.info("SAM2 %s: %d object(s) -> %s", mode, len(ids), out)
    return record


class Sam2Refiner:
    """SAM2 prompted by another model's prediction: a drop-in for :class:`medseg.inference.Predictor`.

    ``predict(volume)`` runs ``prompt_predictor`` (e.g. a U-Net export), derives prompts
    from its label map (``prompt_kind`` on ``key_slices`` along ``axis``), and returns
    SAM2's label map on the input grid (propagated, or only on the key slices). It has the
    ``label_names`` and ``model_sha256`` that ``medseg.inference.outputs.predict_to_files``
    and ``medseg batch`` use, so a SAM2 refinement stage needs no per-case prompts.

    Args:
        sam: a SAM2 module, or a checkpoint / export path for :func:`medseg.sam.load_sam2`.
        prompt_predictor: an object with ``predict(volume) -> label Volume`` and
            ``label_names``, the path of an exported model (loaded with
            ``Predictor.from_run``), or ``None`` when every call passes ``prompt_labels``.
        prompt_kind, key_slices, axis: how prompts are derived (see :func:`prompts_from_mask`).
        mode: ``"propagate"`` or ``"slices"``.
        preprocess: SAM2 intensity mapping (default: the checkpoint's, else auto CT/MR).
        device: torch device for both models.
        sam_config, image_size: architecture and input size of a bare SAM2 checkpoint
            (default: read from the checkpoint; see :func:`medseg.models.sam2.load_sam2`).
    """

    def __init__(
        self,
        sam: Any,
        prompt_predictor: Any,
        *,
        prompt_kind: str = "box",
        key_slices: str | int = "largest",
        axis: int = 2,
        mode: str = "propagate",
        preprocess: Preprocess | None = None,
        device: Any = None,
        sam_config: str | None = None,
        image_size: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._sam_labels: dict[int, str] = {}
        self._sam_sha256 = ""
        if isinstance(sam, (str, os.PathLike)):
            from medseg.models.sam2 import load_sam2

            self._sam_labels, self._sam_sha256 = _source_description(Path(sam))
            sam = load_sam2(sam, device=device, config=sam_config, image_size=image_size)
        if isinstance(prompt_predictor, (str, os.PathLike)):
            from medseg.inference import Predictor

            prompt_predictor = Predictor.from_run(prompt_predictor, device=None if device is None else str(device))
        self.net, self.prompt_predictor = sam, prompt_predictor
        self.prompt_kind, self.key_slices, self.axis, self.mode = prompt_kind, key_slices, axis, mode
        self.preprocess = preprocess
        self.last_timings: dict[str, float] = {}

    @property
    def label_names(self) -> dict[int, str]:
        """The prompt model's label names (SAM2 keeps its object ids), else the SAM2 export's."""
        if self.prompt_predictor is not None:
            return dict(self.prompt_predictor.label_names)
        return dict(self._sam_labels) or {0: "background", 1: "object"}

    @property
    def model_sha256(self) -> str:
        """SHA-256 of the SAM2 weights file (when loaded from a file) + the prompt model's."""
        own = self._sam_sha256
        return f"{own}+{getattr(self.prompt_predictor, 'model_sha256', '') or 'prompt-labels'}"

    def predict(self, volume: Any, *, return_probabilities: bool = False, prompt_labels: Any = None) -> Any:
        """SAM2 labels on ``volume``'s grid.

        Args:
            volume: the image (any orientation).
            prompt_labels: a label map on ``volume``'s grid to derive the prompts from
                (a reference, or another tool's output); default: the prompt model's prediction.

        Raises:
            InputError: probabilities asked, no prompt source, or ``prompt_labels`` on another grid.
        """
        import numpy as np

        from medseg.sam.segment import SlicePredictor, propagate

        if return_probabilities:
            raise InputError("SAM2 refinement gives labels only (no class probabilities)")
        t0 = time.perf_counter()
        if prompt_labels is not None:
            if not prompt_labels.same_grid(volume, atol=1e-3):
                raise InputError(f"prompt label map {prompt_labels.meta.get('source', '')} is not on the image grid "
                                 f"(shape {prompt_labels.spatial_shape} vs {volume.spatial_shape})")
            first = prompt_labels
        elif self.prompt_predictor is not None:
            first = self.prompt_predictor.predict(volume)
        else:
            raise InputError("SAM2 needs prompts: pass prompt_labels= or build the refiner with a prompt model")
        t1 = time.perf_counter()
        plist = prompts_from_mask(first, axis=self.axis, kind=self.prompt_kind, key_slices=self.key_slices)
        if not plist:
            log.warning("the prompt model found nothing: empty SAM2 result")
            out = first.with_array(np.zeros(volume.spatial_shape, dtype=np.uint8), is_label=True)
        elif self.mode == "propagate":
            out = propagate(self.net, volume, plist, preprocess=self.preprocess)
        else:
            out = SlicePredictor(self.net, volume, preprocess=self.preprocess).segment(plist)
        self.last_timings = {"prompt_model_s": t1 - t0, "sam2_s": time.perf_counter() - t1}
        return out


def _source_description(source: Path) -> tuple[dict[int, str], str]:
    """``({value: name}, SHA-256 of the weights)`` of a SAM2 export (from its ``model.json``) or checkpoint file.

    Read once when the refiner is built, so that a batch does not hash the weights per study.
    """
    from medseg.models.export import read_info, sha256_file

    try:
        info = read_info(source)
    except MedsegError:  # a bare checkpoint file (e.g. Meta's): no labels, hash the file itself
        return {}, sha256_file(source) if source.is_file() else ""
    return {int(k): str(v) for k, v in info.get("labels", {}).items()}, str(info.get("sha256", ""))


__all__ = ["segment_study", "Sam2Refiner", "MODES"]
