"""One way to name a PACS: the URL scheme picks the transport.

``https://host/dicom-web`` (or ``http://`` to loopback) is DICOMweb (:class:`~medseg.pacs.client.PacsClient`);
``dicom://AE_TITLE@host:port`` is DIMSE (:class:`~medseg.pacs.dimse.DimseClient`). Both offer the same
interface (``ping``, ``find``, ``receive``, ``store``, ``base_url``), which query, retrieve, push
and ``medseg batch --pacs`` use.
"""

from __future__ import annotations

import os
from typing import Any

from medseg.pacs.auth import AuthKind
from medseg.pacs.errors import PacsError


def open_client(url: str, *, auth: AuthKind | str = AuthKind.AUTO, auth_file: str | os.PathLike[str] | None = None,
                insecure_http: bool = False, calling_ae: str | None = None) -> Any:
    """The client of ``url``: a :class:`~medseg.pacs.client.PacsClient` for ``http(s)://``, a
    :class:`~medseg.pacs.dimse.DimseClient` for ``dicom://`` (``calling_ae``: medseg's AE title).

    Raises:
        PacsError: a malformed URL, credentials asked of a DIMSE service, or a calling AE title
            given for DICOMweb.
    """
    if url.strip().lower().startswith("dicom://"):
        if AuthKind.coerce(auth) not in (AuthKind.AUTO, AuthKind.NONE) or auth_file is not None:
            raise PacsError("--auth and --auth-file are DICOMweb credentials; a dicom:// service is reached by "
                            "the calling AE title (--calling-ae) the PACS knows")
        from medseg.pacs.dimse import DimseClient

        return DimseClient(url, calling_ae=calling_ae, insecure=insecure_http)
    if calling_ae:
        raise PacsError("--calling-ae names medseg's DICOM AE title for a dicom:// service; --pacs is DICOMweb")
    from medseg.pacs.client import PacsClient

    return PacsClient(url, auth=auth, auth_file=auth_file, insecure_http=insecure_http)


__all__ = ["open_client"]
