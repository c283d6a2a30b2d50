"""The training configuration: one pydantic model, loaded from YAML, overridable with ``--set``.

A config file may name reusable parts under ``include:``: a part shipped in the package by
``KIND/NAME`` (``models/unet3d``, ``train/adamw``: :mod:`medseg.configs`), or a YAML path
relative to the file (``part.yaml``); they are merged first, the file's own values win, then
each ``--set key.sub=value`` override (the value parsed as YAML). Every value is validated;
an error names the key, the allowed values and the value given.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medseg import configs as _configs
from medseg.errors import ConfigError

log = logging.getLogger(__name__)

# the shipped config parts (medseg/configs/): resolve them by name with medseg.configs
CONFIGS_DIR = Path(str(_configs.__file__)).parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetConfig(_Strict):
    """Where the data is and which fold to train."""

    root: Path | None = None
    fold: int = Field(0, ge=0)
    n_folds: int = Field(5, ge=1)
    split_seed: int = 0
    splits: Path | None = None
    validate_data: bool = True
    format: str | None = None

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        from medseg.data.image_datasets import IMAGE_FORMATS
        from medseg.training.instances import INSTANCE_TRAIN_FORMATS

        if value is not None and value not in IMAGE_FORMATS + INSTANCE_TRAIN_FORMATS:
            raise ValueError(f"unknown dataset format {value!r}; known ordinary-image layouts: "
                             f"{', '.join(IMAGE_FORMATS)}; instance datasets: {', '.join(INSTANCE_TRAIN_FORMATS)} "
                             "(medical datasets need no format)")
        return value


class PlanConfig(_Strict):
    """The dataset plan: a file, or computed with these settings (then saved in the run)."""

    path: Path | None = None
    memory_budget_mb: float = Field(8000.0, gt=0)
    max_patch: int | None = Field(None, ge=16)
    target_spacing_mm: list[float] | None = None
    normalization: dict[str, Any] | None = None


class ModelConfig(_Strict):
    """A registered model name and its builder's keyword config."""

    name: str = "unet3d"
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from medseg.models.registry import list_models

        known = list_models()
        if value not in known:
            raise ValueError(f"unknown model {value!r}; known: {', '.join(known)}")
        return value


class TransformsConfig(_Strict):
    """The MONAI recipe: a shipped recipe name (``ct_3d``, ``mri_2d``: ``medseg/configs/transforms/``)
    or a YAML path."""

    recipe: str = "ct_3d"


class OptimizerConfig(_Strict):
    """Optimiser (nnU-Net default: SGD, Nesterov, momentum 0.99, lr 0.01)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(3e-5, ge=0)


class ScheduleConfig(_Strict):
    """Learning-rate schedule; ``poly``: ``lr * (1 - progress) ** exponent``, where progress is
    the larger of the step fraction and (with ``train.max_minutes``) the time fraction."""

    name: Literal["poly", "cosine", "constant"] = "poly"
    exponent: float = Field(0.9, gt=0)
    warmup_steps: int = Field(0, ge=0)


class LossConfig(_Strict):
    """Dice + cross-entropy (MONAI ``DiceCELoss``)."""

    name: Literal["dice_ce", "dice", "ce"] = "dice_ce"
    lambda_dice: float = Field(1.0, ge=0)
    lambda_ce: float = Field(1.0, ge=0)
    include_background: bool = False
    batch_dice: bool = False


class TrainConfig(_Strict):
    """The loop: length, budget, hardware, sampling."""

    max_epochs: int = Field(1000, ge=1)
    max_steps: int = Field(-1, ge=-1)
    max_minutes: float | None = Field(None, gt=0, le=525600)
    iterations_per_epoch: int = Field(250, ge=1)
    batch_size: int | None = Field(None, ge=1)
    patch_size: list[int] | None = None
    val_every_n_epochs: int = Field(1, ge=1)
    val_max_cases: int | None = Field(None, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0
    shuffle: bool = True
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = "auto"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    num_workers: int = Field(0, ge=0)
    #: torch's intra-op CPU threads during the run (``torch.set_num_threads``; the caller's setting is restored
    #: afterwards); ``None`` keeps torch's default (one per core). On a shared 2-core machine ``1`` measured
    #: 2-4x more steps than torch's 2 threads, which thrash when another process holds a core
    threads: int | None = Field(None, ge=1, le=1024)
    gradient_clip: float | None = Field(12.0, gt=0)
    progress_bar: bool = True
    deterministic: bool = False


class InferenceConfig(_Strict):
    """Sliding-window settings, used for validation and written to ``model.json``."""

    overlap: float = Field(0.5, ge=0, lt=1)
    batch_size: int = Field(2, ge=1)
    mode: Literal["gaussian", "constant"] = "gaussian"


class PostprocessConfig(_Strict):
    """Post-processing of one label, written to ``model.json`` for ``medseg predict``."""

    largest_component: bool = False
    min_size_mm3: float = Field(0.0, ge=0)
    fill_holes: bool = False


class LabelsConfig(_Strict):
    """The ``labels:`` block of ordinary-image datasets (values override the layout's defaults).

    ``names``: class names by train index (a list, or ``{index: name}``); ``ignore_index``: the
    mask value left out of loss and metrics; ``reduce_zero_label``: raw 0 is ignored and raw
    ``k`` becomes ``k - 1`` (ADE20K); ``id_mapping``: raw mask value -> train index.
    """

    names: list[str] | dict[int, str] | None = None
    ignore_index: int | None = Field(None, ge=0, le=65535)
    reduce_zero_label: bool | None = None
    id_mapping: dict[int, int] | None = None


class ImagesConfig(_Strict):
    """Ordinary-image training: augmentation (random scale, crop, flip), normalisation, class weights
    and how validation and ``medseg predict-images`` treat images larger than the crop.

    Sizes are ``[H, W]`` pixels. ``scale_range``: each training image is resized by a factor drawn
    uniformly from it (bilinear for images, nearest for masks), then a ``crop_size`` window is cut
    at random (padding: 0 for the normalised image, ``ignore_index`` for the mask) and flipped
    left-right with probability 0.5 when ``hflip``. ``class_weights``: ``auto`` (median-frequency
    balancing of the training masks' pixel counts), a list (one weight per class) or ``null``.
    ``inference``: ``whole`` (pad to the model's input multiple), ``slide`` (``crop_size`` windows at
    ``stride``, logits averaged) or ``resize`` (to ``resize_to``, logits resized back).
    ``score_threshold``: instance training (an instance dataset): the score a predicted segment needs to
    be kept, in validation and as the export's ``inference.threshold`` (``predict-images``' default); 0
    keeps every query, the COCO protocol of the Mask2Former paper (AP ranks by score).
    """

    crop_size: list[int] = Field(default_factory=lambda: [512, 512])
    scale_range: list[float] = Field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    normalization: dict[str, Any] = Field(default_factory=lambda: {"kind": "imagenet"})
    class_weights: Literal["auto"] | list[float] | None = None
    inference: Literal["whole", "slide", "resize"] = "whole"
    stride: list[int] | None = None
    resize_to: list[int] | None = None
    score_threshold: float = Field(0.5, ge=0, le=1)

    @field_validator("crop_size", "stride", "resize_to")
    @classmethod
    def _two_sizes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 2 or min(value) < 1):
            raise ValueError(f"needs two positive sizes [H, W] in pixels, got {value}")
        return value

    @field_validator("scale_range")
    @classmethod
    def _scale_range(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not 0 < value[0] <= value[1] <= 16:
            raise ValueError(f"needs [low, high] with 0 < low <= high <= 16, got {value}")
        return value


class FinetuneConfig(_Strict):
    """Fine-tuning settings of a promptable family (SAM2), read by its training module.

    They describe the training, not the network, so they are not part of ``model.config``
    and never reach the export's ``model.json``.
    """

    init_checkpoint: Path | None = None
    freeze_image_encoder: bool = True
    cache_embeddings: bool = True
    max_cache: int = Field(4096, ge=1)
    prompt: dict[str, Any] = Field(default_factory=dict)
    loss_weights: dict[str, float] = Field(default_factory=lambda: {"dice": 1.0, "bce": 1.0, "iou": 1.0})


class Config(_Strict):
    """A complete training job."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    transforms: TransformsConfig = Field(default_factory=TransformsConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    postprocessing: dict[str, PostprocessConfig] = Field(default_factory=dict)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    description: str = ""


# --------------------------------------------------------------------------- loading
def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _include_path(parent: Path, ref: str) -> Path:
    """The file of one ``include:`` entry: ``KIND/NAME`` of a shipped part, or a YAML path
    relative to ``parent``. An old ``.../configs/KIND/NAME.yaml`` path that no longer exists
    (the parts lived beside the source tree before they shipped in the package) means the
    shipped part."""
    if not ref.endswith((".yaml", ".yml")):
        return _configs.resolve_part(ref)
    path = parent / ref
    parts = Path(ref).parts
    if not path.is_file() and len(parts) >= 3 and parts[-3] == "configs" and parts[-2] in _configs.KINDS:
        log.info("include %s: using the shipped part %s/%s", ref, parts[-2], Path(ref).stem)
        return _configs.part_path(parts[-2], Path(ref).stem)
    return path


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config YAML, resolving ``include:`` (shipped part names or relative paths) recursively."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(str(p) for p in _seen)})")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    data = _configs.load_yaml_text(path.read_text(encoding="utf-8"), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = _merge(merged, read_yaml(_include_path(path.parent, str(inc)), _seen + (path,)))
    return _merge(merged, data)


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``key.sub=value`` override in place (value parsed as YAML)."""
    import yaml

    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected key.sub=value")
    key, raw = override.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {override!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {override!r}: {part} is not a section")
        node = nxt
    node[parts[-1]] = value


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            msg = f"unknown key; valid keys: {', '.join(_fields_at(parent))}"
        given = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {given!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return f"{source}: invalid config:\n  " + "\n  ".join(lines)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = field.annotation
        if getattr(model, "__origin__", None) is dict:
            return []
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def load_config(
    source: str | os.PathLike[str] | dict[str, Any] | Config, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read and validate a config (YAML path, dict or :class:`Config`) with ``--set`` overrides.

    Relative ``dataset.root``, ``dataset.splits``, ``plan.path`` and ``transforms.recipe`` paths
    in a YAML file are taken relative to the current directory, as users type them.

    Raises:
        ConfigError: naming each bad key with the allowed values.
    """
    if isinstance(source, Config):
        data: dict[str, Any] = source.model_dump(mode="json")
        where = "config"
    elif isinstance(source, dict):
        data, where = copy.deepcopy(source), "config"
    else:
        data, where = read_yaml(Path(source)), str(source)
    for ov in overrides:
        apply_override(data, ov)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, where)) from None


def resolve_recipe(name: str) -> Path:
    """Path of a transform recipe: an existing YAML path, or the name of a shipped recipe
    (``medseg/configs/transforms/NAME.yaml``, found through ``importlib.resources``)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    known = _configs.part_names("transforms")
    if name in known:
        return _configs.part_path("transforms", name)
    raise ConfigError(f"transforms.recipe {name!r} is neither a YAML file nor a known recipe; known: {', '.join(known)}")


def dump_config(cfg: Config) -> str:
    """The config as YAML (sections in their declared order), loadable again by :func:`load_config`."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


__all__ = ["Config", "load_config", "read_yaml", "apply_override", "resolve_recipe", "dump_config", "CONFIGS_DIR"]
