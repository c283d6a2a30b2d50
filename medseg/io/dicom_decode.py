"""Deprecated path of :mod:`medseg.io.dicom.decode` (pixel decoding); kept for one release."""

from medseg.io.dicom.decode import *  # noqa: F401,F403
from medseg.io.dicom.decode import __all__  # noqa: F401
