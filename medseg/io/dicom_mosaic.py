"""Deprecated path of :mod:`medseg.io.dicom.mosaic` (Siemens MOSAIC helpers); kept for one release."""

from medseg.io.dicom.mosaic import *  # noqa: F401,F403
from medseg.io.dicom.mosaic import __all__  # noqa: F401
