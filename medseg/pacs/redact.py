"""Redaction of text that may hold PHI or secrets: query strings, user:password@ and known secrets.

``requests`` puts the request URL in its exception text (``... with url: /studies?PatientName=DOE*``);
every message medseg.pacs logs or raises goes through :func:`redact` first.

>>> redact("HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: /dicom-web/studies?PatientName=DOE*")
"HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: /dicom-web/studies?<query>"
>>> redact("http://user:pw@pacs:8042/dicom-web/series?Modality=CT&limit=100")
'http://pacs:8042/dicom-web/series?<query>'
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

_USERINFO = re.compile(r"(\w+://)[^/\s@'\"]*@")
_QUERY = re.compile(r"(/[^\s?'\"]*|\w+://[^\s/?'\"]+)\?[^\s'\"()]*")

_lock = threading.Lock()
_secrets: set[str] = set()


def add_secret(*values: str | None) -> None:
    """Remember values (passwords, tokens, encoded headers) that :func:`redact` replaces anywhere."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 3)


def redact(text: object, extra: Iterable[str] = ()) -> str:
    """``text`` with URL query strings, ``user:password@`` and every known secret replaced."""
    out = _QUERY.sub(r"\1?<query>", _USERINFO.sub(r"\1", str(text)))
    with _lock:
        secrets = sorted(_secrets | {e for e in extra if e and len(e) >= 3}, key=len, reverse=True)
    for secret in secrets:
        out = out.replace(secret, "<redacted>")
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's formatted message (used on urllib3's logger,
    which logs each request line with its query string at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: leave it to logging
            return True
        record.msg, record.args = redact(message), None
        return True


_installed = False


def install_log_filters() -> None:
    """Redact urllib3's request log lines (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "requests"):
        logging.getLogger(name).addFilter(RedactingFilter())


__all__ = ["redact", "add_secret", "install_log_filters", "RedactingFilter"]
