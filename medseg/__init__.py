"""medseg: medical and general image segmentation with geometry you can trust.

``import medseg`` is light: the error types are imported eagerly, ``Volume`` (numpy)
on first access, and heavy libraries (torch, MONAI, SimpleITK, pydicom) only by the
functions that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medseg.errors import ConfigError, InputError, MedsegError, ModelError

if TYPE_CHECKING:
    from medseg.volume import Volume

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Volume":
        from medseg.volume import Volume

        return Volume
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")


__all__ = ["Volume", "MedsegError", "InputError", "ConfigError", "ModelError", "__version__"]
