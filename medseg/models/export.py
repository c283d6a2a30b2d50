"""The exported model folder: ``model.pt`` (a plain ``state_dict``) + ``model.json``.

This folder is the contract between training and inference. ``model.json`` holds
everything needed to rebuild and use the network: registry name and config, spatial
dims, label names, preprocessing (orientation, target spacing, normalisation),
inference settings (patch size, overlap, batch size), post-processing, the dataset
plan, library versions and the SHA-256 of ``model.pt``. Weights are loaded with
``torch.load(..., weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.errors import InputError, ModelError
from medseg.io.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.pt"
INFO_NAME = "model.json"
# builder options naming local files of initial weights: the exported state_dict replaces them, so an
# export still loads when that file has been moved or deleted
INITIAL_WEIGHT_KEYS = ("weights", "encoder_weights", "encoder_weights_path", "init_checkpoint")
REQUIRED_KEYS = ("model", "spatial_dims", "labels", "preprocessing", "inference")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def validate_info(info: dict[str, Any], *, where: str = "model.json") -> None:
    """Check the structure of a ``model.json`` dict; raises :class:`ModelError` naming the key."""
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise ModelError(f"{where}: missing key(s) {', '.join(missing)}")
    model = info["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ModelError(f"{where}: 'model' must be {{'name': str, 'config': dict}}, got {model!r}")
    if not isinstance(model.get("config", {}), dict):
        raise ModelError(f"{where}: 'model.config' must be a dict")
    if info["spatial_dims"] not in (2, 3):
        raise ModelError(f"{where}: 'spatial_dims' must be 2 or 3, got {info['spatial_dims']!r}")
    if not isinstance(info["labels"], dict) or not all(str(k).isdigit() for k in info["labels"]):
        raise ModelError(f"{where}: 'labels' must map label values (\"0\", \"1\", ...) to names")


def save_export(out_dir: str | os.PathLike[str], model: Any, info: dict[str, Any]) -> Path:
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
    info = dict(info)
    validate_info(info, where=str(out / INFO_NAME))
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        torch.save(state, tmp)
    info["format_version"] = FORMAT_VERSION
    info["versions"] = {**library_versions(), **info.get("versions", {})}
    info["sha256"] = sha256_file(out / WEIGHTS_NAME)
    write_text_atomic(out / INFO_NAME, json.dumps(info, indent=2, sort_keys=False) + "\n")
    log.info("exported %s to %s", info["model"]["name"], out)
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


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``model.json`` of an export folder (``RUN_DIR`` or ``RUN_DIR/export``)."""
    folder = find_export(path)
    try:
        info = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{folder / INFO_NAME}: not valid JSON ({exc})") from exc
    validate_info(info, where=str(folder / INFO_NAME))
    version = info.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ModelError(f"{folder / INFO_NAME}: format_version {version} is not supported (expected {FORMAT_VERSION})")
    return info


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
    import torch

    from medseg.models.registry import create_model

    folder = find_export(path)
    info = read_info(folder)
    weights = folder / WEIGHTS_NAME
    if verify and info.get("sha256") and sha256_file(weights) != info["sha256"]:
        raise ModelError(f"{weights}: SHA-256 does not match model.json (file changed or corrupt)")
    state = read_state_dict(weights, map_location=device)
    config = dict(info["model"].get("config", {}))
    for key in INITIAL_WEIGHT_KEYS:  # initial weights that are gone: the exported state_dict replaces them
        if isinstance(config.get(key), str) and not Path(config[key]).exists():
            log.info("%s: initial %s %s is gone; the exported weights are used", folder, key, config.pop(key))
    model = create_model(info["model"]["name"], **config)
    load_state_exactly(model, state, where=f"{weights}: weights do not fit model {info['model']['name']!r}")
    model.to(device).eval()
    return model, info


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
    "save_export",
    "load_exported",
    "load_state_exactly",
    "read_state_dict",
    "read_info",
    "find_export",
    "validate_info",
    "sha256_file",
    "library_versions",
]
