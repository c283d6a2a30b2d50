"""Series queries (QIDO-RS or C-FIND) that do not trust the server: per-day date ranges, paging
until an empty page, splitting past a server cap, client-side filters, and a cap on the number
of series a run may take.

Servers truncate silently (Orthanc's ``LimitFindResults`` answered 4 of 9 with no warning), so
a query is paged with ``limit``/``offset`` until a page comes back empty, and each day of a date
range is its own query. Orthanc 1.10 applies its cap before ``offset`` (measured: with
``LimitFindResults`` 2 every query answers at most 3 series and a page at offset 3 is empty), so
paging cannot reach past it: :func:`result_cap` measures the cap once per client, and a day whose
answer reaches it is cut in StudyTime halves (``HHMMSS-HHMMSS.999999``, fractions of a second
included) until every part is under the cap, the parts merged by SeriesInstanceUID. A part that
cannot be cut (one second, no one-day date, a StudyTime filter of the user's) fails the query
rather than return a truncated list. The answer is filtered again here, because a server may
ignore a key.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medseg.pacs.errors import PacsError
from medseg.pacs.uids import check_uid

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


def result_cap(client: Any, *, probe: int = 10000) -> int | None:
    """The most answers ``client``'s PACS gives one query, or None when no cap was seen.

    ``client.config.result_cap`` when set; for a client whose server says when it cuts an answer
    (``client.says_truncated``: DIMSE), what it said so far; else measured once per client (three requests):
    the answer count ``n`` of one series query of limit ``probe``, against what the server
    says it holds: the sum of the studies' NumberOfStudyRelatedSeries and the distinct series
    of an instance query. More series than ``n`` means the series answer was cut at ``n``
    (Orthanc 1.10 answers ``LimitFindResults + 1`` and ignores ``offset`` past that).
    """
    given = getattr(getattr(client, "config", None), "result_cap", None)
    if given is not None:
        return int(given)
    if "result_cap" in client.facts or getattr(client, "says_truncated", False):
        return client.facts.get("result_cap")
    n = len(client.find("series", {"includefield": "SeriesInstanceUID"}, limit=probe))
    seen = 0
    if n < probe:
        studies = client.find("studies", {"includefield": "NumberOfStudyRelatedSeries"}, limit=probe)
        seen = sum(int(float((_values(s, "NumberOfStudyRelatedSeries") or ["0"])[0] or 0)) for s in studies)
        if seen <= n:
            try:
                items = client.find("instances", {"includefield": "SeriesInstanceUID"}, limit=probe)
                seen = max(seen, len({(_values(i, "SeriesInstanceUID") or [""])[0] for i in items}))
            except PacsError as exc:  # a server may not offer instance queries at the root
                log.debug("result cap probe: no instance query (%s)", exc)
    cap = n if seen > n else None
    if cap is not None:
        log.warning("the PACS answers at most %d results per query and ignores offset past them; queries that "
                    "reach it are split by StudyTime", cap)
    client.facts["result_cap"] = cap
    return cap


_DAY_S = 86400


def _time_range(value: str | None) -> tuple[int, int]:
    """Seconds of the day covered by a StudyTime range medseg set (``HHMMSS-HHMMSS.999999``)."""
    if not value:
        return 0, _DAY_S - 1
    low, _, high = value.partition("-")
    def seconds(t: str) -> int:
        return int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:6])
    return seconds(low), seconds(high)


def _hhmmss(s: int) -> str:
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}"


def _halves(params: Mapping[str, str], date_key: str | None) -> list[dict[str, str]] | None:
    """``params`` cut in two StudyTime halves (fractions of a second included), or None when it
    cannot be cut: not one day, a StudyTime filter of the user's, or one second already."""
    if date_key is None or not re.fullmatch(r"[0-9]{8}", params.get(date_key, "")):
        return None
    low, high = _time_range(params.get("StudyTime"))
    if high <= low:
        return None
    mid = (low + high) // 2
    return [{**params, "StudyTime": f"{_hhmmss(a)}-{_hhmmss(b)}.999999"} for a, b in ((low, mid), (mid + 1, high))]


def _part_text(label: str, params: Mapping[str, str], own_time: bool) -> str:
    """A part of a query named for messages: ``label`` (``day 2 of 31``) and the StudyTime range
    medseg set, never a value the user gave (it may identify a patient)."""
    return f"{label}, StudyTime {params['StudyTime']}" if own_time and "StudyTime" in params else label


def _find_series(client: Any, params: Mapping[str, str], *, label: str, cap: int | None, date_key: str | None,
                 time_split: bool, page_size: int, max_pages: int) -> list[dict[str, Any]]:
    """Every series answer of one query part; a part whose answer reaches ``cap`` is cut in
    StudyTime halves (recursively) and the answers merged by SeriesInstanceUID.

    Raises:
        PacsError: a part at the cap that cannot be cut (one second, no one-day date, a StudyTime
            filter), or series of the cut answer that no half finds (no StudyTime?).
    """
    items = client.find("series", params, page_size=page_size, max_pages=max_pages)
    cap = cap if cap is not None else client.facts.get("result_cap")  # a server that says it cut this answer
    if cap is None or len(items) != cap:
        return items
    parts = _halves(params, date_key) if time_split else None
    if parts is None:
        where = _part_text(label, params, time_split)
        raise PacsError(f"series query for {where}: the PACS answered {len(items)} series, its cap"
                        " per query, and the part cannot be split further (a closed StudyDate range is split "
                        "per day, then by StudyTime); narrow the query or raise the server's limit "
                        "(Orthanc: LimitFindResults)")
    log.info("series query for %s reached the PACS's cap (%d): split in two by StudyTime",
             _part_text(label, params, time_split), cap)
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for item in _find_series(client, part, label=label, cap=cap, date_key=date_key, time_split=True,
                                 page_size=page_size,
                                 max_pages=max_pages):
            merged.setdefault((_values(item, "SeriesInstanceUID") or [""])[0], item)
    lost = {(_values(i, "SeriesInstanceUID") or [""])[0] for i in items} - set(merged)
    if lost:
        raise PacsError(f"series query for {_part_text(label, params, time_split)}: {len(lost)} series of the "
                        "PACS's capped answer are in no StudyTime half (a study without StudyTime?); the query "
                        "cannot be split; narrow it or raise the server's limit (Orthanc: LimitFindResults)")
    return list(merged.values())


def query_series(client: Any, *, where: Mapping[str, str] | Iterable[str] | None = None,
                 series: Sequence[str] = (), max_series: int | None = None, page_size: int = 100,
                 max_pages: int = 1000) -> list[SeriesRef]:
    """The series matching ``where`` (``KEY=VALUE`` strings or a mapping), or the listed
    SeriesInstanceUIDs (each also matching ``where``).

    A closed ``StudyDate`` range is queried day by day; each query is paged until an empty
    page; a part whose answer reaches the server's cap (:func:`result_cap`) is cut by StudyTime;
    answers are filtered again here and deduplicated. Without ``series`` the result is
    sorted by study date, study, series number and series UID; with ``series`` it keeps their order.

    Raises:
        PacsError: a bad ``where``, a series UID not found, a part at the server's cap that
            cannot be split, or more than ``max_series`` matches (nothing is returned then:
            narrow the query or raise the limit).
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
    log.info("series query: %d request(s), filters on %s", len(queries), ", ".join(filters) or "nothing")
    cap = None if series else result_cap(client)
    date_key = next((k for k in base if _vr(k) == "DA"), None)
    found: dict[str, SeriesRef] = {}
    dropped = 0
    for n, params in enumerate(queries):
        params = {**params, "includefield": ",".join([*include, "NumberOfSeriesRelatedInstances"])}
        label = (f"day {n + 1} of {len(queries)}" if len(queries) > 1 else "the day") if date_key and \
            re.fullmatch(r"[0-9]{8}", params.get(date_key, "")) else "the query (no one-day date)"
        for item in _find_series(client, params, label=label, cap=cap, date_key=date_key,
                                 time_split="StudyTime" not in base, page_size=page_size, max_pages=max_pages):
            if not matches(item, filters):
                dropped += 1
                continue
            ref = _ref(item)
            found.setdefault(ref.series_uid, ref)
    if dropped:
        log.warning("series query: the server returned %d series that do not match the filters; dropped", dropped)
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


def list_instances(client: Any, ref: SeriesRef, *, page_size: int = 1000) -> list[str]:
    """The SOP Instance UIDs the PACS lists for a series (QIDO-RS paged, or C-FIND), validated.

    Raises:
        PacsError: fewer than the series' NumberOfSeriesRelatedInstances (a capped instance query:
            a series is never called complete against a cut list).
    """
    items = client.find("instances", {"includefield": "SOPInstanceUID"}, study_uid=ref.study_uid,
                        series_uid=ref.series_uid, page_size=page_size)
    uids = list(dict.fromkeys(check_uid((_values(i, "SOPInstanceUID") or [""])[0], "SOPInstanceUID") for i in items))
    if ref.n_instances and len(uids) < ref.n_instances:
        raise PacsError(f"series {ref.series_uid}: the PACS lists {len(uids)} instances but counts "
                        f"{ref.n_instances} (a cap on instance queries? Orthanc: LimitFindInstances)")
    return uids


__all__ = ["SeriesRef", "query_series", "list_instances", "parse_where", "split_days", "matches", "result_cap"]
