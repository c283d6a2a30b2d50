"""Build the object that segments studies from a model path: a U-Net Predictor or a SAM2 refiner.

``medseg predict`` and ``medseg batch`` accept the same ``--model``: an exported U-Net
(``model.json`` + ``model.pt``), a list of them (ensemble), or a promptable SAM2 model
(a medseg SAM2 export whose ``model.json`` says ``inference.mode = "prompted"``, or a
SAM2 checkpoint file such as Meta's ``sam2.1_hiera_tiny.pt``). SAM2 needs prompts: they
come from another model's prediction (``prompt_model``) or from a label map given per
study (``prompt_labels`` at predict time). Models trained elsewhere and brought in with
``medseg import`` (nnU-Net v2, MONAI bundles, model sets; :data:`IMPORTED_FAMILIES`), and raw
nnU-Net model folders, load as their own segmenters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from medseg.errors import ConfigError, InputError

PathLike = str | os.PathLike[str]


def is_prompted_model(path: PathLike) -> bool:
    """True for a SAM2 model (medseg SAM2 export or a SAM2 checkpoint file), False for a U-Net export.

    Raises:
        InputError: ``path`` does not exist.
        ModelError: an export folder with an invalid ``model.json``.
    """
    from medseg.models.export import read_info

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such model file or folder")
    if imported_family(p) is not None:
        return False
    try:
        info = read_info(p)
    except InputError:
        if p.is_file():  # a bare checkpoint: only SAM2 models are accepted as such
            return True
        raise
    return info.get("inference", {}).get("mode") == "prompted"


#: families of models trained elsewhere, imported by ``medseg import``: name -> "module:class" of their segmenter
IMPORTED_FAMILIES = {
    "nnunet": "medseg.inference.nnunet:NnunetSegmenter",
    "monai_bundle": "medseg.inference.monai_bundle:BundleSegmenter",
    "model_set": "medseg.inference.model_set:ModelSet",
}


def imported_family(path: PathLike) -> str | None:
    """The family of an imported model (an export of :data:`IMPORTED_FAMILIES`, or a raw nnU-Net
    model folder: ``"nnunet"``), ``None`` for medseg's own models. Reads only JSON files."""
    from medseg.models.export import read_export
    from medseg.models.nnunet import is_model_folder

    p = Path(path)
    if is_model_folder(p):
        return "nnunet"
    try:
        name = read_export(p).name
    except InputError:  # not an export folder: medseg's own checks report it
        return None
    return name if name in IMPORTED_FAMILIES else None


def _load_imported(family: str, path: PathLike, *, device: str | None, tta: bool) -> Any:
    import importlib

    module, _, cls = IMPORTED_FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), cls).from_path(path, device=device, tta=tta)


@dataclass(frozen=True)
class PromptSettings:
    """How SAM2 is prompted from a label map (see :func:`medseg.sam.prompts.prompts_from_mask`).

    Attributes:
        kind: ``"box"``, ``"points"``, ``"box+points"`` or ``"mask"``.
        key_slices: ``"largest"`` (the slice of largest cross-section per label),
            ``"center"``, ``"all"`` or a step ``n`` (every n-th slice holding the label).
        axis: slice axis of the canonical (RAS) array, 2 = axial.
        mode: ``"propagate"`` (through the whole volume) or ``"slices"`` (key slices only).
        sam_config: SAM2 architecture of a bare checkpoint (``tiny``, ``sam2.1_hiera_l``, ...);
            ``None``: read from the checkpoint's tensors.
        image_size: SAM2 input size in pixels (``None``: the checkpoint's, else 1024).
    """

    kind: str = "box"
    key_slices: str | int = "largest"
    axis: int = 2
    mode: str = "propagate"
    sam_config: str | None = None
    image_size: int | None = None

    def __post_init__(self) -> None:
        from medseg.sam.prompts import PROMPT_KINDS
        from medseg.inference.sam2 import MODES

        if self.kind not in PROMPT_KINDS:
            raise ConfigError(f"prompt kind {self.kind!r} unknown; choose from {', '.join(PROMPT_KINDS)}")
        if self.mode not in MODES:
            raise ConfigError(f"SAM2 mode {self.mode!r} unknown; choose from {', '.join(MODES)}")
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"prompt axis must be 0, 1 or 2, got {self.axis}")


def check_prompt_sources(
    paths: Sequence[PathLike], *, prompt_model: PathLike | None = None, prompt_labels_given: bool = False
) -> bool:
    """Check that a model list and its prompt sources fit together; True when it is a SAM2 model.

    Reads only ``model.json`` files (no weights), so a batch can fail fast before any worker starts.

    Raises:
        ConfigError: SAM2 without exactly one prompt source, prompts for a U-Net, SAM2 in an
            ensemble, or a SAM2 model as the prompt model.
    """
    if not paths:
        raise ConfigError("no model given")
    if not any(is_prompted_model(p) for p in paths):
        if prompt_model is not None or prompt_labels_given:
            raise ConfigError(f"{paths[0]} is not a promptable (SAM2) model: prompts are not used with it")
        return False
    if len(paths) > 1:
        raise ConfigError("a SAM2 model cannot be part of an ensemble; give one --model")
    if prompt_model is None and not prompt_labels_given:
        raise ConfigError(
            f"{paths[0]} is a promptable SAM2 model: give --prompt-model (a U-Net export whose "
            "prediction prompts it) or per-study prompt label maps (--prompt-masks / --prompt-mask)"
        )
    if prompt_model is not None and prompt_labels_given:
        raise ConfigError("give either a prompt model or prompt label maps, not both")
    if prompt_model is not None and is_prompted_model(prompt_model):
        raise ConfigError(f"--prompt-model {prompt_model}: must be a U-Net export, not another SAM2 model")
    return True


def load_segmenter(
    model: PathLike | Sequence[PathLike],
    *,
    device: str | None = None,
    tta: bool = False,
    prompt_model: PathLike | None = None,
    prompt_labels_given: bool = False,
    prompts: PromptSettings | None = None,
) -> Any:
    """A loaded segmenter with ``predict(volume) -> label Volume``, ``label_names`` and ``model_sha256``.

    Args:
        model: U-Net export(s), or one SAM2 export / checkpoint.
        device: torch device (default CUDA when available).
        tta: mirror test-time augmentation (U-Nets and the SAM2 prompt model).
        prompt_model: with a SAM2 ``model``, the U-Net export whose prediction prompts it.
        prompt_labels_given: with a SAM2 ``model``, prompts come from a label map passed
            to ``predict(volume, prompt_labels=...)`` for each study instead.
        prompts: how prompts are derived from the label map.

    Raises:
        ConfigError: SAM2 without a prompt source, prompts for a U-Net, or an ensemble
            that mixes SAM2 with U-Nets.
    """
    from medseg.inference.predictor import Predictor

    paths = [model] if isinstance(model, (str, os.PathLike)) else list(model)
    families = [imported_family(p) for p in paths]
    if any(families):
        if len(paths) > 1 or prompt_model is not None or prompt_labels_given:
            raise ConfigError(f"{paths[0]}: an imported {next(f for f in families if f)} model is used alone "
                              "(no ensemble with other --model, no prompts); combine models with a model set")
        return _load_imported(families[0], paths[0], device=device, tta=tta)
    if not check_prompt_sources(paths, prompt_model=prompt_model, prompt_labels_given=prompt_labels_given):
        return Predictor.from_run(paths if len(paths) > 1 else paths[0], device=device, tta=tta)
    from medseg.inference.sam2 import Sam2Refiner

    settings = prompts or PromptSettings()
    first = Predictor.from_run(prompt_model, device=device, tta=tta) if prompt_model is not None else None
    return Sam2Refiner(paths[0], first, prompt_kind=settings.kind, key_slices=settings.key_slices,
                       axis=settings.axis, mode=settings.mode, device=device, sam_config=settings.sam_config,
                       image_size=settings.image_size)


__all__ = ["load_segmenter", "check_prompt_sources", "is_prompted_model", "imported_family", "PromptSettings",
           "IMPORTED_FAMILIES"]
