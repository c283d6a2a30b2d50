"""The exported model folder: ``model.pt`` (a plain ``state_dict``) + ``model.json``.

This folder is the contract between training and inference. ``model.json`` holds
everything needed to rebuild and use the network: registry name and config, spatial
dims, label names, preprocessing (orientation, target spacing, normalisation),
inference settings (patch size, overlap, batch size), post-processing, the dataset
plan, library versions and the SHA-256 of ``model.pt``. Weights are loaded with
``torch.load(..., weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, ModelError
from medseg.io.atomic import atomic_path, sha256_file, write_text_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # the export folder's layout (model.pt + model.json)
SCHEMA_VERSION = 2  # model.json's schema (ModelExport); files without schema_version are 1
WEIGHTS_NAME = "model.pt"
INFO_NAME = "model.json"
REQUIRED_KEYS = ("model", "spatial_dims", "labels", "preprocessing", "inference")


def library_versions() -> dict[str, str]:
    """Versions of medseg, torch, MONAI, lightning and smp (those that are installed)."""
    from importlib import metadata

    import medseg

    versions = {"medseg": medseg.__version__}
    for dist in ("torch", "monai", "lightning", "segmentation-models-pytorch", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class ModelExport:
    """The typed content of ``model.json``: every export is read and written through this class.

    Attributes:
        name: registry name of the model family (``"unet3d"``).
        config: builder config (:func:`medseg.models.create_model` keywords).
        spatial_dims: 2 or 3 (the network's input).
        labels: ``{label value: name}`` with int keys, ``0`` = background (JSON keys are strings).
        preprocessing: ``orientation``, ``target_spacing_mm`` (mm), ``normalization``
            (:mod:`medseg.transforms.intensity` vocabulary), ``image_order``.
        inference: ``patch_size`` (voxels), ``overlap``, ``batch_size``; ``mode: "prompted"`` for SAM2.
        postprocessing: per-label rules (``{"1": {"largest_component": true, ...}}``).
        plan: the dataset plan the model was trained with (or ``None``).
        training: free-form record of the training run.
        sha256: SHA-256 of ``model.pt``.
        versions: library versions at export time.
        schema_version: version of this schema (:data:`SCHEMA_VERSION`); files without one are version 1.
        extra: any other top-level keys, kept as they were.
    """

    name: str
    config: dict[str, Any]
    spatial_dims: int
    labels: dict[int, str]
    preprocessing: dict[str, Any]
    inference: dict[str, Any]
    postprocessing: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompted(self) -> bool:
        """True for a promptable (SAM2) export: it needs prompts to segment."""
        return self.inference.get("mode") == "prompted"

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "model.json") -> "ModelExport":
        """Parse and check a ``model.json`` dict (schema 1 or 2).

        Raises:
            ModelError: a missing or malformed key, or an unsupported version (the message names it).
        """
        if not isinstance(data, Mapping):
            raise ModelError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ModelError(f"{where}: missing key(s) {', '.join(missing)}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ModelError(f"{where}: format_version {version} is not supported (expected {FORMAT_VERSION})")
        schema = data.get("schema_version", 1)
        if schema not in (1, SCHEMA_VERSION):
            raise ModelError(f"{where}: schema_version {schema!r} is not supported (1 or {SCHEMA_VERSION})")
        model = data["model"]
        if not isinstance(model, Mapping) or not isinstance(model.get("name"), str):
            raise ModelError(f"{where}: 'model' must be {{'name': str, 'config': dict}}, got {model!r}")
        if not isinstance(model.get("config", {}), Mapping):
            raise ModelError(f"{where}: 'model.config' must be a dict")
        if data["spatial_dims"] not in (2, 3):
            raise ModelError(f"{where}: 'spatial_dims' must be 2 or 3, got {data['spatial_dims']!r}")
        labels = data["labels"]
        if not isinstance(labels, Mapping) or not all(str(k).isdigit() for k in labels):
            raise ModelError(f"{where}: 'labels' must map label values (\"0\", \"1\", ...) to names")
        for key in ("preprocessing", "inference"):
            if not isinstance(data[key], Mapping):
                raise ModelError(f"{where}: '{key}' must be a dict")
        _check_ranges(data, where)
        known = {"model", "spatial_dims", "labels", "preprocessing", "inference", "postprocessing", "plan",
                 "training", "sha256", "versions", "schema_version", "format_version"}
        return cls(
            name=model["name"], config=dict(model.get("config", {})), spatial_dims=int(data["spatial_dims"]),
            labels={int(k): str(v) for k, v in labels.items()}, preprocessing=dict(data["preprocessing"]),
            inference=dict(data["inference"]), postprocessing=dict(data.get("postprocessing") or {}),
            plan=data.get("plan"), training=dict(data.get("training") or {}), sha256=str(data.get("sha256", "")),
            versions=dict(data.get("versions") or {}), schema_version=int(schema),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        """The ``model.json`` dict (string label keys, current schema version).

        Example:
            >>> e = ModelExport("unet3d", {}, 3, {0: "background", 1: "liver"}, {}, {"patch_size": [32, 32, 32]})
            >>> e.to_json()["labels"], e.to_json()["schema_version"]
            ({'0': 'background', '1': 'liver'}, 2)
        """
        out: dict[str, Any] = {
            "model": {"name": self.name, "config": dict(self.config)},
            "spatial_dims": self.spatial_dims,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "preprocessing": dict(self.preprocessing),
            "inference": dict(self.inference),
        }
        if self.postprocessing:
            out["postprocessing"] = dict(self.postprocessing)
        if self.plan is not None:
            out["plan"] = self.plan
        if self.training:
            out["training"] = dict(self.training)
        out.update(self.extra)
        out.update({"format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION,
                    "versions": dict(self.versions), "sha256": self.sha256})
        return out


#: bounds of the sizes ``model.json`` may declare (past them an allocation would fail or never end)
MAX_PATCH_VOXELS_PER_AXIS = 4096
SPACING_RANGE_MM = (0.01, 100.0)


def _check_ranges(data: Mapping[str, Any], where: str) -> None:
    """Refuse sizes no machine can allocate: a patch axis outside 1..4096 voxels, a target spacing
    outside 0.01..100 mm, an overlap outside [0, 1), a batch size below 1 (each error names the key)."""
    import math

    inference, pre = data.get("inference") or {}, data.get("preprocessing") or {}
    patch = inference.get("patch_size")
    if patch is not None and (not isinstance(patch, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PATCH_VOXELS_PER_AXIS for v in patch)):
        raise ModelError(f"{where}: inference.patch_size {patch!r} out of range (integers 1..{MAX_PATCH_VOXELS_PER_AXIS} "
                         "voxels per axis)")
    spacing = pre.get("target_spacing_mm")
    low, high = SPACING_RANGE_MM
    if spacing is not None and (not isinstance(spacing, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high
            for v in spacing)):
        raise ModelError(f"{where}: preprocessing.target_spacing_mm {spacing!r} out of range ({low}..{high} mm)")
    overlap = inference.get("overlap")
    if overlap is not None and not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise ModelError(f"{where}: inference.overlap {overlap!r} out of range (0 <= overlap < 1)")
    batch = inference.get("batch_size")
    if batch is not None and not (isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= 4096):
        raise ModelError(f"{where}: inference.batch_size {batch!r} out of range (1..4096)")


def resolve_device(device: Any = None) -> str:
    """The torch device to run on: ``device`` checked, or CUDA when available, else CPU.

    Raises:
        ConfigError: a CUDA device where none is available (or past the last one), or a name
            torch does not know, instead of a failure blamed on the model file later.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device)
    try:
        parsed = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available on this machine "
                              "(torch.cuda.is_available() is False); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return name


def validate_info(info: Mapping[str, Any], *, where: str = "model.json") -> None:
    """Check the structure of a ``model.json`` dict (:meth:`ModelExport.from_json`); raises :class:`ModelError`."""
    ModelExport.from_json(info, where=where)


def save_export(out_dir: str | os.PathLike[str], model: Any, info: Mapping[str, Any] | ModelExport) -> Path:
    """Write ``model.pt`` and ``model.json`` into ``out_dir`` (atomically); returns ``out_dir``.

    Args:
        out_dir: target folder (created).
        model: a ``torch.nn.Module`` (its ``state_dict`` is saved, tensors moved to CPU)
            or a ready ``state_dict`` mapping.
        info: the ``model.json`` content; ``format_version``, ``versions`` and ``sha256``
            are filled in here. Must contain ``model``, ``spatial_dims``, ``labels``,
            ``preprocessing`` and ``inference``.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export = info if isinstance(info, ModelExport) else ModelExport.from_json(info, where=str(out / INFO_NAME))
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        torch.save(state, tmp)
    export.versions = {**library_versions(), **export.versions}
    export.sha256 = sha256_file(out / WEIGHTS_NAME)
    write_text_atomic(out / INFO_NAME, json.dumps(export.to_json(), indent=2, sort_keys=False) + "\n")
    log.info("exported %s to %s", export.name, out)
    return out


def find_export(path: str | os.PathLike[str]) -> Path:
    """The folder holding ``model.json``: ``path`` itself, ``path/export``, or the parent of a file."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    for candidate in (p, p / "export"):
        if (candidate / INFO_NAME).is_file() and (candidate / WEIGHTS_NAME).is_file():
            return candidate
    if not p.exists():
        raise InputError(f"{path}: no such model folder")
    raise InputError(f"{path}: no {INFO_NAME} + {WEIGHTS_NAME} here or in {Path(path) / 'export'}")


def read_export(path: str | os.PathLike[str]) -> ModelExport:
    """The :class:`ModelExport` of an export folder (``RUN_DIR``, ``RUN_DIR/export`` or a file in it).

    Raises:
        InputError: no export there.
        ModelError: ``model.json`` is not valid JSON or not a valid export (names the key).
    """
    folder = find_export(path)
    try:
        data = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{folder / INFO_NAME}: not valid JSON ({exc})") from exc
    return ModelExport.from_json(data, where=str(folder / INFO_NAME))


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``model.json`` of an export folder as a dict, read through :class:`ModelExport` (current schema)."""
    return read_export(path).to_json()


def load_exported(path: str | os.PathLike[str], device: Any = "cpu", *, verify: bool = True) -> tuple[Any, dict[str, Any]]:
    """Rebuild an exported model, in eval mode on ``device``; returns ``(model, info)``.

    Args:
        path: ``RUN_DIR``, ``RUN_DIR/export``, or the ``model.json``/``model.pt`` file.
        device: torch device for the model.
        verify: check ``model.pt`` against the ``sha256`` recorded in ``model.json``.

    Raises:
        InputError: no export found at ``path``.
        ModelError: checksum mismatch, or the weights do not fit the architecture.
    """
    from medseg.models.registry import create_model

    folder = find_export(path)
    export = read_export(folder)
    info = export.to_json()
    weights = folder / WEIGHTS_NAME
    if verify and info.get("sha256") and sha256_file(weights) != info["sha256"]:
        raise ModelError(f"{weights}: SHA-256 does not match model.json (file changed or corrupt)")
    device = resolve_device(device)
    state = read_state_dict(weights, map_location=device)
    from medseg.models.registry import get_model_spec

    config = dict(export.config)
    for key in get_model_spec(export.name).weight_keys:  # initial weights that are gone: the export replaces them
        if isinstance(config.get(key), str) and not Path(config[key]).exists():
            log.info("%s: initial %s %s is gone; the exported weights are used", folder, key, config.pop(key))
    if export.schema_version == 1:
        config = _drop_legacy_keys(export.name, config, where=str(folder / INFO_NAME))
    model = create_model(export.name, **config)
    load_state_exactly(model, state, where=f"{weights}: weights do not fit model {export.name!r}")
    model.to(device).eval()
    return model, info


def _drop_legacy_keys(name: str, config: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Schema-1 exports could carry training settings in ``model.config`` (SAM2's ``init_checkpoint``,
    ``freeze_image_encoder``, ...) that builders no longer take: drop those, saying which."""
    import inspect

    from medseg.models.registry import get_model_spec

    accepted = set(inspect.signature(get_model_spec(name).builder).parameters)
    legacy = sorted(set(config) - accepted)
    if legacy:
        log.info("%s: schema-1 model.config keys %s are training settings, not the network: ignored", where, legacy)
    return {k: v for k, v in config.items() if k in accepted}


def read_state_dict(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> dict[str, Any]:
    """A state_dict from a local file with ``torch.load(weights_only=True)`` (no pickled code runs).

    A ``{"state_dict": {...}}`` wrapper (Lightning checkpoints) is unwrapped.

    Raises:
        ModelError: the file is not a weights-only state_dict, or holds no tensors.
    """
    import torch

    try:
        state = torch.load(path, weights_only=True, map_location=map_location)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/OSError for bad files
        raise ModelError(f"{path}: cannot be loaded as a weights-only state_dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path}: expected a state_dict (a dict of tensors)")
    return state


def load_state_exactly(model: Any, state: Mapping[str, Any], *, where: str) -> None:
    """``model.load_state_dict(state)``; every key must match in name and shape.

    Raises:
        ModelError: ``where`` followed by the shape mismatch or the first missing/unexpected keys.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shape mismatch
        raise ModelError(f"{where}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(f"{where}: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")


__all__ = [
    "FORMAT_VERSION",
    "SCHEMA_VERSION",
    "ModelExport",
    "read_export",
    "save_export",
    "load_exported",
    "resolve_device",
    "load_state_exactly",
    "read_state_dict",
    "read_info",
    "find_export",
    "validate_info",
    "sha256_file",
    "library_versions",
]
