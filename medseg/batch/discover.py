"""Study discovery: every DICOM series and every NIfTI/NRRD/MHA file under a folder.

A :class:`Study` is small, picklable and JSON-compatible, so it can be sent to a
worker process or a Dask worker, and written into the manifest. DICOM headers are
read without pixel data; files whose headers cannot be read are skipped here (and
logged) rather than failing the whole listing. A readable header with broken pixel
data is discovered normally and fails later, in its own study record.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Derived objects that are never inputs (segmentations, structured reports, RT structures, ...).
_NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set Storage
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
}
_SKIP_NAMES = {"manifest.jsonl", "report.html", "DICOMDIR"}


@dataclass(frozen=True)
class Study:
    """One unit of batch work.

    Attributes:
        study_id: unique, filesystem-safe name; the study's output folder is
            ``OUTPUT/studies/<study_id>/``.
        kind: ``"dicom"`` (a series given by its files) or ``"file"`` (one image file).
        path: the image file, or the folder holding the DICOM series (for display).
        files: the DICOM files of the series, sorted by name (empty for ``"file"``).
        series_uid: the DICOM SeriesInstanceUID (``None`` for ``"file"``).
        description: modality and series description, for listings and reports.
    """

    study_id: str
    kind: str
    path: str
    files: tuple[str, ...] = field(default_factory=tuple)
    series_uid: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (``files`` shortened to their count)."""
        d = asdict(self)
        d["files"] = len(self.files)
        return d

    @property
    def load_arg(self) -> str | list[str]:
        """What :func:`medseg.io.load` takes for this study."""
        return list(self.files) if self.kind == "dicom" else self.path


def _suffix(name: str) -> str:
    low = name.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else os.path.splitext(low)[1]


def _safe_id(text: str) -> str:
    text = text.replace(os.sep, "__").replace("/", "__")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return text or "study"


def _strip_image_suffix(name: str) -> str:
    suffix = _suffix(name)
    return name[: -len(suffix)] if suffix in IMAGE_SUFFIXES else name


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: Path) -> dict[str, str] | None:
    import pydicom

    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["SeriesInstanceUID", "SOPClassUID", "Modality", "SeriesDescription"],
        )
    except Exception as exc:  # pydicom raises many types for damaged headers
        log.warning("skipping %s: unreadable DICOM header (%s: %s)", path, type(exc).__name__, exc)
        return None
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        log.warning("skipping %s: no SeriesInstanceUID", path)
        return None
    return {
        "uid": uid,
        "sop_class": str(ds.get("SOPClassUID", "") or ""),
        "modality": str(ds.get("Modality", "") or ""),
        "description": str(ds.get("SeriesDescription", "") or ""),
    }


def _walk(root: Path, exclude: list[Path]) -> tuple[list[Path], list[Path]]:
    images: list[Path] = []
    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not any((here / d).resolve() == e for e in exclude)
        )
        for name in sorted(filenames):
            if name.startswith(".") or name in _SKIP_NAMES or ".partial" in name:
                continue
            path = here / name
            suffix = _suffix(name)
            if suffix in IMAGE_SUFFIXES:
                images.append(path)
            elif suffix in ("", ".dcm", ".ima", ".dicom") or _is_dicom(path):
                candidates.append(path)
    return images, candidates


def discover_studies(root: str | os.PathLike[str], *, exclude: list[str | os.PathLike[str]] = ()) -> list[Study]:
    """Find every study under ``root`` (recursive), in a stable order.

    Each DICOM series (grouped by SeriesInstanceUID, wherever its files lie) is one
    study; each NIfTI / NRRD / MHA file is one study (``.mhd``/``.nhdr`` headers, not
    their raw data files). Hidden files, partial writes (``*.partial*``), DICOM-SEG,
    RT-STRUCT and SR objects are ignored.

    Args:
        root: the folder to search.
        exclude: folders to skip (e.g. an output folder placed inside ``root``).

    Raises:
        InputError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (batch input must be a folder of studies)")
    images, candidates = _walk(root, [Path(e).resolve() for e in exclude])

    studies: list[Study] = []
    for path in images:
        rel = path.relative_to(root).as_posix()
        studies.append(Study(study_id=_safe_id(_strip_image_suffix(rel)), kind="file", path=str(path),
                             description=_suffix(path.name).lstrip(".")))

    series: dict[str, list[Path]] = defaultdict(list)
    info: dict[str, dict[str, str]] = {}
    for path in candidates:
        header = _read_header(path) if (_suffix(path.name) != "" or _is_dicom(path)) else None
        if header is None or header["sop_class"] in _NON_IMAGE_SOP_CLASSES:
            continue
        series[header["uid"]].append(path)
        info.setdefault(header["uid"], header)

    per_folder: dict[Path, int] = defaultdict(int)
    folders = {uid: Path(os.path.commonpath([str(p.parent) for p in files])) for uid, files in series.items()}
    for folder in folders.values():
        per_folder[folder] += 1
    for uid in sorted(series, key=lambda u: (str(folders[u]), u)):
        folder = folders[uid]
        rel = folder.relative_to(root).as_posix() if folder != root else root.name
        sid = _safe_id(rel if per_folder[folder] == 1 else f"{rel}__{uid}")
        desc = " ".join(x for x in (info[uid]["modality"], info[uid]["description"]) if x)
        studies.append(Study(study_id=sid, kind="dicom", path=str(folder),
                             files=tuple(str(p) for p in sorted(series[uid])), series_uid=uid, description=desc))
    return _unique(sorted(studies, key=lambda s: s.study_id))


def _unique(studies: list[Study]) -> list[Study]:
    seen: dict[str, int] = {}
    out = []
    for s in studies:
        n = seen.get(s.study_id, 0)
        seen[s.study_id] = n + 1
        if n:
            s = Study(**{**asdict(s), "study_id": f"{s.study_id}_{n + 1}"})
        out.append(s)
    return out


def format_listing(studies: list[Study]) -> list[dict[str, Any]]:
    """Rows for a dry-run listing: study id, kind, files, series UID, description, path."""
    return [
        {"study_id": s.study_id, "kind": s.kind, "files": len(s.files) or 1, "series_uid": s.series_uid or "",
         "description": s.description, "path": s.path}
        for s in studies
    ]


__all__ = ["Study", "discover_studies", "format_listing", "IMAGE_SUFFIXES"]
