"""Study discovery: every DICOM series and every NIfTI/NRRD/MHA file under a folder.

A :class:`Study` is small, picklable and JSON-compatible, so it can be sent to a
worker process or a Dask worker, and written into the manifest. DICOM headers are read
by the reader's own scan (:func:`medseg.io.dicom.series.scan`): the same DICOM detection,
the same list of non-image SOP classes (SEG, RTSTRUCT, RTPLAN, SR, encapsulated PDF,
DICOMDIR, ...) and the same localizer rules as :func:`medseg.io.load`. Files whose
headers cannot be read are skipped here (and logged) rather than failing the whole
listing; a readable header with broken pixel data is discovered normally and fails
later, in its own study record. Study IDs come from relative paths only.
"""

from __future__ import annotations

import hashlib
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
_SKIP_NAMES = {"manifest.jsonl", "report.html", "DICOMDIR"}
#: Folders whose image files are label maps (phantom cohorts, nnU-Net raw datasets), never studies.
LABEL_FOLDERS = {"labels", "labelstr", "labelsts"}


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


def _is_label_map(path: Path, root: Path) -> bool:
    """An image file under a ``labels/`` (``labelsTr``, ``labelsTs``) folder below ``root``."""
    return any(part.lower() in LABEL_FOLDERS for part in path.relative_to(root).parts[:-1])


def _walk(root: Path, exclude: list[Path]) -> tuple[list[Path], list[Path]]:
    """Image files (NIfTI/NRRD/MHA) and DICOM candidates (DICOM suffix, none, or the DICM marker)."""
    from medseg.io.dicom.series import DICOM_SUFFIXES, has_dicm_marker, is_regular_file

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
            if not is_regular_file(path):  # a FIFO or a link to a device blocks whoever opens it
                log.warning("skipping %s: not a regular file", path)
                continue
            suffix = _suffix(name)
            if suffix in IMAGE_SUFFIXES:
                images.append(path)
            elif suffix in ("", *DICOM_SUFFIXES) or has_dicm_marker(path):
                candidates.append(path)
    return images, candidates


def _file_studies(root: Path, images: list[Path], dicom_folders: set[Path]) -> list[Study]:
    """One study per image file, except label maps (``labels/`` folders, files beside DICOM)."""
    studies, labels = [], []
    for path in images:
        if _is_label_map(path, root) or path.parent in dicom_folders:
            labels.append(path)
            continue
        rel = path.relative_to(root).as_posix()
        studies.append(Study(study_id=_safe_id(_strip_image_suffix(rel)), kind="file", path=str(path),
                             description=_suffix(path.name).lstrip(".")))
    if labels:
        log.info("skipped %d label map(s) (under labels/ or beside DICOM files), e.g. %s", len(labels), labels[0])
    return studies


def _copies(frames: list[Any]) -> list[list[Any]]:
    """Split the frames of one SeriesInstanceUID into copies: folders whose SOP instances overlap
    hold copies of the series (an export beside its de-identified copy), disjoint folders are
    parts of one series (a large series split over folders). Identical files inside one copy are
    dropped later by :func:`medseg.io.dicom.series.drop_duplicate_instances`."""
    by_folder: dict[Path, list[Any]] = defaultdict(list)
    for f in frames:
        by_folder[f.path.parent].append(f)
    clusters: list[tuple[set[str], list[Any]]] = []
    for folder in sorted(by_folder):
        members = by_folder[folder]
        uids = {f.sop_instance_uid for f in members if f.sop_instance_uid}
        home = next((c for c in clusters if not (c[0] & uids)), None)
        if home is None:
            clusters.append((set(uids), list(members)))
        else:
            home[0].update(uids)
            home[1].extend(members)
    return [members for _, members in clusters]


def _dicom_study(frames: list[Any]) -> tuple[Path, Any] | None:
    """(folder, main stack) of one copy of a series; None when it holds only localizers."""
    from medseg.io.dicom.series import drop_duplicate_instances, group_series, main_stack

    folder = Path(os.path.commonpath([str(f.path.parent) for f in frames]))
    kept, _ = drop_duplicate_instances(frames)
    chosen, note = main_stack(group_series(kept))
    if chosen is None:
        log.info("skipping localizer series %s in %s", frames[0].series_uid, folder)
        return None
    if note:
        log.info("%s: %s", folder, note)
    return folder, chosen


def _dicom_studies(root: Path, candidates: list[Path]) -> tuple[list[Study], set[Path]]:
    """One study per copy of each DICOM image series; and the folders holding DICOM images."""
    from medseg.io.dicom.series import scan

    found = scan(candidates, strict=False, skip_unreadable=True)
    by_uid: dict[str, list[Any]] = defaultdict(list)
    no_uid: dict[Path, None] = {}
    for f in found.frames:
        if f.series_uid:
            by_uid[f.series_uid].append(f)
        else:
            no_uid.setdefault(f.path)
    picked = [s for uid in sorted(by_uid) for c in _copies(by_uid[uid]) if (s := _dicom_study(c))]
    # a damaged file beside a series may be its first or last slice: it goes with the series of its folder,
    # so that loading names it instead of giving a volume one slice shorter
    unreadable: dict[Path, list[str]] = defaultdict(list)
    for path, reason in found.skipped:
        if reason == "unreadable DICOM":
            unreadable[path.parent].append(str(path))
    dicom_folders = {f.path.parent for f in found.frames}
    per_folder: dict[Path, int] = defaultdict(int)
    for folder, _ in picked:
        per_folder[folder] += 1
    studies = []
    for folder, info in picked:
        files = sorted({str(f.path) for f in info.frames} | set(unreadable.get(folder, ())))
        rel = folder.relative_to(root).as_posix() if folder != root else root.name
        if per_folder[folder] > 1:
            rel = f"{rel}__{_short_hash(root, files)}"
        desc = " ".join(x for x in (info.modality, info.description) if x)
        studies.append(Study(study_id=_safe_id(rel), kind="dicom", path=str(folder), files=tuple(files),
                             series_uid=info.series_uid, description=desc))
    for path in no_uid:  # recorded as a study of its own (loaded as one file), never dropped unseen
        log.warning("%s: no SeriesInstanceUID; it becomes a study of its own", path)
        rel = path.relative_to(root).as_posix()
        studies.append(Study(study_id=_safe_id(rel), kind="dicom", path=str(path), files=(str(path),),
                             description="DICOM file without SeriesInstanceUID"))
    return studies, dicom_folders


def _short_hash(root: Path, files: list[str]) -> str:
    """8 hex digits naming a set of files by their paths relative to ``root`` (never by DICOM tags)."""
    rel = "\n".join(Path(f).relative_to(root).as_posix() for f in files)
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8]


def discover_studies(root: str | os.PathLike[str], *, exclude: list[str | os.PathLike[str]] = ()) -> list[Study]:
    """Find every study under ``root`` (recursive), in a stable order.

    Each copy of a DICOM image series is one study: files are grouped by
    SeriesInstanceUID wherever they lie, folders holding the same SOP instances are
    separate copies (two studies), identical files within one copy are dropped with a
    warning, and of a series with several orientations or image sizes the main stack is
    used (logged). Each NIfTI / NRRD / MHA file is one study (``.mhd``/``.nhdr`` headers,
    not their raw data files), except label maps: files under a ``labels/`` folder and
    image files beside DICOM files. Skipped: hidden files, partial writes
    (``*.partial*``), DICOMDIR, non-image objects (SEG, RTSTRUCT, RTPLAN, SR, PDF, ...)
    and localizers. Study IDs are relative folder/file paths; several series in one
    folder get ``<folder>__<8-hex hash of their relative file paths>``.

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
    dicom, dicom_folders = _dicom_studies(root, candidates)
    studies = _file_studies(root, images, dicom_folders) + dicom
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
