"""The real-data corpus of issue 10 and its one classification, shared by the tests and the table script.

Every real DICOM file or series available offline, plus variants made from them:

* ``shared``: ``../shared/data`` (dcm2niix's validation sets: nine transfer syntaxes of a
  Siemens mosaic, one sagittal series in four patient positions);
* ``pydicom``: pydicom's own test files, and each series of its DICOMDIR test layout
  (``dicomdirtests``, loaded from the layout's root with ``series_uid=``);
* ``pydicom-data``: the ``pydicom-data`` package (dev extra), when installed;
* ``nibabel``: the DICOM files among nibabel's test data (``*.dcm``, ``*.dcm.gz``);
* ``variants``: Type 2 attributes removed or emptied (what de-identification scripts do),
  a DICOMDIR export layout, the same series exported into two folders, a localizer added.

:func:`classify` gives each case one :class:`Outcome`: ``seg ok`` (loaded; geometry equal
to dcm2niix's in world space where both have patient geometry; the DICOM-SEG written
from labels on every slice reads back, through highdicom's own grid, to the same labels in
world space and passes ``dciodvfy``), ``refused`` (a one-line :class:`~medseg.errors.MedsegError`
naming the file, at load or when writing the SEG) or ``other`` (anything else: a defect).
"""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
CATEGORIES = ("shared", "pydicom", "pydicom-data", "nibabel", "variants")
#: Type 2 attributes de-identification scripts delete or empty (issue 10, item 2)
DEID = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
        "StudyDate", "StudyTime", "SliceThickness", "ReferringPhysicianName", "SeriesNumber", "InstanceNumber")
_NOT_DICOM = {".txt", ".json", ".dump", ".icc", ".py", ".rst"}


@dataclass(frozen=True)
class Case:
    """One input: ``build(tmp)`` returns what to pass to :func:`medseg.io.load` (files under ``tmp``
    when the case has to be made first)."""

    id: str
    category: str
    build: Callable[[Path], Path] = field(compare=False, repr=False)
    series_uid: str | None = None
    big: bool = False  # seconds to run: marked slow in the test suite


@dataclass
class Outcome:
    kind: str  # "seg ok" | "refused" | "other"
    stage: str  # "load" | "dcm2niix" | "seg" | "done"
    message: str
    dcm2niix: str = "n/a"  # "same" | "n/a (...)" | "differs: ..."
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


# -- the cases --------------------------------------------------------------------------------------
def _as_is(path: Path) -> Callable[[Path], Path]:
    return lambda tmp: path


def _gunzipped(path: Path) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        out = tmp / path.name.removesuffix(".gz")
        tmp.mkdir(parents=True, exist_ok=True)
        out.write_bytes(gzip.decompress(path.read_bytes()))
        return out

    return build


def _pydicom_dirs() -> tuple[Path, Path | None]:
    import pydicom

    own = Path(pydicom.__file__).parent / "data" / "test_files"
    try:
        import data_store  # the pydicom-data package

        extra = Path(data_store.__file__).parent / "data"
    except ImportError:
        extra = None
    return own, extra


def _nibabel_files() -> list[Path]:
    import nibabel

    root = Path(nibabel.__file__).parent
    found = [*sorted((root / "tests" / "data").glob("*.dcm")),
             *sorted((root / "nicom" / "tests" / "data").glob("*.dcm")),
             *sorted((root / "nicom" / "tests" / "data").glob("*.dcm.gz"))]
    return found


def _file_cases(category: str, files: list[Path], *, big: set[str] = frozenset()) -> list[Case]:
    cases = []
    names = [f.name for f in files]
    for f in files:
        if f.is_dir() or f.suffix.lower() in _NOT_DICOM or f.name.startswith("."):
            continue
        build = _gunzipped(f) if f.suffix == ".gz" else _as_is(f)
        where = f.parents[2].name + "/" + f.parent.parent.name + "/" + f.parent.name
        name = f.name if names.count(f.name) == 1 else f"{f.name} ({where})"
        cases.append(Case(f"{category}/{name}", category, build, big=f.name in big))
    return cases


def _dicomdir_cases(root: Path) -> list[Case]:
    """Each image series of pydicom's DICOMDIR test layout, loaded from the layout's root."""
    from medseg.io import list_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        series = list_series(root)
    return [Case(f"pydicom/dicomdirtests/{Path(s.frames[0].path).parent.relative_to(root)} series "
                 f"{s.series_number} (…{s.series_uid[-6:]})", "pydicom", _as_is(root),
                 series_uid=s.series_uid)
            for s in series if not s.part or s.part == 1]  # a multi-part series is one case


_BIG = {"philips_mprage.dcm.gz", "siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz", "color3d_jpeg_baseline.dcm", "RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm",
        "RG3_J2KI.dcm", "MR2_UNCR.dcm", "MR2_UNCI.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm", "examples_ybr_color.dcm"}


def cases() -> list[Case]:
    """Every case of the corpus, in table order (categories, then names)."""
    out: list[Case] = []
    if SHARED.is_dir():
        out += [Case(f"shared/dcm_qa_ts/{f.name}", "shared", _as_is(f))
                for f in sorted((SHARED / "dcm_qa_ts" / "In").glob("*.dcm"))]
        out += [Case(f"shared/dcm_qa_decubitus/{d.parent.name}", "shared", _as_is(d), big=True)
                for d in sorted((SHARED / "dcm_qa_decubitus" / "In").glob("*/*")) if d.is_dir()]
    own, extra = _pydicom_dirs()
    out += _file_cases("pydicom", sorted(own.glob("*")), big=_BIG)
    if (own / "dicomdirtests").is_dir():
        out += _dicomdir_cases(own / "dicomdirtests")
    if extra is not None:
        out += _file_cases("pydicom-data", sorted(extra.glob("*")), big=_BIG)
    out += _file_cases("nibabel", _nibabel_files(), big=_BIG)
    out += variant_cases()
    return out


# -- variants -------------------------------------------------------------------------------------------
def _series_files(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]


def _rewrite(src: Path, out: Path, edit: Callable[[Any], None]) -> Path:
    """Copy the DICOM file or series ``src`` into folder ``out``, applying ``edit`` to each dataset."""
    import pydicom

    out.mkdir(parents=True, exist_ok=True)
    for f in _series_files(src):
        ds = pydicom.dcmread(f)
        edit(ds)
        ds.save_as(out / f.name)
    return out if src.is_dir() else out / src.name


def _remove(ds: Any) -> None:
    for keyword in DEID:
        if keyword in ds:
            delattr(ds, keyword)


def _empty(ds: Any) -> None:
    for keyword in DEID:
        if keyword in ds:
            ds[keyword].value = ""


def _type2(src: Callable[[Path], Path], edit: Callable[[Any], None]) -> Callable[[Path], Path]:
    return lambda tmp: _rewrite(src(tmp / "src"), tmp / "variant", edit)


_DICOMDIR_TYPE1 = {"PatientID": "ANON", "StudyID": "1", "StudyDate": "20000101", "StudyTime": "000000",
                   "SeriesNumber": 1, "InstanceNumber": 1}


def _dicomdir(src: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """A PACS/CD export: pydicom's FileSet layout (``DICOMDIR`` + ``PT000000/ST000000/SE000000/IM*``)."""

    def build(tmp: Path) -> Path:
        import pydicom
        from pydicom.fileset import FileSet

        fs = FileSet()
        for f in _series_files(src(tmp / "src")):
            ds = pydicom.dcmread(f)
            for keyword, value in _DICOMDIR_TYPE1.items():
                if not ds.get(keyword):
                    setattr(ds, keyword, value)  # Type 1 in the DICOMDIR's records: an exporter fills them
            fs.add(ds)
        fs.write(tmp / "export")
        return tmp / "export"

    return build


def _two_exports(src: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """The same series exported twice into one study folder (identical SOP instances)."""

    def build(tmp: Path) -> Path:
        series = src(tmp / "src")
        for name in ("export1", "export2"):
            if series.is_dir():
                shutil.copytree(series, tmp / "study" / name)
            else:
                (tmp / "study" / name).mkdir(parents=True)
                shutil.copy(series, tmp / "study" / name)
        return tmp / "study"

    return build


def _with_localizer(src: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """The series plus a scout (ImageType LOCALIZER, orthogonal orientation) in the same series."""

    def build(tmp: Path) -> Path:
        import pydicom
        from pydicom.uid import generate_uid

        series = src(tmp / "src")
        out = tmp / "study"
        shutil.copytree(series, out)
        ds = pydicom.dcmread(_series_files(series)[0])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        iop = [float(v) for v in ds.ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])
        ds.ImageOrientationPatient = [*iop[:3], *(float(v) for v in normal)]
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = 999
        ds.save_as(out / "scout.dcm")
        return out

    return build


def variant_cases() -> list[Case]:
    """Systematic variants of real series (made under the test's tmp folder)."""
    bases: dict[str, Callable[[Path], Path]] = {}
    if SHARED.is_dir():
        decubitus = sorted((SHARED / "dcm_qa_decubitus" / "In" / "HFS").iterdir())[0]
        bases["decubitus HFS"] = _as_is(decubitus)
        bases["mosaic"] = _as_is(SHARED / "dcm_qa_ts" / "In" / "1.dcm")
    from pydicom.data import get_testdata_file

    for name, file in (("CT_small", "CT_small.dcm"), ("eCT_Supplemental (enhanced CT)", "eCT_Supplemental.dcm")):
        path = get_testdata_file(file)  # None when it is in pydicom-data and that is not installed
        if path is not None:
            bases[name] = _as_is(Path(path))
    out = []
    for name, build in bases.items():
        big = name == "decubitus HFS"
        out.append(Case(f"variants/{name}: Type 2 removed", "variants", _type2(build, _remove), big=big))
        out.append(Case(f"variants/{name}: Type 2 empty", "variants", _type2(build, _empty), big=big))
        out.append(Case(f"variants/{name}: DICOMDIR export", "variants", _dicomdir(build), big=big))
        out.append(Case(f"variants/{name}: exported twice", "variants", _two_exports(build), big=big))
    if "decubitus HFS" in bases:
        out.append(Case("variants/decubitus HFS: localizer added", "variants", _with_localizer(bases["decubitus HFS"]),
                        big=True))
    return out


# -- classification -------------------------------------------------------------------------------------
def _names(target: Path, volume: Any = None) -> set[str]:
    names = {target.name}
    if target.is_dir():
        names |= {p.name for p in target.rglob("*") if p.is_file()}
    if volume is not None:
        names |= {Path(f).name for f in volume.meta.get("source_files", [])}
    return names


def _refusal(exc: BaseException, stage: str, target: Path, volume: Any = None) -> Outcome:
    from medseg.errors import MedsegError

    message = str(exc)
    if not isinstance(exc, MedsegError):
        return Outcome("other", stage, f"{type(exc).__name__}: {message}")
    if "\n" in message:
        return Outcome("other", stage, f"{type(exc).__name__} on several lines: {message!r}")
    if not any(n in message for n in _names(target, volume)):
        return Outcome("other", stage, f"{type(exc).__name__} not naming the file: {message}")
    return Outcome("refused", stage, f"{type(exc).__name__}: {message}")


def labels_for(volume: Any) -> Any:
    """Three labels touching every slice (boxes of different sizes, label 2 on every other slice);
    at least one voxel even in a 3x3 image."""
    from medseg.volume import Volume

    shape = volume.spatial_shape
    lab = np.zeros(shape, np.uint8)
    ni, nj = shape[0], shape[1]
    lab[ni // 8: max(ni // 2, ni // 8 + 1), nj // 8: max(nj // 2, nj // 8 + 1), :] = 1
    if ni >= 8 and nj >= 8:
        lab[ni // 2 + 2: ni - 2, nj // 4: nj // 2, ::2] = 2
        lab[ni // 4: ni // 2, nj // 2 + 2: nj - 1, 1:] = 3
    return Volume(lab, volume.affine, is_label=True)


NAMES = {1: "lung_left", 2: "kidney right", 3: "liver"}


def dcm2niix_same(volume: Any, target: Path, series_uid: str | None, tmp: Path) -> str:
    """``same`` when dcm2niix's NIfTI of ``target`` covers the same world grid with the same values,
    ``n/a (why)`` when there is nothing to compare, else ``differs: ...``."""
    if shutil.which("dcm2niix") is None:
        return "n/a (dcm2niix not installed)"
    if not volume.meta.get("patient_geometry", True):
        return "n/a (no patient geometry)"
    if series_uid is not None or volume.channel_first:
        return "n/a (" + ("one series of a layout" if series_uid else "colour") + ")"
    if volume.meta.get("modality") == "RTDOSE":
        return "n/a (dcm2niix ignores GridFrameOffsetVector: 1 mm between dose planes)"
    import nibabel as nib

    src = tmp / "dcm2niix_in"
    if target.is_dir():
        src = target
    else:
        src.mkdir()
        shutil.copy(target, src / target.name)
    out = tmp / "dcm2niix_out"
    out.mkdir()
    proc = subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-o", str(out), "-f", "%s_%p", str(src)],
                          capture_output=True, text=True, timeout=120)
    found = sorted(out.glob("*.nii"))
    if len(found) != 1:
        return f"n/a (dcm2niix wrote {len(found)} NIfTI files, exit {proc.returncode})"
    ref = nib.load(str(found[0]))
    axes = ref.affine[:3, :3] / np.linalg.norm(ref.affine[:3, :3], axis=0)
    if np.abs(axes.T @ axes - np.eye(3)).max() > 1e-3:
        return "n/a (dcm2niix's affine is sheared: its axes are not orthogonal)"
    ref_arr = np.asarray(ref.dataobj)
    if ref_arr.ndim == 2:
        ref_arr = ref_arr[..., None]
    if ref_arr.ndim != 3:
        return f"n/a (dcm2niix wrote a {ref_arr.ndim}D image)"
    ours = np.asarray(volume.array)
    if ours.size != ref_arr.size:
        return f"differs: {ours.shape} voxels here, dcm2niix {ref_arr.shape}"
    m = np.linalg.inv(volume.affine) @ ref.affine
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in ref_arr.shape], indexing="ij"), -1).reshape(-1, 3)
    mapped = idx @ m[:3, :3].T + m[:3, 3]
    rounded = np.rint(mapped)
    off = float(np.max(np.abs(mapped - rounded)))
    if off > 1e-2:
        return f"differs: voxel centres off by {off:.3g} voxels"
    rounded = rounded.astype(int)
    if np.any(rounded < 0) or np.any(rounded >= np.array(ours.shape)):
        return "differs: dcm2niix's grid covers another region"
    scaled = ref.dataobj.slope not in (None, 1) or ref.dataobj.inter not in (None, 0)
    theirs = (np.asanyarray(ref.dataobj) if scaled else ref_arr).astype(np.float64).reshape(-1)
    if theirs.size != idx.shape[0]:
        theirs = theirs.reshape(-1)
    mine = ours.astype(np.float64)[tuple(rounded.T)]
    if not np.allclose(mine, theirs, rtol=1e-4, atol=1e-3 * max(1.0, float(np.abs(theirs).max(initial=0)))):
        return f"differs: values ({int(np.sum(~np.isclose(mine, theirs, rtol=1e-4)))} voxels)"
    return "same"


def _seg_check(volume: Any, out: Path, *, dciodvfy: bool) -> str | None:
    """None when the SEG written from :func:`labels_for` reads back right; else what is wrong."""
    from medseg.io.dicom.seg import read_dicom_seg, write_dicom_seg

    labels = labels_for(volume)
    path = write_dicom_seg(labels, volume.meta["source_files"], out, label_names=NAMES)
    back = read_dicom_seg(path)  # highdicom's own grid: world space
    idx = np.argwhere(labels.array > 0)
    world = labels.world_coordinates(idx)
    inv = np.linalg.inv(back.affine)
    bidx = world @ inv[:3, :3].T + inv[:3, 3]
    if np.abs(bidx - np.rint(bidx)).max(initial=0) > 1e-2:  # 4-digit IOPs (not quite unit) in old headers
        return "SEG frames do not lie on the labelled voxels"
    bidx = np.rint(bidx).astype(int)
    if np.any(bidx < 0) or np.any(bidx >= np.array(back.spatial_shape)):
        return "SEG covers another region"
    if not np.array_equal(back.array[tuple(bidx.T)], labels.array[tuple(idx.T)]) or \
            int((back.array > 0).sum()) != len(idx):
        return "SEG reads back to other labels in world space"
    if dciodvfy and shutil.which("dciodvfy"):
        errors = dciodvfy_errors(path)
        if errors:  # what the SEG must copy from its source (same study, same frame of reference) is not ours
            inherited = set(dciodvfy_errors(Path(volume.meta["source_files"][0])))
            errors = [e for e in errors if e not in inherited]
        if errors:
            return f"dciodvfy: {errors[0]} ({len(errors)} errors)"
    return None


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines of ``dciodvfy`` on ``path``, without the element-path prefixes that differ
    between a source and its SEG."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.lstrip().startswith("Error")]


def classify(case: Case, tmp: Path, *, dciodvfy: bool = True, dcm2niix: bool = True) -> Outcome:
    """Load ``case``, compare with dcm2niix, write and check its DICOM-SEG; see the module docstring."""
    from medseg.io import load

    start = time.perf_counter()
    tmp.mkdir(parents=True, exist_ok=True)
    target = case.build(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the deliberately odd files
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        try:
            volume = load(target, series_uid=case.series_uid)
        except Exception as exc:  # noqa: BLE001 - classified, not hidden
            outcome = _refusal(exc, "load", target)
            outcome.seconds = time.perf_counter() - start
            return outcome
        same = dcm2niix_same(volume, target, case.series_uid, tmp) if dcm2niix else "n/a (not compared)"
        details = {"shape": list(volume.array.shape), "patient_geometry": volume.meta.get("patient_geometry")}
        if same.startswith("differs"):
            return Outcome("other", "dcm2niix", same, same, time.perf_counter() - start, details)
        try:
            problem = _seg_check(volume, tmp / "seg.dcm", dciodvfy=dciodvfy)
        except Exception as exc:  # noqa: BLE001
            outcome = _refusal(exc, "seg", target, volume)
            outcome.dcm2niix, outcome.details = same, details
            outcome.seconds = time.perf_counter() - start
            return outcome
    kind, message = ("other", problem) if problem else ("seg ok", "")
    return Outcome(kind, "done" if not problem else "seg", message, same, time.perf_counter() - start, details)


def table(results: list[tuple[Case, Outcome]]) -> str:
    """The markdown table of outcomes per category."""
    rows = ["| category | cases | loaded + DICOM-SEG ok | refused with a medseg error (at load / at SEG) | other |"
            " of the loaded, geometry equal to dcm2niix |",
            "|---|---:|---:|---:|---:|---:|"]
    totals = [0] * 6
    for category in CATEGORIES:
        mine = [o for c, o in results if c.category == category]
        if not mine:
            continue
        ok = sum(o.kind == "seg ok" for o in mine)
        at_load = sum(o.kind == "refused" and o.stage == "load" for o in mine)
        at_seg = sum(o.kind == "refused" and o.stage == "seg" for o in mine)
        other = sum(o.kind == "other" for o in mine)
        same = sum(o.dcm2niix == "same" for o in mine)
        counts = [len(mine), ok, at_load, at_seg, other, same]
        totals = [t + c for t, c in zip(totals, counts)]
        rows.append(f"| {category} | {len(mine)} | {ok} | {at_load + at_seg} ({at_load} / {at_seg}) | {other} | {same} |")
    n, ok, at_load, at_seg, other, same = totals
    rows.append(f"| **all** | {n} | {ok} | {at_load + at_seg} ({at_load} / {at_seg}) | {other} | {same} |")
    return "\n".join(rows)


__all__ = ["Case", "Outcome", "cases", "classify", "table", "labels_for", "dcm2niix_same", "CATEGORIES", "DEID"]
