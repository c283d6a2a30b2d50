"""Deprecated path of :mod:`medseg.io.dicom.fasthdr` (fast header reader); kept for one release."""

from medseg.io.dicom.fasthdr import *  # noqa: F401,F403
from medseg.io.dicom.fasthdr import __all__  # noqa: F401
