"""The ``sam2`` model family: build SAM2 from the configurations shipped in the ``sam2`` package and load local checkpoints.

Nothing is ever downloaded: weights come from a file or export folder the user names.
The network is always built as ``sam2.sam2_video_predictor.SAM2VideoPredictor`` (a
``SAM2Base`` subclass), so one object serves single-slice prompting and propagation,
and its ``state_dict`` has exactly the keys of Meta's published checkpoints.

The compiled ``sam2._C`` extension is not needed: the package's own hole filling is
switched off (``fill_hole_area=0``) and medseg fills holes with scipy
(:func:`medseg.sam.segment.fill_small_holes`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, ModelError
from medseg.models.registry import register_model

log = logging.getLogger(__name__)

#: medseg name -> config file inside the ``sam2`` package.
CONFIGS: dict[str, str] = {
    f"{version}_hiera_{size}": f"configs/{version}/{version}_hiera_{size}.yaml"
    for version in ("sam2", "sam2.1") for size in ("t", "s", "b+", "l")
}

#: Short names (SAM 2.1 unless prefixed ``sam2_``) and Meta's checkpoint file stems.
ALIASES: dict[str, str] = {
    "tiny": "sam2.1_hiera_t",
    "small": "sam2.1_hiera_s",
    "base_plus": "sam2.1_hiera_b+",
    "large": "sam2.1_hiera_l",
    "sam2.1_hiera_tiny": "sam2.1_hiera_t",
    "sam2.1_hiera_small": "sam2.1_hiera_s",
    "sam2.1_hiera_base_plus": "sam2.1_hiera_b+",
    "sam2.1_hiera_large": "sam2.1_hiera_l",
    "sam2_hiera_tiny": "sam2_hiera_t",
    "sam2_hiera_small": "sam2_hiera_s",
    "sam2_hiera_base_plus": "sam2_hiera_b+",
    "sam2_hiera_large": "sam2_hiera_l",
}

#: Key under which medseg stores its build settings in a checkpoint / on the module.
META_KEY = "medseg"

# Inference settings of sam2's own build_sam2_video_predictor, except hole filling (needs _C).
_POSTPROCESS_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=0",
)
_OVERRIDE_RE = re.compile(r"^\+{0,2}model\.[A-Za-z0-9_.]+=[^\n]*$")


def resolve_config(name: str) -> str:
    """Canonical medseg name (``"sam2.1_hiera_t"``) of a config name or alias.

    Raises:
        ConfigError: unknown name (lists the known ones).
    """
    key = str(name).strip()
    key = key[:-5] if key.endswith(".yaml") else key
    key = key.rsplit("/", 1)[-1]
    key = ALIASES.get(key, key)
    if key not in CONFIGS:
        raise ConfigError(
            f"unknown SAM2 config {name!r}; known: {', '.join(CONFIGS)} (aliases: {', '.join(ALIASES)})"
        )
    return key


def resolve_device(device: Any = None) -> Any:
    """``torch.device``: the given one, else CUDA when available, else CPU (never CUDA without a GPU)."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


def _check_overrides(overrides: tuple[str, ...] | list[str]) -> list[str]:
    out = []
    for ov in overrides:
        if not isinstance(ov, str) or not _OVERRIDE_RE.match(ov) or "_target_" in ov:
            raise ConfigError(
                f"SAM2 override {ov!r} is not allowed: use 'model.<key>=<value>' (no '_target_')"
            )
        out.append(ov if ov.startswith("+") else f"++{ov}")
    return out


def _compose(config: str, image_size: int, overrides: list[str]) -> Any:
    try:
        import sam2  # noqa: F401  (initialises hydra's config module)
        from hydra import compose, initialize_config_module
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf
    except ImportError as exc:
        raise ModelError(
            f"SAM2 needs the 'sam2' package ({exc}); install it with "
            "SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps 'sam2>=1.0' "
            "&& pip install 'hydra-core>=1.3' 'iopath>=0.1.10'"
        ) from exc
    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    feat = image_size // 16
    all_overrides = [
        "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        *_POSTPROCESS_OVERRIDES,
        *overrides,
    ]
    try:
        cfg = compose(config_name=CONFIGS[config], overrides=all_overrides)
    except Exception as exc:  # hydra's override/config errors
        raise ConfigError(f"SAM2 config {config!r} with overrides {overrides}: {exc}") from exc
    OmegaConf.resolve(cfg)
    return cfg


def build_sam2(
    config: str = "sam2.1_hiera_t",
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    image_size: int = 1024,
    device: Any = None,
    overrides: tuple[str, ...] | list[str] = (),
    train: bool = False,
) -> Any:
    """Build a SAM2 network (randomly initialised, or from a local checkpoint).

    Args:
        config: a name of :data:`CONFIGS` or :data:`ALIASES` (``"tiny"`` = ``sam2.1_hiera_t``).
        checkpoint: optional ``.pt`` file (``{'model': state_dict}`` as Meta publishes, or a
            plain ``state_dict``) or a medseg export folder; loaded with ``weights_only=True``.
        image_size: square input size in pixels, a multiple of 32 (1024 as trained by
            Meta; 512 is ~4x faster on CPU).
        device: torch device; default CUDA when available, else CPU.
        overrides: extra hydra overrides ``"model.<key>=<value>"`` (for example a smaller
            memory attention in tests); ``_target_`` may not be changed.
        train: leave the module in training mode (default eval).

    Returns:
        a ``SAM2VideoPredictor`` module with attribute ``medseg_sam2`` (its build settings).

    Raises:
        ConfigError: unknown config, bad image size or override.
        InputError: the checkpoint is unreadable or does not fit the architecture.
    """
    from hydra.utils import instantiate

    name = resolve_config(config)
    if int(image_size) != image_size or image_size < 64 or image_size % 32:
        raise ConfigError(f"SAM2 image_size must be a multiple of 32 and >= 64, got {image_size}")
    image_size = int(image_size)
    checked = _check_overrides(tuple(overrides))
    cfg = _compose(name, image_size, checked)
    try:
        net = instantiate(cfg.model, _recursive_=True)
    except Exception as exc:
        raise ModelError(f"SAM2 config {name!r} cannot be instantiated: {exc}") from exc
    net.medseg_sam2 = {"config": name, "image_size": image_size, "overrides": list(overrides)}
    if checkpoint is not None:
        state, _ = read_checkpoint(checkpoint)
        load_weights(net, state, source=str(checkpoint))
    dev = resolve_device(device)
    net = net.to(dev)
    net.train(train)
    return net


def _export_weights(folder: Path) -> tuple[Path, dict[str, Any]]:
    info_path = folder / "model.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{info_path}: cannot read the export description ({exc})") from exc
    name = (info.get("model") or {}).get("name")
    if name != "sam2":
        raise InputError(f"{folder}: this export holds model {name!r}, not a SAM2 model")
    return folder / "model.pt", info


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read SAM2 weights and medseg build settings from a file or export folder.

    Accepts Meta's ``{'model': state_dict}``, a medseg fine-tune checkpoint
    ``{'model': state_dict, 'medseg': {...}}``, a plain ``state_dict``, or a medseg export
    folder (``model.json`` + ``model.pt``; ``RUN_DIR`` or ``RUN_DIR/export`` too).

    Returns:
        ``(state_dict, settings)`` where settings may hold ``config``, ``image_size``,
        ``overrides`` and ``preprocess`` (empty for Meta's checkpoints).

    Raises:
        InputError: missing, unreadable or not a SAM2 checkpoint (names the file).
    """
    import torch

    p = Path(path)
    settings: dict[str, Any] = {}
    if p.is_dir():
        folder = p if (p / "model.json").is_file() else p / "export"
        if not (folder / "model.json").is_file():
            raise InputError(f"{p}: folder has no model.json (not a medseg export)")
        p, info = _export_weights(folder)
        settings = dict((info.get("model") or {}).get("config") or {})
        if "preprocess" in (info.get("preprocessing") or {}):
            settings["preprocess"] = info["preprocessing"]["preprocess"]
        else:  # a `medseg train` export: the module saw plan-normalised slices, percentile-scaled
            settings["preprocess"] = {"mode": "mr"}
    if not p.is_file():
        raise InputError(f"{p}: no such SAM2 checkpoint file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{p}: not a readable weights-only PyTorch checkpoint ({exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state = obj["model"]
        settings = {**settings, **dict(obj.get(META_KEY) or {})}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise InputError(f"{p}: not a SAM2 checkpoint (expected {{'model': state_dict}} or a state_dict)")
    if not any(k.startswith("image_encoder.") for k in state):
        raise InputError(f"{p}: not a SAM2 checkpoint (no image_encoder.* weights)")
    return state, settings


def load_weights(net: Any, state: dict[str, Any], *, source: str = "checkpoint") -> None:
    """Load ``state`` into ``net`` strictly.

    Raises:
        InputError: missing or unexpected keys, or tensors of another shape (another architecture).
    """
    arch = getattr(net, "medseg_sam2", {})
    where = f"{arch.get('config', 'SAM2')} at image size {arch.get('image_size', '?')}"
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).split("\n")
        detail = "; ".join(line.strip() for line in first[1:4] if line.strip())
        raise InputError(f"{source}: weights do not fit {where} (other architecture?): {detail}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"{source}: weights do not fit {where}: {len(result.missing_keys)} missing key(s) "
            f"{result.missing_keys[:4]}, {len(result.unexpected_keys)} unexpected key(s) "
            f"{result.unexpected_keys[:4]}"
        )
    log.info("loaded SAM2 weights from %s", source)


def _guess_config(path: Path) -> str | None:
    stem = path.name[:-3] if path.name.endswith(".pt") else path.name
    for candidate in (stem, stem.replace("-", "_")):
        try:
            return resolve_config(candidate)
        except ConfigError:
            continue
    return None


#: (trunk embedding width, number of Hiera blocks) -> size suffix of the published SAM2 configs
_HIERA_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}


def config_from_state(state: dict[str, Any]) -> str | None:
    """The SAM2 config name a state_dict was trained with, read from its tensor shapes (not its file name).

    The Hiera trunk's embedding width and block count give the size (tiny/small/base+/large);
    SAM 2.1 checkpoints carry ``no_obj_embed_spatial``, SAM 2 ones do not. ``None`` when the
    shapes match no published configuration (a custom ``overrides`` build).
    """
    embed = state.get("image_encoder.trunk.patch_embed.proj.weight")
    blocks = {key.split(".")[3] for key in state if key.startswith("image_encoder.trunk.blocks.")}
    if embed is None or not blocks:
        return None
    size = _HIERA_SIZES.get((int(embed.shape[0]), len(blocks)))
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"{version}_hiera_{size}"


def load_sam2(
    checkpoint: str | os.PathLike[str],
    *,
    config: str | None = None,
    image_size: int | None = None,
    device: Any = None,
    overrides: tuple[str, ...] | list[str] | None = None,
) -> Any:
    """Build SAM2 and load a local checkpoint; settings stored in the checkpoint are the defaults.

    ``config`` may be omitted for medseg checkpoints/exports and for Meta's published
    checkpoints, whatever their file name: the architecture is read from the tensor shapes
    (:func:`config_from_state`), then from a published file name (``sam2.1_hiera_tiny.pt``).
    ``image_size`` defaults to the checkpoint's, else 1024.

    Raises:
        ConfigError: the architecture cannot be determined (pass ``config``).
        InputError: the checkpoint is unreadable or does not fit.
    """
    p = Path(checkpoint)
    state, settings = read_checkpoint(p)
    name = config or settings.get("config") or config_from_state(state) or _guess_config(p)
    if name is None:
        raise ConfigError(
            f"{p}: cannot tell which SAM2 architecture this checkpoint is; pass config= "
            f"(one of {', '.join(CONFIGS)})"
        )
    size = int(image_size or settings.get("image_size") or 1024)
    ovs = list(overrides if overrides is not None else settings.get("overrides") or [])
    net = build_sam2(name, image_size=size, device="cpu", overrides=ovs)
    load_weights(net, state, source=str(p))
    if "preprocess" in settings:
        net.medseg_sam2["preprocess"] = dict(settings["preprocess"])
    net = net.to(resolve_device(device))
    net.eval()
    return net


def save_checkpoint(net: Any, path: str | os.PathLike[str], *, preprocess: dict[str, Any] | None = None) -> Path:
    """Write ``{'model': state_dict, 'medseg': settings}`` atomically (readable by sam2 and medseg)."""
    import torch

    from medseg.io.atomic import atomic_path

    settings = dict(getattr(net, "medseg_sam2", {}))
    if preprocess is not None:
        settings["preprocess"] = dict(preprocess)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": state, META_KEY: settings}, tmp)
    return Path(path)


# SAM2 resizes every slice to its square ``image_size``: inputs of any size are accepted.
@register_model(
    "sam2",
    spatial_dims=2,
    training_module="medseg.training.sam2:Sam2FinetuneModule",
    description="SAM2 promptable segmentation (sam2 package configs tiny..large, SAM 2 / 2.1)",
    input_multiple=lambda c: [1, 1],
    promptable=True,
    tiny_config={"config": "tiny", "image_size": 64, "overrides": [
        "model.image_encoder.trunk.stages=[1,1,2,1]", "model.image_encoder.trunk.global_att_blocks=[3]",
        "model.memory_attention.num_layers=1"]},
)
def build_sam2_model(
    *,
    config: str = "sam2.1_hiera_t",
    image_size: int = 1024,
    overrides: list[str] | tuple[str, ...] = (),
    in_channels: int = 1,
    out_channels: int = 2,
) -> Any:
    """SAM2 network on CPU, randomly initialised (weights are loaded by the caller).

    Args:
        config: ``sam2`` config name or alias (``tiny``, ``small``, ``base_plus``, ``large``,
            ``sam2.1_hiera_t``, ``sam2_hiera_l``, ...).
        image_size: square model input in pixels (1024 as trained; 512 for CPU).
        overrides: hydra overrides ``model.<key>=<value>``.
        in_channels: 1 (grey, replicated to RGB) or 3.
        out_channels: ignored (SAM2 predicts one binary mask per prompt); accepted so that the
            training engine's defaults apply.

    Fine-tuning settings (initial checkpoint, freezing, prompt simulation, loss weights) are
    the training config's ``finetune`` section, read by :mod:`medseg.training.sam2`.
    """
    if in_channels not in (1, 3):
        raise ConfigError(f"model 'sam2': in_channels must be 1 or 3 (grey or RGB), got {in_channels}")
    return build_sam2(config, image_size=image_size, overrides=tuple(overrides), device="cpu", train=False)


__all__ = [
    "build_sam2_model",
    "config_from_state",
    "CONFIGS",
    "ALIASES",
    "resolve_config",
    "resolve_device",
    "build_sam2",
    "read_checkpoint",
    "load_weights",
    "load_sam2",
    "save_checkpoint",
]
