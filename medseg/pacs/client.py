"""A DICOMweb client (QIDO-RS, WADO-RS, STOW-RS) on ``requests``, built for the data path.

What it does differently from ``dicomweb-client``: wildcard values (``*``, ``?``) are sent
as they are, never percent-encoded; every URL is built from the ``--pacs`` base (RetrieveURL
and BulkDataURI in answers are never followed); a connect timeout and an idle read timeout
bound every request; retries are bounded, with backoff and jitter, only on connection errors
and HTTP 408/429/5xx (``Retry-After`` honoured); 400/403/404/409/415 are never retried; a
401 re-reads the credentials once. Messages and log lines never hold query strings or secrets.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.pacs.auth import AuthKind, Credentials, load_credentials
from medseg.pacs.errors import PacsAuthError, PacsError, PacsHTTPError, PacsTimeoutError
from medseg.pacs.redact import install_log_filters, redact
from medseg.pacs.uids import check_uid

if TYPE_CHECKING:
    from medseg.pacs.query import SeriesRef

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_FAILED_SOP_SEQUENCE = "00081198"
# Characters a query value keeps unencoded: RFC 3986 unreserved, the DICOM wildcards, and the
# separators of PN components and multiple values.
_QUERY_SAFE = "*?^,-._~"


def query_string(params: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> str:
    """``key=value&...`` with wildcards left as they are.

    >>> query_string({"PatientName": "HF*", "StudyDate": "20250101-20250131", "limit": 10})
    'PatientName=HF*&StudyDate=20250101-20250131&limit=10'
    """
    items = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{urllib.parse.quote(str(k), safe='')}={urllib.parse.quote(str(v), safe=_QUERY_SAFE)}"
                    for k, v in items)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts (s) and retry policy of a :class:`PacsClient`.

    ``read_timeout_s`` is the idle timeout: the longest wait for the next bytes of an answer.
    A request is tried at most ``1 + max_retries`` times; the n-th wait is
    ``min(backoff_max_s, backoff_s * 2**n)`` times a jitter in [0.5, 1], or ``Retry-After``
    (capped at ``backoff_max_s``). ``result_cap``: the most answers the PACS gives one query
    (Orthanc's ``LimitFindResults`` + 1), when known; ``None``: measured (:func:`medseg.pacs.query.result_cap`).
    """

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    result_cap: int | None = None


class PacsClient:
    """One DICOMweb service (``base_url`` such as ``https://pacs.example.org/dicom-web``).

    Args:
        base_url: the DICOMweb root; every request goes to this scheme, host and port.
        auth: ``auto``, ``none``, ``basic`` or ``bearer`` (see :mod:`medseg.pacs.auth`).
        auth_file: a 0600 file with ``user:password`` (basic) or the token (bearer).
        insecure_http: allow ``http://`` to a host that is not loopback.
        config: timeouts and retries.

    Raises:
        PacsError: a malformed URL, or ``http://`` to a remote host without ``insecure_http``.
        PacsAuthError: credentials asked for but not found.
    """

    def __init__(self, base_url: str, *, auth: AuthKind | str = AuthKind.AUTO,
                 auth_file: str | os.PathLike[str] | None = None, insecure_http: bool = False,
                 config: ClientConfig | None = None) -> None:
        import requests

        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"--pacs must be an http(s) URL such as https://pacs.example.org/dicom-web, "
                            f"got {redact(base_url)!r}")
        if parts.username or parts.password:
            raise PacsError("--pacs must not hold credentials; set MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD "
                            "or MEDSEG_PACS_TOKEN, or pass --auth-file")
        if parts.query or parts.fragment:
            raise PacsError(f"--pacs must not hold a query string: {redact(base_url)!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure_http:
            raise PacsError(f"refusing plain http:// to {parts.hostname} (not loopback): use https:// "
                            "or pass --insecure-http")
        install_log_filters()
        self.base_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.config = config or ClientConfig()
        self._auth = (AuthKind.coerce(auth), auth_file)
        self._credentials: Credentials = load_credentials(*self._auth)
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or .netrc from the environment
        self._session.headers["User-Agent"] = "medseg-pacs"
        #: what queries learnt about the server (``result_cap``), kept for the life of the client
        self.facts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"PacsClient({self.base_url!r}, auth={self._credentials.kind.value})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "PacsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- URLs -------------------------------------------------------------------------------
    def url(self, *segments: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None) -> str:
        """``base_url/seg1/seg2?query``; each segment percent-encoded, the query by :func:`query_string`."""
        path = "/".join(urllib.parse.quote(s, safe="") for s in segments)
        url = f"{self.base_url}/{path}" if path else self.base_url
        return f"{url}?{query_string(params)}" if params else url

    def where(self, url: str) -> str:
        """The request named for messages: its path, without query string."""
        return redact(url)[len(self.base_url):] or "/"

    # -- requests ---------------------------------------------------------------------------
    def _wait_s(self, attempt: int, response: Any) -> float:
        cfg = self.config
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                when = email.utils.parsedate_to_datetime(retry_after)
                wait = when.timestamp() - time.time() if when else cfg.backoff_s
            return max(0.0, min(cfg.backoff_max_s, wait))
        return min(cfg.backoff_max_s, cfg.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                data: Any = None, stream: bool = False, ok: Sequence[int] = (200,)) -> Any:
        """One request with the retry policy; returns the ``requests.Response`` (status in ``ok``).

        ``data`` must be bytes (a retry sends it again). Raises a :class:`PacsError` subclass.
        """
        import requests

        if not url.startswith(self.base_url + "/") and url != self.base_url:
            raise PacsError(f"refusing a request outside --pacs: {redact(url)}")
        where = f"{method} {self.where(url)}"
        reread = False
        attempt = 0
        while True:
            try:
                response = self._session.request(
                    method, url, headers={**self._credentials.header(), **(headers or {})}, data=data,
                    stream=stream, allow_redirects=False,
                    timeout=(self.config.connect_timeout_s, self.config.read_timeout_s))
            except requests.exceptions.Timeout as exc:
                error: PacsError = PacsTimeoutError(
                    f"{where}: no answer within {self._timeout_text(exc)} ({redact(type(exc).__name__)})")
                response = None
            except requests.exceptions.ConnectionError as exc:
                error = PacsError(f"{where}: cannot connect to {self.base_url}: {redact(exc)}")
                response = None
            except requests.exceptions.RequestException as exc:
                raise PacsError(f"{where}: {redact(exc)}") from None
            else:
                status = response.status_code
                if status in ok:
                    return response
                body = self._error_body(response)
                response.close()
                if status == 401 and not reread:
                    reread = True
                    self._credentials = load_credentials(*self._auth)
                    log.info("%s: HTTP 401; credentials read again, trying once more", where)
                    continue
                if status in (401, 403):
                    hint = ("the PACS refused the credentials" if status == 401 else
                            "the PACS refused access with these credentials")
                    have = (f"{self._credentials.kind.value} credentials from {self._credentials.source}"
                            if self._credentials.kind is not AuthKind.NONE else
                            "no credentials (set MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD or MEDSEG_PACS_TOKEN)")
                    raise PacsAuthError(f"{where}: HTTP {status}: {hint}; sent {have}")
                error = PacsHTTPError(f"{where}: HTTP {status} {response.reason}{body}", status=status)
                if status not in RETRY_STATUS:
                    raise error
            if attempt >= self.config.max_retries:
                raise type(error)(f"{error} (gave up after {attempt + 1} tries)", **(
                    {"status": error.status} if isinstance(error, PacsHTTPError) else {})) from None
            wait = self._wait_s(attempt, response)
            log.warning("%s; retry %d/%d in %.1f s", error, attempt + 1, self.config.max_retries, wait)
            time.sleep(wait)
            attempt += 1

    def _timeout_text(self, exc: Exception) -> str:
        import requests

        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"the connect timeout ({self.config.connect_timeout_s:g} s)"
        return f"the idle read timeout ({self.config.read_timeout_s:g} s)"

    @staticmethod
    def _error_body(response: Any) -> str:
        try:
            text = response.text[:200].strip()
        except Exception:  # noqa: BLE001 - the body is only a hint
            return ""
        return f": {redact(text)}" if text and "<" not in text[:1] else ""

    def get_json(self, *segments: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None
                 ) -> list[dict[str, Any]]:
        """A QIDO-RS or metadata GET: the DICOM JSON answer (``[]`` for HTTP 204)."""
        url = self.url(*segments, params=params)
        response = self.request("GET", url, headers={"Accept": DICOM_JSON}, ok=(200, 204))
        if response.status_code == 204 or not response.content.strip():
            return []
        try:
            answer = response.json()
        except ValueError:
            raise PacsError(f"GET {self.where(url)}: the answer is not DICOM JSON") from None
        if not isinstance(answer, list):
            raise PacsError(f"GET {self.where(url)}: expected a JSON list, got {type(answer).__name__}")
        return answer

    @contextmanager
    def stream(self, *segments: str, accept: str = MULTIPART_DICOM_ANY) -> Iterator[Any]:
        """A streamed WADO-RS GET (a ``requests.Response``), closed on exit."""
        response = self.request("GET", self.url(*segments), headers={"Accept": accept}, stream=True)
        try:
            yield response
        finally:
            response.close()

    # -- the transport interface (shared with medseg.pacs.dimse.DimseClient) ----------------
    def find(self, level: str, params: Mapping[str, Any], *, study_uid: str | None = None,
             series_uid: str | None = None, page_size: int = 100, max_pages: int = 1000,
             limit: int | None = None) -> list[dict[str, Any]]:
        """A QIDO-RS query at ``level`` (``studies``, ``series`` or ``instances``), below
        ``study_uid``/``series_uid`` when given: every answer (DICOM JSON), paged with
        ``limit``/``offset`` until an empty page; with ``limit``, one request of that limit.

        Raises:
            PacsError: still answering after ``max_pages`` pages (narrow the query).
        """
        segments = [*(["studies", study_uid] if study_uid else []), *(["series", series_uid] if series_uid else []),
                    level]
        if limit is not None:
            return self.get_json(*segments, params={**params, "limit": limit})
        out: list[dict[str, Any]] = []
        for _ in range(max_pages):
            answer = self.get_json(*segments, params={**params, "limit": page_size, "offset": len(out)})
            if not answer:
                return out
            out.extend(answer)
        raise PacsError(f"GET /{'/'.join(segments)}: still answering after {max_pages} pages of {page_size}; "
                        "narrow the query")

    def receive(self, ref: "SeriesRef", folder: Path, sop_uid: str | None, expected: Collection[str],
                deadline: float) -> int:
        """WADO-RS of the series (``sop_uid`` None) or one instance into ``folder`` (see
        :func:`medseg.pacs.wado.receive`); returns how many valid instances were kept."""
        from medseg.pacs.wado import receive

        return receive(self, ref, folder, sop_uid, expected, deadline)

    def store(self, path: Path, study_uid: str) -> None:
        """STOW-RS of one DICOM file to ``/studies/{study_uid}``.

        Raises:
            PacsError: the request failed, or the PACS reports the instance failed (FailedSOPSequence).
        """
        boundary = f"medseg-{uuid.uuid4().hex}"
        body = b"".join([f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), path.read_bytes(),
                         f"\r\n--{boundary}--\r\n".encode()])
        response = self.request(
            "POST", self.url("studies", study_uid), data=body, ok=(200, 202),
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                     "Accept": DICOM_JSON})
        try:
            answer = response.json() if response.content.strip() else {}
        except ValueError:
            answer = {}
        failed = answer.get(_FAILED_SOP_SEQUENCE, {}).get("Value") if isinstance(answer, dict) else None
        if failed:
            reason = failed[0].get("00081197", {}).get("Value", ["?"])[0] if isinstance(failed[0], dict) else "?"
            raise PacsError(f"STOW of {path.name} to study {study_uid}: the PACS refused the instance "
                            f"(FailureReason {reason})")

    def ping(self) -> dict[str, Any]:
        """Check that the service answers a one-result QIDO-RS study query; returns timing facts."""
        start = time.perf_counter()
        studies = self.get_json("studies", params={"limit": 1})
        return {"pacs": self.base_url, "ok": True, "auth": self._credentials.kind.value,
                "seconds": round(time.perf_counter() - start, 3), "studies_seen": len(studies)}


__all__ = ["PacsClient", "ClientConfig", "check_uid", "is_loopback", "query_string", "RETRY_STATUS",
           "MULTIPART_DICOM_ANY"]
