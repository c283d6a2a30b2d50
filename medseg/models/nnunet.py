"""nnU-Net v2 model folders: read them, build their networks, turn them into medseg exports.

A trained nnU-Net v2 model is a folder ``Dataset*/TRAINER__PLANS__CONFIG/`` holding
``dataset.json`` (channels, labels or regions), ``plans.json`` (preprocessing and
architecture of every configuration) and ``fold_*/checkpoint_{final,best}.pth``. This
module reads such a folder without nnU-Net itself and without its environment variables:

* checkpoints are loaded with ``torch.load(weights_only=True)`` and an explicit allowlist
  of the numpy types nnU-Net's training log stores (:func:`load_checkpoint`), never pickle;
* the network is built from the configuration's ``architecture`` entry with
  ``dynamic_network_architectures`` (what nnU-Net uses), allowing only classes of that
  package and ``torch.nn`` building blocks (:func:`build_network`);
* :func:`import_model_folder` writes a medseg export: ``model.json`` (family ``"nnunet"``,
  the plans, the configuration name, ``dataset.json``, the folds) and ``model.pt``, one
  flat state_dict whose keys are ``fold_<f>.<parameter>``.

The segmenter that reproduces nnU-Net's inference is :mod:`medseg.inference.nnunet`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, ModelError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: ``model.json`` family name of an imported nnU-Net model.
FAMILY = "nnunet"
#: configurations medseg runs (the cascade's ``3d_lowres`` -> ``3d_cascade_fullres`` is not supported).
SUPPORTED_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
_NETWORK_PACKAGES = ("dynamic_network_architectures.",)
_BUILDING_BLOCK_PACKAGES = ("torch.nn.",)


def is_model_folder(path: PathLike) -> bool:
    """True for an nnU-Net v2 trained-model folder (``dataset.json`` + ``plans.json`` + ``fold_*``)."""
    p = Path(path)
    return (p.is_dir() and (p / "dataset.json").is_file() and (p / "plans.json").is_file()
            and any(q.is_dir() for q in p.glob("fold_*")))


def _safe_globals() -> list[Any]:
    """The non-tensor types nnU-Net checkpoints carry (numpy scalars in ``logging``, ``_best_ema``)."""
    import numpy as np

    allowed: list[Any] = [np.dtype, np.ndarray]
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    allowed += [scalar, _reconstruct]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType",
                 "UInt8DType", "Int16DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """An nnU-Net checkpoint dict, read with ``torch.load(weights_only=True)``.

    Only tensors, containers, plain values and the numpy scalar/dtype types of
    :func:`_safe_globals` are accepted; anything else makes torch refuse the file.

    Raises:
        ModelError: unreadable file, a type outside the allowlist (named by torch), or no
            ``network_weights``.
    """
    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError names the refused global
        raise ModelError(f"{path}: not a weights-only nnU-Net checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), Mapping):
        raise ModelError(f"{path}: no 'network_weights' in this checkpoint: not an nnU-Net v2 checkpoint")
    return ckpt


def resolve_configuration(plans: Mapping[str, Any], name: str, *, where: str = "plans.json") -> dict[str, Any]:
    """The configuration ``name`` of ``plans`` with ``inherits_from`` resolved (nnU-Net's rule).

    Raises:
        ConfigError: an unknown configuration (names the known ones), or one in the old
            (pre-2.4, no ``architecture`` entry) plans format.
    """
    configs = plans.get("configurations", {})
    if name not in configs:
        raise ConfigError(f"{where}: no configuration {name!r}; known: {', '.join(configs)}")
    config = copy.deepcopy(configs[name])
    if "inherits_from" in config:
        parent = resolve_configuration(plans, config.pop("inherits_from"), where=where)
        parent.update(config)
        config = parent
    if "architecture" not in config:
        raise ConfigError(f"{where}: configuration {name!r} has no 'architecture' entry (plans older than "
                          "nnU-Net 2.4); load the model once with a current nnU-Net and save its plans.json")
    return config


@dataclass(frozen=True)
class LabelLayout:
    """What the network's output channels mean (nnU-Net's ``LabelManager``, read from ``dataset.json``).

    Attributes:
        names: ``{label value: name}`` of the output label map, background ``0`` included.
        regions: per output channel, the label values its region covers (region-based
            models), or ``None`` for a softmax model (channel ``c`` is ``channel_labels[c]``).
        channel_labels: label value written for each channel: the sorted label values
            (softmax) or ``regions_class_order`` (regions, painted in that order where the
            channel's sigmoid exceeds 0.5).
    """

    names: dict[int, str]
    regions: tuple[tuple[int, ...], ...] | None
    channel_labels: tuple[int, ...]

    @property
    def num_channels(self) -> int:
        """Number of network output channels (segmentation heads)."""
        return len(self.channel_labels)


def label_layout(dataset_json: Mapping[str, Any], *, where: str = "dataset.json") -> LabelLayout:
    """The :class:`LabelLayout` of an nnU-Net ``dataset.json`` (``labels``, ``regions_class_order``).

    Example:
        >>> label_layout({"labels": {"background": 0, "liver": 1, "tumour": 2}}).channel_labels
        (0, 1, 2)
        >>> r = label_layout({"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]})
        >>> r.regions, r.channel_labels, r.names
        (((1, 2), (2,)), (1, 2), {0: 'background', 1: 'whole', 2: 'core'})
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, Mapping) or labels.get("background") != 0:
        raise ModelError(f"{where}: 'labels' must map names to values with background = 0, got {labels!r}")
    items = [(k, v) for k, v in labels.items() if k != "ignore"]
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for _, v in items)
    if not has_regions:
        values = sorted({int(v[0] if isinstance(v, (list, tuple)) else v) for _, v in items})
        names = {int(v[0] if isinstance(v, (list, tuple)) else v): str(k) for k, v in items}
        return LabelLayout({v: names[v] for v in values}, None, tuple(values))
    order = dataset_json.get("regions_class_order")
    regions = [(k, tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))) for k, v in items]
    regions = [(k, r) for k, r in regions if set(r) != {0}]
    if not isinstance(order, (list, tuple)) or len(order) != len(regions):
        raise ModelError(f"{where}: a region-based model needs 'regions_class_order' with one value per region "
                         f"({len(regions)}), got {order!r}")
    names = {0: "background", **{int(c): str(k) for c, (k, _) in zip(order, regions)}}
    return LabelLayout(names, tuple(r for _, r in regions), tuple(int(c) for c in order))


def num_input_channels(dataset_json: Mapping[str, Any]) -> int:
    """Image channels the network takes (``channel_names`` / legacy ``modality`` of ``dataset.json``)."""
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(channels, Mapping) or not channels:
        raise ModelError(f"dataset.json: 'channel_names' missing or empty, got {channels!r}")
    return len(channels)


def _locate(name: str, packages: Sequence[str], *, what: str) -> Any:
    import importlib

    if not isinstance(name, str) or not name.startswith(packages):
        raise ModelError(f"plans.json architecture: {what} {name!r} is not allowed; only classes under "
                         f"{', '.join(p.rstrip('.') for p in packages)} are built")
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"plans.json architecture: {what} {name!r} not found ({exc}); "
                         "install dynamic_network_architectures (pip install dynamic-network-architectures)") from exc


def build_network(configuration: Mapping[str, Any], dataset_json: Mapping[str, Any]) -> Any:
    """The network of a resolved configuration (:func:`resolve_configuration`), in eval mode, no deep supervision.

    Raises:
        ModelError: a network class outside ``dynamic_network_architectures`` or a building
            block (conv, norm, dropout, nonlinearity) outside ``torch.nn``.
    """
    arch = configuration["architecture"]
    kwargs = dict(arch.get("arch_kwargs", {}))
    for key in arch.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(kwargs[key], _BUILDING_BLOCK_PACKAGES, what=f"{key}")
    network_class = _locate(arch.get("network_class_name"), _NETWORK_PACKAGES, what="network class")
    kwargs["deep_supervision"] = False
    net = network_class(input_channels=num_input_channels(dataset_json),
                        num_classes=label_layout(dataset_json).num_channels, **kwargs)
    return net.eval()


@dataclass
class NnunetModel:
    """An nnU-Net model read from its folder or from a medseg export.

    Attributes:
        plans: ``plans.json`` content.
        dataset_json: ``dataset.json`` content.
        configuration: configuration name (``"3d_fullres"``, ``"2d"``).
        trainer: trainer class name recorded in the checkpoint.
        folds: fold names (``"0"``, ..., ``"all"``), in the order their weights are averaged.
        states: one state_dict per fold.
        mirror_axes: axes (of the network input, 0-based) mirrored at test time, or ``()``.
    """

    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    configuration: str
    trainer: str
    folds: list[str]
    states: list[dict[str, Any]] = field(repr=False)
    mirror_axes: tuple[int, ...] = ()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration dict."""
        return resolve_configuration(self.plans, self.configuration)


def _fold_names(folder: Path, folds: Sequence[int | str] | None, checkpoint: str) -> list[str]:
    if folds is None:
        found = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / checkpoint).is_file())
        if not found:
            raise InputError(f"{folder}: no fold_*/{checkpoint}; give --checkpoint best if only checkpoint_best.pth exists")
        return found
    return [str(f) for f in folds]


def read_model_folder(path: PathLike, *, folds: Sequence[int | str] | None = None,
                      checkpoint: str = "final") -> NnunetModel:
    """Read an nnU-Net v2 model folder (all folds found when ``folds`` is ``None``).

    Args:
        path: ``Dataset*/TRAINER__PLANS__CONFIG`` folder.
        folds: fold numbers (or ``"all"``) to use; ``None`` = every ``fold_*`` with the checkpoint.
        checkpoint: ``"final"`` (``checkpoint_final.pth``) or ``"best"``.

    Raises:
        InputError: not a model folder, or a fold without the checkpoint.
        ConfigError: unknown checkpoint kind or an unsupported configuration.
        ModelError: a checkpoint that is not weights-only loadable.
    """
    folder = Path(path)
    if not is_model_folder(folder):
        raise InputError(f"{folder}: not an nnU-Net v2 model folder (needs dataset.json, plans.json and fold_*/)")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint {checkpoint!r} unknown; choose from {', '.join(CHECKPOINTS)}")
    file_name = CHECKPOINTS[checkpoint]
    plans = json.loads((folder / "plans.json").read_text(encoding="utf-8"))
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    names = _fold_names(folder, folds, file_name)
    states, trainer, configuration, mirror = [], "", "", ()
    for i, fold in enumerate(names):
        ckpt_path = folder / f"fold_{fold}" / file_name
        if not ckpt_path.is_file():
            raise InputError(f"{ckpt_path}: missing (folds found: "
                             f"{', '.join(sorted(p.name for p in folder.glob('fold_*')))})")
        ckpt = load_checkpoint(ckpt_path)
        if i == 0:
            trainer = str(ckpt.get("trainer_name", ""))
            configuration = str(ckpt.get("init_args", {}).get("configuration") or folder.name.rsplit("__", 1)[-1])
            axes = ckpt.get("inference_allowed_mirroring_axes")
            mirror = tuple(int(a) for a in axes) if axes is not None else ()
        states.append({k: v for k, v in ckpt["network_weights"].items()})
    if configuration not in SUPPORTED_CONFIGURATIONS:
        raise ConfigError(f"{folder}: configuration {configuration!r} is not supported (the cascade is not); "
                          f"supported: {', '.join(SUPPORTED_CONFIGURATIONS)}")
    if trainer and not trainer.startswith("nnUNetTrainer"):
        log.warning("%s: trainer %s: its network is assumed to be the plans' architecture", folder, trainer)
    resolve_configuration(plans, configuration, where=str(folder / "plans.json"))
    return NnunetModel(plans, dataset_json, configuration, trainer, names, states, mirror)


def export_info(model: NnunetModel, *, source: str = "") -> Any:
    """The :class:`~medseg.models.export.ModelExport` of an nnU-Net model."""
    from medseg.models.export import ModelExport

    config = model.config
    layout = label_layout(model.dataset_json)
    return ModelExport(
        name=FAMILY,
        config={"configuration": model.configuration, "trainer": model.trainer, "folds": list(model.folds),
                "plans": model.plans, "dataset_json": model.dataset_json},
        spatial_dims=len(config["patch_size"]),
        labels=layout.names,
        preprocessing={"kind": "nnunet", "spacing_mm": list(config["spacing"]),
                       "normalization": list(config["normalization_schemes"]),
                       "transpose_forward": list(model.plans.get("transpose_forward", [0, 1, 2]))},
        inference={"patch_size": list(config["patch_size"]), "tile_step_size": 0.5,
                   "mirror_axes": list(model.mirror_axes)},
        training={"source": source, "trainer": model.trainer},
    )


def import_model_folder(path: PathLike, output: PathLike, *, folds: Sequence[int | str] | None = None,
                        checkpoint: str = "final") -> Path:
    """Write a medseg export of an nnU-Net model folder into ``output``; returns ``output``.

    ``model.pt`` is one flat state_dict (``fold_<f>.<parameter>`` keys, plain tensors, loadable
    with ``torch.load(weights_only=True)``); every fold's weights are checked against the network
    built from the plans before anything is written.
    """
    from medseg.models.export import load_state_exactly, save_export

    model = read_model_folder(path, folds=folds, checkpoint=checkpoint)
    net = build_network(model.config, model.dataset_json)
    flat: dict[str, Any] = {}
    for fold, state in zip(model.folds, model.states):
        load_state_exactly(net, state, where=f"{path}: fold {fold} weights do not fit the plans' network")
        flat.update({f"fold_{fold}.{k}": v for k, v in state.items()})
    return save_export(output, flat, export_info(model, source=str(Path(path).resolve())))


def read_export_model(path: PathLike) -> NnunetModel:
    """The :class:`NnunetModel` of a medseg export written by :func:`import_model_folder`.

    Raises:
        ModelError: not an nnU-Net export, checksum mismatch, or folds missing in ``model.pt``.
    """
    from medseg.io.atomic import sha256_file
    from medseg.models.export import WEIGHTS_NAME, find_export, read_export, read_state_dict

    folder = find_export(path)
    export = read_export(folder)
    if export.name != FAMILY:
        raise ModelError(f"{folder}: model family {export.name!r}, not {FAMILY!r}")
    weights = folder / WEIGHTS_NAME
    if export.sha256 and sha256_file(weights) != export.sha256:
        raise ModelError(f"{weights}: SHA-256 does not match model.json (file changed or corrupt)")
    flat = read_state_dict(weights)
    cfg = export.config
    states = []
    for fold in cfg["folds"]:
        prefix = f"fold_{fold}."
        state = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if not state:
            raise ModelError(f"{weights}: no weights for fold {fold}")
        states.append(state)
    return NnunetModel(cfg["plans"], cfg["dataset_json"], cfg["configuration"], cfg.get("trainer", ""),
                       [str(f) for f in cfg["folds"]], states,
                       tuple(int(a) for a in export.inference.get("mirror_axes", ())))


def export_sha256(path: PathLike) -> str:
    """SHA-256 of an export's ``model.pt`` (from ``model.json``)."""
    from medseg.models.export import read_export

    return read_export(path).sha256


__all__ = ["FAMILY", "NnunetModel", "LabelLayout", "is_model_folder", "load_checkpoint", "read_model_folder",
           "resolve_configuration", "label_layout", "build_network", "import_model_folder", "read_export_model",
           "export_info", "num_input_channels"]
