"""Inference: the :class:`Predictor` (load once, segment many volumes), sliding-window
inference, post-processing and mapping back to the input grid.

Nothing heavy is imported here; torch is loaded when a Predictor is built.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # lazy: keep `import medseg.inference` light
    if name == "Predictor":
        from medseg.inference.predictor import Predictor

        return Predictor
    raise AttributeError(name)


__all__ = ["Predictor"]
