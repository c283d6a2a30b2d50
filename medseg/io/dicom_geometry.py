"""Deprecated path of :mod:`medseg.io.dicom.geometry` (slice sorting and geometry checks); kept for one release."""

from medseg.io.dicom.geometry import *  # noqa: F401,F403
from medseg.io.dicom.geometry import __all__  # noqa: F401
