"""QIDO-RS series queries that do not trust the server: per-day date ranges, paging until an
empty page, client-side filters, and a cap on the number of series a run may take.

Servers truncate silently (Orthanc's ``LimitFindResults`` answered 4 of 9 with no warning), so
a query is paged with ``limit``/``offset`` until a page comes back empty, and each day of a date
range is its own query. The answer is filtered again here, because a server may ignore a key.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medseg.pacs.client import PacsClient, check_uid
from medseg.pacs.errors import PacsError

log = logging.getLogger(__name__)

MAX_DAYS = 3660
# DICOM JSON tags of the attributes a SeriesRef keeps.
_FIELDS = {
    "StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "Modality": "00080060",
    "SeriesDescription": "0008103E", "SeriesNumber": "00200011", "StudyDate": "00080020",
    "NumberOfSeriesRelatedInstances": "00201209",
}
_RANGE_VRS = frozenset({"DA", "TM", "DT"})


@dataclass(frozen=True)
class SeriesRef:
    """One series found by :func:`query_series`: what fetching and pushing need, and no PHI
    (no patient name or ID is kept)."""

    study_uid: str
    series_uid: str
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    study_date: str = ""
    n_instances: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_where(where: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """``["Modality=CT", "StudyDate=20250101-20250131"]`` (or a mapping) as ``{keyword: value}``.

    >>> parse_where(["Modality=CT", "StudyDate=20250101-20250131"])
    {'Modality': 'CT', 'StudyDate': '20250101-20250131'}

    Raises:
        PacsError: no ``=``, a key that is not a DICOM keyword, or a key given twice.
    """
    from pydicom.datadict import tag_for_keyword

    if where is None:
        return {}
    items = list(where.items()) if isinstance(where, Mapping) else [_split(w) for w in where]
    out: dict[str, str] = {}
    for key, value in items:
        key = key.strip()
        if tag_for_keyword(key) is None:
            raise PacsError(f"--where {key}=...: {key!r} is not a DICOM keyword (e.g. Modality, StudyDate, "
                            "PatientName, SeriesDescription, StudyInstanceUID)")
        if key in out:
            raise PacsError(f"--where {key} given twice; give several values as A\\B")
        out[key] = str(value).strip()
    return out


def _split(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise PacsError("--where must be KEY=VALUE (e.g. Modality=CT); the value given is not shown (it may be "
                        "patient data)")
    return key, value


def _vr(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    return str(dictionary_VR(tag_for_keyword(keyword)))


def _tag(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    return f"{tag_for_keyword(keyword):08X}"


def _date(text: str, key: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise PacsError(f"--where {key}: dates are YYYYMMDD or YYYYMMDD-YYYYMMDD") from None


def split_days(key: str, value: str) -> list[str]:
    """A closed date range as one value per day; any other value as it is.

    >>> split_days("StudyDate", "20250130-20250202")
    ['20250130', '20250131', '20250201', '20250202']
    """
    first, sep, last = value.partition("-")
    if not sep or not first or not last or _vr(key) != "DA":
        return [value]
    start, end = _date(first, key), _date(last, key)
    days = (end - start).days + 1
    if days < 1:
        raise PacsError(f"--where {key}: the range ends before it starts")
    if days > MAX_DAYS:
        raise PacsError(f"--where {key}: {days} days is more than {MAX_DAYS}; query a shorter range")
    return [(start + dt.timedelta(d)).strftime("%Y%m%d") for d in range(days)]


def _values(item: Mapping[str, Any], keyword: str) -> list[str] | None:
    element = item.get(_tag(keyword))
    if element is None:
        return None
    out = []
    for v in element.get("Value", []):
        out.append(str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v))
    return out


def _wildcard(pattern: str, case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", 0 if case else re.IGNORECASE)


def matches(item: Mapping[str, Any], where: Mapping[str, str]) -> bool:
    """Whether a QIDO answer item satisfies ``where`` by DICOM matching rules (single value,
    ``A\\B`` lists, ``*``/``?`` wildcards, ``A-B`` date/time ranges; PN case-insensitive).
    An attribute the server did not return is not held against the item."""
    for key, wanted in where.items():
        have = _values(item, key)
        if have is None or wanted in ("", "*"):
            continue
        vr = _vr(key)
        ok = False
        for alternative in wanted.split("\\"):
            if vr in _RANGE_VRS and "-" in alternative:
                low, _, high = alternative.partition("-")
                ok = any((not low or v >= low) and (not high or v[:len(high)] <= high) for v in have)
            elif "*" in alternative or "?" in alternative:
                pattern = _wildcard(alternative, case=vr != "PN")
                ok = any(pattern.match(v) for v in have)
            else:
                ok = any(v == alternative or (vr == "PN" and v.lower() == alternative.lower()) for v in have)
            if ok:
                break
        if not ok:
            return False
    return True


def _ref(item: Mapping[str, Any]) -> SeriesRef:
    def first(keyword: str) -> str:
        values = _values(item, keyword)
        return values[0] if values else ""

    def number(keyword: str) -> int | None:
        text = first(keyword)
        try:
            return int(float(text)) if text else None
        except ValueError:
            return None

    return SeriesRef(
        study_uid=check_uid(first("StudyInstanceUID"), "StudyInstanceUID"),
        series_uid=check_uid(first("SeriesInstanceUID"), "SeriesInstanceUID"),
        modality=first("Modality"), series_number=number("SeriesNumber"),
        series_description=first("SeriesDescription"), study_date=first("StudyDate"),
        n_instances=number("NumberOfSeriesRelatedInstances"))


def paged(client: PacsClient, segments: Sequence[str], params: Mapping[str, str], *,
          page_size: int = 100, max_pages: int = 1000) -> list[dict[str, Any]]:
    """Every answer of a QIDO query, paged with ``limit``/``offset`` until an empty page.

    Raises:
        PacsError: still answering after ``max_pages`` pages (narrow the query).
    """
    out: list[dict[str, Any]] = []
    for page in range(max_pages):
        answer = client.get_json(*segments, params={**params, "limit": page_size, "offset": len(out)})
        if not answer:
            return out
        out.extend(answer)
    raise PacsError(f"GET /{'/'.join(segments)}: still answering after {max_pages} pages of {page_size}; "
                    "narrow the query")


def query_series(client: PacsClient, *, where: Mapping[str, str] | Iterable[str] | None = None,
                 series: Sequence[str] = (), max_series: int | None = None, page_size: int = 100,
                 max_pages: int = 1000) -> list[SeriesRef]:
    """The series matching ``where`` (``KEY=VALUE`` strings or a mapping), or the listed
    SeriesInstanceUIDs (each also matching ``where``).

    A closed ``StudyDate`` range is queried day by day; each query is paged until an empty
    page; answers are filtered again here and deduplicated. Without ``series`` the result is
    sorted by study date, study, series number and series UID; with ``series`` it keeps their order.

    Raises:
        PacsError: a bad ``where``, a series UID not found, or more than ``max_series`` matches
            (nothing is returned then: narrow the query or raise the limit).
    """
    filters = parse_where(where)
    include = sorted(set(_FIELDS) | set(filters) - {"NumberOfSeriesRelatedInstances"})
    base = {k: v for k, v in filters.items() if v}
    queries: list[dict[str, str]] = []
    if series:
        for uid in series:
            queries.append({**base, "SeriesInstanceUID": check_uid(uid.strip(), "SeriesInstanceUID")})
    else:
        date_keys = [k for k in base if _vr(k) == "DA"]
        days = split_days(date_keys[0], base[date_keys[0]]) if date_keys else [None]
        for day in days:
            queries.append({**base, date_keys[0]: day} if day else dict(base))
    log.info("QIDO series query: %d request(s), filters on %s", len(queries), ", ".join(filters) or "nothing")
    found: dict[str, SeriesRef] = {}
    dropped = 0
    for params in queries:
        params = {**params, "includefield": ",".join([*include, "NumberOfSeriesRelatedInstances"])}
        for item in paged(client, ["series"], params, page_size=page_size, max_pages=max_pages):
            if not matches(item, filters):
                dropped += 1
                continue
            ref = _ref(item)
            found.setdefault(ref.series_uid, ref)
    if dropped:
        log.warning("QIDO: the server returned %d series that do not match the filters; dropped", dropped)
    if series:
        missing = [u for u in series if u.strip() not in found]
        if missing:
            raise PacsError(f"{len(missing)} of {len(series)} series not found (or not matching --where): "
                            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        refs = [found[u.strip()] for u in dict.fromkeys(series)]
    else:
        refs = sorted(found.values(), key=lambda r: (r.study_date, r.study_uid, r.series_number or 0, r.series_uid))
    if max_series is not None and len(refs) > max_series:
        raise PacsError(f"the query matched {len(refs)} series, more than --max-series {max_series}; "
                        "narrow the query or raise --max-series")
    return refs


def list_instances(client: PacsClient, ref: SeriesRef, *, page_size: int = 1000) -> list[str]:
    """The SOP Instance UIDs the PACS lists for a series (QIDO-RS, paged), validated."""
    items = paged(client, ["studies", ref.study_uid, "series", ref.series_uid, "instances"],
                  {"includefield": "SOPInstanceUID"}, page_size=page_size)
    uids = [check_uid((_values(i, "SOPInstanceUID") or [""])[0], "SOPInstanceUID") for i in items]
    return list(dict.fromkeys(uids))


__all__ = ["SeriesRef", "query_series", "list_instances", "parse_where", "split_days", "matches", "paged"]
