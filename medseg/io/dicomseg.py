"""Deprecated path of :mod:`medseg.io.dicom.seg` (DICOM-SEG writer and reader); kept for one release."""

from medseg.io.dicom.seg import *  # noqa: F401,F403
from medseg.io.dicom.seg import __all__  # noqa: F401
