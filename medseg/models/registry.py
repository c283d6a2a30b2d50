"""The model registry: one decorator, one factory, names listed on a wrong guess.

A model family registers a builder function under a name, with its contract::

    @register_model("unet3d", spatial_dims=3, input_multiple=unet3d_multiple,
                    weight_keys=(), tiny_config={"filters": [4, 8], ...})
    def build_unet3d(*, in_channels: int = 1, out_channels: int = 2, ...) -> torch.nn.Module: ...

The contract is what the rest of medseg reads instead of switching on model names:
``spatial_dims``; ``input_multiple(config)``, the per-axis factor every input size must
be a multiple of (U-Net depth, DeepLabV3+ output stride, SegFormer's /32; 1 for SAM2,
whose adapter resizes every slice to its ``image_size``); ``weight_keys``, the builder
options that name local files of initial weights (an export's own state_dict replaces
them); and ``tiny_config``, a small config the shared model test harness builds.

and everything else (training, export, inference) creates models by name and config
through :func:`create_model`. A family may also name its own Lightning module
(``training_module="medseg.models.sam2:Sam2LightningModule"``, only modules under
``medseg.`` are accepted) when the generic segmentation engine does not fit it.

The route a family takes is declared here too, never switched on its name elsewhere:
``trainer`` names a training entry that replaces medseg's Lightning engine (ultralytics' own
trainer for ``yolo_seg`` and ``yolo_sem``), ``task`` says what the network's predictions are
(``semantic``: per-pixel logits, the dense predictors; ``instance``/``panoptic``: segments), and
``image_predictor`` names the ``predict-images`` writer of exports whose task is not ``semantic``.
Both are ``"medseg.pkg.module:function"`` strings, resolved by :func:`resolve_entry` when used.

The built-in families live in the modules listed in :data:`BUILTIN_FAMILIES`; they
import torch/MONAI/smp only inside their builders, so listing models stays light.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

# Modules that register model families when imported. Later issues append to this tuple.
BUILTIN_FAMILIES: tuple[str, ...] = (
    "medseg.models.unet2d", "medseg.models.unet3d", "medseg.models.sam2", "medseg.models.general2d",
    "medseg.models.yolo", "medseg.models.mask2former",
)


#: what a family's network outputs (:attr:`ModelSpec.task`)
MODEL_TASKS: tuple[str, ...] = ("semantic", "instance", "panoptic")


class UnknownModelError(ConfigError, KeyError):
    """An unknown model name (a :class:`ConfigError` that is also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family.

    Attributes:
        name: registry name (``"unet3d"``).
        builder: ``builder(**config) -> torch.nn.Module``.
        spatial_dims: 2 (input ``[B, C, X, Y]``) or 3 (input ``[B, C, X, Y, Z]``).
        training_module: ``"medseg.pkg.module:ClassName"`` of a LightningModule for this
            family, or ``None`` for the generic segmentation engine.
        description: one line for ``medseg train --list-models``.
        defaults: keyword defaults of the builder (introspected), for documentation.
        input_multiple: ``input_multiple(config) -> per-axis factors`` (voxels/pixels) that
            every input size must be a multiple of; ``config`` has the builder defaults filled in.
        weight_keys: builder options naming local initial-weight files.
        tiny_config: a small config for tests (built by the shared model harness).
        promptable: the network needs prompts (SAM2): it has no plain ``forward(image)``.
        task: ``"semantic"`` (logits per pixel, the dense harness and predictors), ``"instance"``
            (the network returns detections with masks: YOLO-seg, :mod:`medseg.inference.yolo`) or
            ``"panoptic"``; an export may record another task its family supports
            (``model.json`` ``inference.task``: Mask2Former's post-processing).
        trainer: ``"medseg.pkg.module:function"`` of a training entry
            ``f(cfg, run_dir, *, resume, t0) -> run_dir`` that replaces the Lightning engine, or ``None``.
        image_predictor: ``"medseg.pkg.module:function"`` writing ``predict-images`` outputs of an
            export whose task is not ``semantic`` (``f(model, input_dir, output_dir, *, device, overwrite,
            on_image) -> records``), or ``None``.
    """

    name: str
    builder: Callable[..., Any]
    spatial_dims: int
    training_module: str | None = None
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    input_multiple: Callable[[dict[str, Any]], Sequence[int]] | None = None
    weight_keys: tuple[str, ...] = ()
    tiny_config: dict[str, Any] | None = None
    promptable: bool = False
    task: str = "semantic"
    trainer: str | None = None
    image_predictor: str | None = None

    def size_multiple(self, config: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """Per-axis factor (``spatial_dims`` values) every input size must be a multiple of.

        Example:
            >>> get_model_spec("unet2d").size_multiple({"encoder_depth": 4})
            (16, 16)
        """
        if self.input_multiple is None:
            return (1,) * self.spatial_dims
        merged = {**self.defaults, **dict(config or {})}
        factors = tuple(int(f) for f in self.input_multiple(merged))
        if len(factors) == 1:
            factors = factors * self.spatial_dims
        if len(factors) != self.spatial_dims or min(factors) < 1:
            raise ModelError(f"model {self.name!r}: input_multiple gave {factors} for {self.spatial_dims} axes")
        return factors

    def check_size(self, size: Sequence[int], config: Mapping[str, Any] | None = None, *, what: str) -> None:
        """Raise :class:`ConfigError` naming ``what`` when ``size`` breaks :meth:`size_multiple`."""
        multiple = self.size_multiple(config)
        if len(size) != len(multiple) or any(int(s) % m for s, m in zip(size, multiple)):
            raise ConfigError(f"{what} {list(size)} must be a multiple of {list(multiple)} for model {self.name!r}")


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


def register_model(
    name: str,
    *,
    spatial_dims: int = 3,
    training_module: str | None = None,
    description: str = "",
    input_multiple: Callable[[dict[str, Any]], Sequence[int]] | None = None,
    weight_keys: Sequence[str] = (),
    tiny_config: dict[str, Any] | None = None,
    promptable: bool = False,
    task: str = "semantic",
    trainer: str | None = None,
    image_predictor: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder`` under ``name`` (lower-case letters, digits, ``_``) with its contract.

    See :class:`ModelSpec` for the contract fields. A family without ``tiny_config`` fails
    the shared model test harness (``tests/test_model_contracts.py``).
    """
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ConfigError(f"model name {name!r} must be lower-case letters, digits and '_'")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"model {name!r}: spatial_dims must be 2 or 3, got {spatial_dims}")
    for key, entry in (("training_module", training_module), ("trainer", trainer),
                       ("image_predictor", image_predictor)):
        if entry is not None and not (entry.startswith("medseg.") and ":" in entry):
            raise ConfigError(f"model {name!r}: {key} must be 'medseg.module:name' inside medseg, got {entry!r}")
    if task not in MODEL_TASKS:
        raise ConfigError(f"model {name!r}: task must be one of {', '.join(MODEL_TASKS)}, got {task!r}")

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.builder is not builder:
            if getattr(existing.builder, "__qualname__", None) != getattr(builder, "__qualname__", None):
                raise ConfigError(f"model {name!r} is already registered by {existing.builder.__module__}")
        defaults = {
            k: p.default
            for k, p in inspect.signature(builder).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            spatial_dims=spatial_dims,
            training_module=training_module,
            description=description or (inspect.getdoc(builder) or "").split("\n")[0],
            defaults=defaults,
            input_multiple=input_multiple,
            weight_keys=tuple(weight_keys),
            tiny_config=dict(tiny_config) if tiny_config is not None else None,
            promptable=promptable,
            task=task,
            trainer=trainer,
            image_predictor=image_predictor,
        )
        return builder

    return decorator


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in BUILTIN_FAMILIES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                log.debug("model family module %s is not present", module)
                continue
            raise


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``.

    Raises:
        UnknownModelError: (a ConfigError and KeyError) listing the known names.
    """
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def resolve_entry(entry: str) -> Any:
    """The object an entry string ``"medseg.pkg.module:name"`` names (a registry ``trainer``,
    ``image_predictor`` or ``training_module``), imported now."""
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def initial_weight_keys() -> tuple[str, ...]:
    """Every registered family's ``weight_keys`` (builder options naming local initial-weight files)."""
    _load_builtin()
    return tuple(sorted({k for spec in _REGISTRY.values() for k in spec.weight_keys}))


def create_model(name: str, **config: Any) -> Any:
    """Build the model registered as ``name`` with keyword ``config``; returns a ``torch.nn.Module``.

    3D models take ``[B, C, X, Y, Z]`` float tensors and return logits
    ``[B, num_classes, X, Y, Z]`` in eval mode; 2D models take ``[B, C, X, Y]``.

    Raises:
        UnknownModelError: unknown name (lists the known ones).
        ConfigError: a config key the builder does not accept (lists the accepted ones).
        ModelError: the builder failed for another reason.
    """
    spec = get_model_spec(name)
    params = inspect.signature(spec.builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(config) - set(params))
        if unknown:
            raise ConfigError(
                f"model {name!r}: unknown config key(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(params))}"
            )
    try:
        return spec.builder(**config)
    except (ConfigError, ModelError):
        raise
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ModelError(f"model {name!r} cannot be built with config {config}: {exc}") from exc


__all__ = [
    "BUILTIN_FAMILIES",
    "MODEL_TASKS",
    "ModelSpec",
    "UnknownModelError",
    "register_model",
    "list_models",
    "get_model_spec",
    "create_model",
    "initial_weight_keys",
    "resolve_entry",
]
