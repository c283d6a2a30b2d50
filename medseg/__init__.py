"""medseg: medical and general image segmentation with geometry you can trust.

``import medseg`` is light (numpy only); heavy libraries (torch, MONAI, SimpleITK,
pydicom) are imported by the functions that use them.
"""

from __future__ import annotations

from medseg.errors import ConfigError, InputError, MedsegError, ModelError
from medseg.volume import Volume

__version__ = "0.1.0"

__all__ = ["Volume", "MedsegError", "InputError", "ConfigError", "ModelError", "__version__"]
