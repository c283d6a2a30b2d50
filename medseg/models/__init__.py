"""Model registry and families (``unet2d``, ``unet3d``; later issues add more).

``create_model(name, **config)`` builds a ``torch.nn.Module``; ``list_models()`` names
the registered families. torch/MONAI/smp are imported only when a model is built.
"""

from __future__ import annotations

from medseg.models.registry import ModelSpec, create_model, get_model_spec, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "get_model_spec", "ModelSpec"]
