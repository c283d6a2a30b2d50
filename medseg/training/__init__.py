"""Training: config (pydantic), Lightning module, engine and curves.

``medseg.training.train(config, *, out_dir, overrides=())`` is the Python entry point;
torch and Lightning are imported only when it runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def train(
    config: str | os.PathLike[str] | dict[str, Any],
    *,
    out_dir: str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
) -> Path:
    """Train per ``config`` (YAML path or dict) into ``out_dir``; returns the run folder.

    See :func:`medseg.training.engine.train`.
    """
    from medseg.training.engine import train as _train

    return _train(config, out_dir=out_dir, overrides=overrides, resume=resume)


__all__ = ["train"]
