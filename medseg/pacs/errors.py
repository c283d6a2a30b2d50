"""Errors of :mod:`medseg.pacs`; every message is redacted (no query strings, no credentials)."""

from __future__ import annotations

from medseg.errors import MedsegError


class PacsError(MedsegError):
    """A PACS request failed, or the PACS answered something medseg cannot use."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401) or the permission (HTTP 403), or none were found."""


class PacsHTTPError(PacsError):
    """The PACS answered an HTTP error status; ``status`` holds it."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class PacsTimeoutError(PacsError):
    """No answer within the connect timeout, no data within the idle read timeout, or a deadline passed."""


class IncompleteSeriesError(PacsError):
    """A retrieved series lacks instances that the QIDO instance list names; never segment it."""

    def __init__(self, message: str, *, received: int, expected: int) -> None:
        super().__init__(message)
        self.received = received
        self.expected = expected


__all__ = ["PacsError", "PacsAuthError", "PacsHTTPError", "PacsTimeoutError", "IncompleteSeriesError"]
