"""DIMSE through pynetdicom, for archives without DICOMweb: C-ECHO, C-FIND, C-GET, C-STORE.

:class:`DimseClient` offers the transport interface of :class:`~medseg.pacs.client.PacsClient`
(``ping``, ``find``, ``receive``, ``store``, ``base_url``, ``facts``), so that
:func:`~medseg.pacs.query.query_series`, :func:`~medseg.pacs.retrieve.fetch_series`,
:func:`~medseg.pacs.push.push_seg` and ``medseg batch --pacs`` work unchanged over either.
A service is named ``dicom://CALLED_AE@host:port``; medseg's own (calling) AE title is an
option (default ``MEDSEG``), and the PACS must know it as a modality.

C-GET asks for the series (or one instance) with a storage presentation context per SOP class
the C-FIND instance list names and transfer syntax pynetdicom knows (one syntax each: a
context carries the one syntax the PACS accepts), so that the PACS sends the stored files
untranscoded; each C-STORE sub-operation is written unparsed
(file meta + the dataset bytes as received) to a ``*.part`` file, checked (its UIDs against the
request) and renamed, as WADO-RS parts are. DIMSE has no credentials and no encryption here:
a host that is not loopback needs ``insecure=True`` (``--insecure-http``), as ``http://`` does.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.pacs.errors import PacsError, PacsTimeoutError
from medseg.pacs.instances import keep_instance
from medseg.pacs.redact import install_log_filters, redact

if TYPE_CHECKING:
    from medseg.pacs.query import SeriesRef

log = logging.getLogger(__name__)

DEFAULT_CALLING_AE = "MEDSEG"
#: the environment variable that overrides :data:`DEFAULT_CALLING_AE`
CALLING_AE_ENV = "MEDSEG_PACS_CALLING_AE"
_LEVELS = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash, at most 16
_PENDING = (0xFF00, 0xFF01)
_CANCELLED = 0xFE00
# C-STORE statuses that store the instance (warnings: coercion, elements discarded)
_STORED = (0x0000, 0xB000, 0xB006, 0xB007)


def check_ae(title: str, what: str = "AE title") -> str:
    """``title`` if it is a valid DICOM AE title (1-16 printable characters, no backslash), else raise.

    >>> check_ae("MEDSEG")
    'MEDSEG'
    """
    if not isinstance(title, str) or not _AE.match(title) or not title.strip():
        raise PacsError(f"not a valid DICOM {what}: {str(title)[:20]!r} (1 to 16 printable characters, no backslash)")
    return title.strip()


def default_calling_ae() -> str:
    """medseg's calling AE title: ``MEDSEG``, or ``$MEDSEG_PACS_CALLING_AE`` when set."""
    return check_ae(os.environ.get(CALLING_AE_ENV) or DEFAULT_CALLING_AE, "calling AE title")


@dataclass(frozen=True)
class DimseConfig:
    """Timeouts (s) of a :class:`DimseClient`: ``connect_timeout_s`` for the TCP connection and the
    association, ``read_timeout_s`` for each DIMSE message and the idle network. ``result_cap``: the
    most answers the PACS gives one C-FIND, when known (see :func:`medseg.pacs.query.result_cap`)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    result_cap: int | None = None


def _status_text(status: Any) -> str:
    code = getattr(status, "Status", None)
    return "no status (association aborted or timed out)" if code is None else f"status 0x{int(code):04X}"


def _write_unparsed(event: Any, path: Path) -> None:
    """A C-STORE request's dataset written as received (no decoding): preamble, file meta, bytes."""
    from pydicom.filewriter import write_file_meta_info

    with open(path, "wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, event.file_meta, enforce_standard=True)
        f.write(event.request.DataSet.getvalue())


class DimseClient:
    """One DIMSE service ``dicom://CALLED_AE@host:port``.

    A C-FIND has no limit and no paging; Orthanc ends one that reaches ``LimitFindResults`` with
    status 0xFE00 (measured), which sets ``facts["result_cap"]``, so query parts at that count
    are split (:mod:`medseg.pacs.query`); no probe query is sent (an unfiltered C-FIND on a
    large archive would list everything). A server that cuts answers with no status is not
    detected: give ``DimseConfig(result_cap=...)``.

    Args:
        url: the service; the AE title before ``@`` is the PACS's (called) one.
        calling_ae: medseg's own AE title (default :func:`default_calling_ae`).
        insecure: allow a host that is not loopback (DIMSE here is neither encrypted nor authenticated).
        config: timeouts.

    Raises:
        PacsError: a malformed URL or AE title, or a remote host without ``insecure``.
    """

    def __init__(self, url: str, *, calling_ae: str | None = None, insecure: bool = False,
                 config: DimseConfig | None = None) -> None:
        from medseg.pacs.client import is_loopback

        parts = urllib.parse.urlsplit(url.strip())
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "dicom" or not parts.hostname or not port or not parts.username:
            raise PacsError(f"a DIMSE service is dicom://AE_TITLE@host:port (e.g. dicom://ORTHANC@127.0.0.1:4242), "
                            f"got {redact(url)!r}")
        if parts.password is not None or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise PacsError("a DIMSE service URL holds only dicom://AE_TITLE@host:port (no password, path or query)")
        if not is_loopback(parts.hostname) and not insecure:
            raise PacsError(f"refusing unencrypted DIMSE to {parts.hostname} (not loopback): pass --insecure-http")
        install_log_filters()
        quiet = logging.getLogger("pynetdicom")
        if quiet.level == logging.NOTSET:  # its INFO/DEBUG lines dump identifiers (patient names): not ours to log
            quiet.setLevel(logging.WARNING)
        self.called_ae = check_ae(urllib.parse.unquote(parts.username), "called AE title")
        self.calling_ae = check_ae(calling_ae, "calling AE title") if calling_ae else default_calling_ae()
        self.host, self.port = parts.hostname, port
        self.base_url = f"dicom://{self.called_ae}@{parts.netloc.rpartition('@')[2]}"
        self.config = config or DimseConfig()
        #: what queries learnt about the server (``result_cap``: set by a C-FIND the PACS cut), kept for
        #: the life of the client
        self.facts: dict[str, Any] = {}
        self._find_assoc: Any = None  # one association carries every C-FIND (a year of per-day queries)

    def __repr__(self) -> str:
        return f"DimseClient({self.base_url!r}, calling_ae={self.calling_ae!r})"

    def close(self) -> None:
        """Release the C-FIND association (C-ECHO, C-GET and C-STORE each release their own)."""
        assoc, self._find_assoc = self._find_assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()

    def __enter__(self) -> "DimseClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- associations ----------------------------------------------------------------------
    def _associate(self, what: str, contexts: list[Any], **kwargs: Any) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.connection_timeout = ae.acse_timeout = self.config.connect_timeout_s
        ae.dimse_timeout = ae.network_timeout = self.config.read_timeout_s
        ae.requested_contexts = contexts
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, **kwargs)
        if assoc.is_established:
            return assoc
        why = ("rejected the association (is the calling AE title "
               f"{self.calling_ae} registered as a modality there?)" if assoc.is_rejected else
               "aborted the association" if assoc.is_aborted else
               f"did not answer within {self.config.connect_timeout_s:g} s")
        error = PacsTimeoutError if not (assoc.is_rejected or assoc.is_aborted) else PacsError
        raise error(f"{what} to {self.base_url}: the PACS {why}")

    @staticmethod
    def _context(abstract: str, syntaxes: list[str] | None = None) -> Any:
        from pynetdicom.presentation import build_context

        return build_context(abstract, syntaxes) if syntaxes else build_context(abstract)

    # -- the transport interface -----------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """C-ECHO; returns timing facts.

        Raises:
            PacsError: the association is refused or the echo fails.
        """
        from pynetdicom.sop_class import Verification

        start = time.perf_counter()
        assoc = self._associate("C-ECHO", [self._context(Verification)])
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if getattr(status, "Status", None) != 0x0000:
            raise PacsError(f"C-ECHO to {self.base_url}: {_status_text(status)}")
        return {"pacs": self.base_url, "ok": True, "auth": f"calling AE {self.calling_ae}",
                "seconds": round(time.perf_counter() - start, 3)}

    def _identifier(self, level: str, params: Mapping[str, Any], study_uid: str | None,
                    series_uid: str | None) -> Any:
        from pydicom.dataset import Dataset
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        ds = Dataset()
        ds.QueryRetrieveLevel = _LEVELS[level]
        keys = {"StudyInstanceUID": study_uid or ""}
        if level != "studies":
            keys["SeriesInstanceUID"] = series_uid or ""
        if level == "instances":
            keys.update(SOPInstanceUID="", SOPClassUID="")
        for key, value in params.items():
            if key in ("limit", "offset"):
                continue
            if key == "includefield":
                keys.update({k: keys.get(k, "") for k in str(value).split(",") if k})
            else:
                keys[key] = "" if value is None else str(value)
        for key, value in keys.items():
            tag = tag_for_keyword(key)
            if tag is None:
                raise PacsError(f"C-FIND: {key!r} is not a DICOM keyword")
            ds.add_new(tag, dictionary_VR(tag), value)
        return ds

    #: the PACS says when it cuts an answer (no probe needed): see :func:`medseg.pacs.query.result_cap`
    says_truncated = True

    def find(self, level: str, params: Mapping[str, Any], *, study_uid: str | None = None,
             series_uid: str | None = None, page_size: int = 0, max_pages: int = 0,
             limit: int | None = None) -> list[dict[str, Any]]:
        """One Study Root C-FIND at ``level`` (``studies``, ``series`` or ``instances``; the last
        below a series): every answer as DICOM JSON. ``page_size``, ``max_pages`` and ``limit``
        are the DICOMweb client's and have no DIMSE meaning (C-FIND has no paging).

        Raises:
            PacsError: an instance query without a series, a refused association, or a failure status.
        """
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as Find

        if level == "instances" and not (study_uid and series_uid):
            raise PacsError("C-FIND of instances needs the study and series (hierarchical Study Root)")
        identifier = self._identifier(level, params, study_uid, series_uid)
        what = f"C-FIND at {_LEVELS[level]} level"
        for attempt in (0, 1):
            if self._find_assoc is None or not self._find_assoc.is_established:
                self._find_assoc = self._associate(what, [self._context(Find)])
            out: list[dict[str, Any]] = []
            final = None
            for status, answer in self._find_assoc.send_c_find(identifier, Find):
                final = getattr(status, "Status", None)
                if final in _PENDING and answer is not None:
                    out.append(answer.to_json_dict())
            if final == 0x0000:
                return out
            if final == _CANCELLED:  # Orthanc's LimitFindResults: the answers so far, the rest cut
                self.facts["result_cap"] = len(out)
                log.info("%s: the PACS ended the answer at %d result(s) (status 0xFE00: its cap)", what, len(out))
                return out
            if final is not None or attempt:  # a failure status; or no answer on a fresh association
                self.close()
                raise PacsError(f"{what} to {self.base_url}: {_status_text(status)}")
            self.close()  # the PACS closed the idle association: open a new one, once
        raise AssertionError("unreachable")

    def receive(self, ref: "SeriesRef", folder: Path, sop_uid: str | None, expected: Collection[str],
                deadline: float) -> int:
        """C-GET of the series (``sop_uid`` None) or one instance into ``folder``; each C-STORE
        sub-operation is checked like a WADO-RS part. Returns how many valid instances were kept.

        Raises:
            PacsError: a refused association, a failure status, or the deadline passing.
        """
        from pydicom.dataset import Dataset
        from pynetdicom import ALL_TRANSFER_SYNTAXES, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get

        known = self.facts.setdefault("sop_classes", {})  # one C-FIND per series, not one per refetched instance
        if ref.series_uid not in known:
            known[ref.series_uid] = sorted({(i.get("00080016", {}).get("Value") or [""])[0] for i in self.find(
                "instances", {}, study_uid=ref.study_uid, series_uid=ref.series_uid)} - {""})
        classes = known[ref.series_uid]
        if not classes:
            raise PacsError(f"C-GET of series {ref.series_uid}: the PACS names no SOP class for its instances")
        where = f"C-GET of series {ref.series_uid}"
        kept = 0

        def on_store(event: Any) -> int:
            nonlocal kept
            if time.monotonic() > deadline:
                return 0xA700  # out of resources: the sub-operation fails, the association ends below
            fd, name = tempfile.mkstemp(suffix=".part", dir=folder)
            os.close(fd)
            path = Path(name)
            try:
                _write_unparsed(event, path)
                kept += keep_instance(path, ref, folder, expected, where)
            finally:
                path.unlink(missing_ok=True)
            return 0x0000

        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE" if sop_uid else "SERIES"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = ref.study_uid, ref.series_uid
        if sop_uid:
            ds.SOPInstanceUID = sop_uid
        # one context per (SOP class, transfer syntax): the PACS picks, per instance, the context of
        # its stored syntax (one context offering many would carry only the one syntax it accepts)
        storage = [(c, ts) for c in classes for ts in ALL_TRANSFER_SYNTAXES][:127]
        contexts = [self._context(Get)] + [self._context(c, [ts]) for c, ts in storage]
        assoc = self._associate(where, contexts, ext_neg=[build_role(c, scp_role=True) for c in classes],
                                evt_handlers=[(evt.EVT_C_STORE, on_store)])
        final = None
        try:
            for status, _ in assoc.send_c_get(ds, Get):
                final = status
                if time.monotonic() > deadline:
                    assoc.abort()
                    raise PacsTimeoutError(f"{where}: the series deadline passed while receiving")
        finally:
            if assoc.is_established:
                assoc.release()
        code = getattr(final, "Status", None)
        if code not in (0x0000, 0xB000):
            raise PacsError(f"{where} from {self.base_url}: {_status_text(final)} after {kept} instance(s)")
        return kept

    def store(self, path: Path, study_uid: str) -> None:  # noqa: ARG002 - the dataset names its study
        """C-STORE of one DICOM file (its own SOP class and transfer syntax).

        Raises:
            PacsError: a refused association or context, or a failure status.
        """
        import pydicom

        ds = pydicom.dcmread(path)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        assoc = self._associate(f"C-STORE of {path.name}", [self._context(str(ds.SOPClassUID), [syntax])])
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        if getattr(status, "Status", None) not in _STORED:
            raise PacsError(f"C-STORE of {path.name} to {self.base_url}: {_status_text(status)}")


__all__ = ["DimseClient", "DimseConfig", "check_ae", "default_calling_ae", "DEFAULT_CALLING_AE", "CALLING_AE_ENV"]
