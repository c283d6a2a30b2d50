"""MONAI bundles: read two parts of ``configs/inference.json`` under a whitelist, build them with MONAI.

A bundle (``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt`` or a TorchScript
``models/model.ts``) is a
program as much as a config: real bundles fill ``device``, datasets and handlers with ``$``
Python expressions. medseg uses only ``network_def`` and the ``preprocessing`` transform
list, and checks them before MONAI's :class:`~monai.bundle.ConfigParser` sees them:

* every ``_target_`` must be a MONAI component (``monai.*``, or a short name MONAI's
  component locator finds in ``monai``);
* ``@`` references may name ``@device`` (bound to medseg's device) or a plain value
  (numbers, strings, lists and dicts of them) elsewhere in the config, which is copied in;
* a ``$`` expression, a ``%`` macro, ``_requires_`` or a non-default ``_mode_`` is refused
  with a :class:`~medseg.errors.ConfigError` naming where it is.

The rest of the config is never evaluated: only a new config holding the checked parts is
parsed. The inferer's ``roi_size``/``overlap``/``sw_batch_size`` are read as plain values.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, ModelError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
FAMILY = "monai_bundle"
USED_PARTS = ("network_def", "preprocessing")
_ALLOWED_KEYS = {"_target_", "_disabled_", "_desc_", "_mode_"}


def _load_config(path: Path) -> dict[str, Any]:
    if path.suffix in (".yaml", ".yml"):
        from medseg.configs import load_yaml_text

        return load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    return json.loads(path.read_text(encoding="utf-8"))


def find_config(bundle: Path) -> Path:
    """``configs/inference.json`` (or ``.yaml``) of a bundle folder."""
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        if (bundle / "configs" / name).is_file():
            return bundle / "configs" / name
    raise InputError(f"{bundle}: no configs/inference.json: not a MONAI bundle folder")


def _lookup(config: Mapping[str, Any], ref: str) -> Any:
    node: Any = config
    for part in ref.replace("#", "::").split("::"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(ref)
    return node


def _is_plain(node: Any) -> bool:
    if isinstance(node, str):
        return not node.startswith(("$", "@", "%"))
    if isinstance(node, Mapping):
        return "_target_" not in node and all(_is_plain(v) for v in node.values())
    if isinstance(node, list):
        return all(_is_plain(v) for v in node)
    return node is None or isinstance(node, (bool, int, float))


def _is_monai_target(target: str) -> bool:
    if "." in target:
        return target.startswith("monai.")
    from monai.bundle.config_item import ComponentLocator

    module = ComponentLocator().get_component_module_name(target)
    modules = module if isinstance(module, list) else [module]
    return bool(module) and all(isinstance(m, str) and m.startswith("monai.") for m in modules)


def check_part(node: Any, where: str, config: Mapping[str, Any], refs: dict[str, Any]) -> None:
    """Refuse anything in ``node`` (a part of the bundle config at ``where``) but MONAI components,
    plain values and references to plain values; the referenced values are added to ``refs``."""
    if isinstance(node, str):
        if node.startswith("$"):
            raise ConfigError(f"{where}: Python expression {node!r} refused: medseg evaluates no code from a bundle")
        if node.startswith("%"):
            raise ConfigError(f"{where}: macro {node!r} refused (reads another config file)")
        if node.startswith("@"):
            ref = node[1:]
            if ref == "device":
                return
            try:
                value = _lookup(config, ref)
            except KeyError:
                raise ConfigError(f"{where}: reference {node!r} names nothing in the config") from None
            if not _is_plain(value):
                raise ConfigError(f"{where}: reference {node!r} is not a plain value (it is {value!r}); "
                                  "only plain values and @device may be referenced")
            refs[ref] = value
        return
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_part(item, f"{where}[{i}]", config, refs)
        return
    if isinstance(node, Mapping):
        if "_target_" in node:
            target = node["_target_"]
            if not isinstance(target, str) or target.startswith(("$", "@", "%")) or not _is_monai_target(target):
                raise ConfigError(f"{where}: _target_ {target!r} refused: only MONAI components (monai.*) are built")
            extra = {k for k in node if k.startswith("_") and k.endswith("_")} - _ALLOWED_KEYS
            if extra:
                raise ConfigError(f"{where}: {', '.join(sorted(extra))} refused")
            if node.get("_mode_", "default") != "default":
                raise ConfigError(f"{where}: _mode_ {node['_mode_']!r} refused (only 'default')")
        for key, value in node.items():
            if key != "_target_":
                check_part(value, f"{where}.{key}", config, refs)


def safe_parts(config: Mapping[str, Any], *, where: str = "inference.json") -> dict[str, Any]:
    """The checked parts: ``{"network_def", "preprocessing", "refs": {name: plain value}}``.

    Raises:
        ConfigError: a missing part or anything the whitelist refuses (names where).
    """
    parts: dict[str, Any] = {"refs": {}}
    for name in USED_PARTS:
        if name not in config:
            raise ConfigError(f"{where}: no '{name}' (medseg uses network_def and preprocessing)")
        value = config[name]
        if isinstance(value, str) and value.startswith("@"):  # "preprocessing": "@pre_transforms"
            raise ConfigError(f"{where}: '{name}' is the reference {value!r}: give the transforms inline")
        check_part(value, f"{where}: {name}", config, parts["refs"])
        parts[name] = value
    inferer = config.get("inferer", {})
    parts["inferer"] = {k: inferer[k] for k in ("roi_size", "overlap", "sw_batch_size", "mode")
                        if isinstance(inferer, Mapping) and k in inferer and _is_plain(inferer[k])}
    return parts


def _nested(refs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a::b": v}`` -> ``{"a": {"b": v}}`` so ConfigParser finds ``@a::b``."""
    out: dict[str, Any] = {}
    for ref, value in refs.items():
        keys = ref.replace("#", "::").split("::")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


def build(parts: Mapping[str, Any], *, device: str = "cpu") -> tuple[Any, Any]:
    """``(network, preprocessing transform)`` from checked parts, with ``@device`` = ``device``."""
    from monai.bundle import ConfigParser

    cfg = {**_nested(parts.get("refs", {})), "device": device, "network_def": parts["network_def"],
           "preprocessing": parts["preprocessing"]}
    parser = ConfigParser(cfg)
    net = parser.get_parsed_content("network_def", instantiate=True)
    pre = parser.get_parsed_content("preprocessing", instantiate=True)
    if isinstance(pre, list):
        from monai.transforms import Compose

        pre = Compose(pre)
    return net, pre


def _label_names(bundle: Path) -> dict[int, str]:
    meta_path = bundle / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise InputError(f"{bundle}: no configs/metadata.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    pred = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    names = pred.get("channel_def") or {}
    if not names:
        n = int(pred.get("num_channels", 2))
        names = {str(i): ("background" if i == 0 else f"label_{i}") for i in range(n)}
    return {int(k): str(v) for k, v in names.items()}


def load_weights(path: PathLike) -> dict[str, Any]:
    """A bundle's ``model.pt`` state_dict (``weights_only=True``, numpy scalars allowed; ``{"model": ...}`` unwrapped)."""
    import torch

    from medseg.models.nnunet import _safe_globals

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot be loaded as a weights-only state_dict ({exc})") from exc
    for key in ("model", "state_dict", "network"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise ModelError(f"{path}: expected a state_dict")
    return state


def load_torchscript_weights(path: PathLike) -> dict[str, Any]:
    """The tensors of a bundle's TorchScript ``model.ts`` as a state_dict, to load into ``network_def``.

    TorchScript archives hold TorchScript code and tensors, read by TorchScript's own loader (no
    Python pickle); the scripted module is never run: only its parameters and buffers are kept.
    """
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError for anything that is not a TorchScript archive
        raise ModelError(f"{path}: not a readable TorchScript archive ({' '.join(str(exc).split())[:200]})") from None
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if not state:
        raise ModelError(f"{path}: the TorchScript module holds no parameters")
    return state


def import_bundle(bundle_dir: PathLike, output: PathLike) -> Path:
    """Write a medseg export of a MONAI bundle (checked parts in ``model.json``, weights in ``model.pt``).

    Weights come from ``models/model.pt`` (``weights_only=True``) or, when only a TorchScript
    ``models/model.ts`` is there, from its tensors (:func:`load_torchscript_weights`); either way the
    network is ``network_def`` built by MONAI's parser under the whitelist, and the weights must fit it.
    """
    from medseg.models.export import ModelExport, load_state_exactly, save_export

    bundle = Path(bundle_dir)
    config_path = find_config(bundle)
    parts = safe_parts(_load_config(config_path), where=str(config_path))
    weights = bundle / "models" / "model.pt"
    scripted = bundle / "models" / "model.ts"
    if not weights.is_file() and not scripted.is_file():
        raise InputError(f"{bundle}: no models/model.pt or models/model.ts")
    net, _ = build(parts)
    if weights.is_file():
        state = load_weights(weights)
    else:
        weights = scripted
        state = load_torchscript_weights(scripted)
    load_state_exactly(net, state, where=f"{weights}: weights do not fit network_def")
    labels = _label_names(bundle)
    inferer = parts["inferer"]
    export = ModelExport(
        name=FAMILY, config=parts, spatial_dims=3, labels=labels, preprocessing={"kind": "monai_bundle"},
        inference={"patch_size": list(inferer.get("roi_size", [96, 96, 96])), "overlap": inferer.get("overlap", 0.25),
                   "batch_size": int(inferer.get("sw_batch_size", 1)), "mode": inferer.get("mode", "constant")},
        training={"source": str(bundle.resolve())})
    return save_export(output, state, export)


__all__ = ["FAMILY", "safe_parts", "check_part", "build", "import_bundle", "load_weights", "load_torchscript_weights",
           "find_config"]
