"""Deprecated path of :mod:`medseg.io.dicom.series` (header scan and series grouping); kept for one release."""

from medseg.io.dicom.series import *  # noqa: F401,F403
from medseg.io.dicom.series import __all__  # noqa: F401
