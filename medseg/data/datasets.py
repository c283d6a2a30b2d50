"""Training datasets: nnU-Net raw, Medical Segmentation Decathlon, CSV/JSON manifests.

:func:`load_dataset` reads any of the three into one :class:`Dataset` (a list of
:class:`Case` with image channel paths and a label path, plus label names);
:func:`validate_dataset` checks every case and raises one :class:`InputError`
listing every bad case (missing files, label values not in ``labels``, image and
label grids that differ). :func:`load_case` returns the image and label as
:class:`~medseg.Volume` objects.

Formats:

- nnU-Net v2 raw: ``dataset.json`` with ``channel_names``, ``labels`` (name -> value)
  and ``file_ending``; images ``imagesTr/CASE_XXXX{file_ending}`` (one file per channel),
  labels ``labelsTr/CASE{file_ending}``.
- MSD: ``dataset.json`` with ``modality`` (index -> name), ``labels`` (value -> name)
  and ``training`` (list of ``{"image": ..., "label": ...}``, paths relative to the root).
- Manifest: a ``.csv`` with columns ``image`` and ``label`` (optional ``case_id``), or
  a ``.json`` with ``{"labels": {...}, "channel_names": {...}, "cases": [...]}``.
  Paths are relative to the manifest; DICOM folders are allowed as images.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.volume import Volume

log = logging.getLogger(__name__)

FORMATS = ("nnunet", "msd", "manifest")


@dataclass(frozen=True)
class Case:
    """One training case: image channel paths (file or DICOM folder) and a label path."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class Dataset:
    """A segmentation dataset.

    Attributes:
        root: the dataset folder or manifest file.
        format: ``"nnunet"``, ``"msd"`` or ``"manifest"``.
        labels: label value -> name, ``0`` is background.
        channel_names: channel index -> name (``"CT"``, ``"T2"``, ...).
        cases: the training cases, sorted by ``case_id``.
        name: dataset name.
    """

    root: Path
    format: str
    labels: dict[int, str]
    channel_names: dict[int, str]
    cases: list[Case]
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        """``"CT"`` when the first channel is named CT (case-insensitive), else ``"MR"``-like ``"other"``."""
        first = str(self.channel_names.get(0, "")).upper()
        return "CT" if first == "CT" or first.startswith("CT") else "other"

    @property
    def num_classes(self) -> int:
        """Number of output classes (max label value + 1)."""
        return max(self.labels) + 1

    def case(self, case_id: str) -> Case:
        """The case named ``case_id``."""
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise InputError(f"{self.root}: no case {case_id!r}")


# --------------------------------------------------------------------------- readers
def load_dataset(path: str | os.PathLike[str], *, validate: bool = False) -> Dataset:
    """Read an nnU-Net raw folder, an MSD folder, or a CSV/JSON manifest.

    Args:
        path: dataset folder (with ``dataset.json``) or manifest file.
        validate: also run :func:`validate_dataset` (reads every label map).

    Raises:
        InputError: unknown layout, unreadable ``dataset.json``, missing keys.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such dataset folder or manifest")
    if p.is_file() and p.suffix.lower() in (".csv", ".json") and p.name != "dataset.json":
        ds = _read_manifest(p)
    else:
        root = p.parent if p.name == "dataset.json" else p
        meta_path = root / "dataset.json"
        if not meta_path.is_file():
            raise InputError(f"{root}: no dataset.json; expected an nnU-Net raw or MSD dataset folder, or a manifest")
        meta = _read_json(meta_path)
        if "channel_names" in meta or "file_ending" in meta:
            ds = _read_nnunet(root, meta)
        elif "training" in meta:
            ds = _read_msd(root, meta)
        else:
            raise InputError(
                f"{meta_path}: neither nnU-Net (channel_names, labels, file_ending) nor MSD (modality, labels, training)"
            )
    if not ds.cases:
        raise InputError(f"{p}: the dataset holds no training case")
    if 0 not in ds.labels:
        ds.labels[0] = "background"
    if validate:
        validate_dataset(ds)
    return ds


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from exc


def _int_keys(mapping: dict[Any, Any], where: str) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise InputError(f"{where}: keys must be integers, got {list(mapping)}") from None


def _nnunet_labels(labels: dict[str, Any], where: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise InputError(f"{where}: region-based labels ({name}: {value}) are not supported")
        try:
            out[int(value)] = str(name)
        except (TypeError, ValueError):
            raise InputError(f"{where}: label {name!r} has a non-integer value {value!r}") from None
    return out


def _read_nnunet(root: Path, meta: dict[str, Any]) -> Dataset:
    where = str(root / "dataset.json")
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise InputError(f"{where}: missing key {key!r}")
    channels = _int_keys(meta["channel_names"], f"{where} channel_names")
    ending = str(meta["file_ending"])
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(f"{root}: no imagesTr folder")
    ids: set[str] = set()
    suffix_len = len(ending) + 5  # _0000 + ending
    for f in images_dir.iterdir():
        if f.name.endswith(ending) and len(f.name) > suffix_len and f.name[-suffix_len] == "_":
            ids.add(f.name[:-suffix_len])
    if labels_dir.is_dir():
        ids.update(f.name[: -len(ending)] for f in labels_dir.iterdir() if f.name.endswith(ending))
    cases = [
        Case(
            case_id=cid,
            images=tuple(images_dir / f"{cid}_{c:04d}{ending}" for c in sorted(channels)),
            label=labels_dir / f"{cid}{ending}",
        )
        for cid in sorted(ids)
    ]
    return Dataset(
        root=root,
        format="nnunet",
        labels=_nnunet_labels(meta["labels"], where),
        channel_names=channels,
        cases=cases,
        name=str(meta.get("name", root.name)),
        extra={"file_ending": ending, "numTraining": meta.get("numTraining")},
    )


def _read_msd(root: Path, meta: dict[str, Any]) -> Dataset:
    where = str(root / "dataset.json")
    for key in ("labels", "training"):
        if key not in meta:
            raise InputError(f"{where}: missing key {key!r}")
    channels = _int_keys(meta.get("modality", {"0": "image"}), f"{where} modality")
    cases = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise InputError(f"{where}: training[{i}] needs an 'image' entry, got {entry!r}")
        image = root / _rel(entry["image"])
        label = root / _rel(entry["label"]) if entry.get("label") else None
        name = image.name
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        cases.append(Case(case_id=name, images=(image,), label=label))
    # MSD images may be 4D (multi-channel); medseg reads them as one file per case
    return Dataset(
        root=root,
        format="msd",
        labels=_int_keys(meta["labels"], f"{where} labels"),
        channel_names=channels,
        cases=sorted(cases, key=lambda c: c.case_id),
        name=str(meta.get("name", root.name)),
    )


def _rel(value: Any) -> str:
    text = str(value)
    return text[2:] if text.startswith("./") else text


def _read_manifest(path: Path) -> Dataset:
    base = path.parent
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and not {"image", "label"} <= set(rows[0]):
            raise InputError(f"{path}: CSV manifest needs columns 'image' and 'label', has {list(rows[0])}")
        meta: dict[str, Any] = {}
    else:
        meta = _read_json(path)
        rows = meta.get("cases") if isinstance(meta, dict) else meta
        if not isinstance(rows, list):
            raise InputError(f"{path}: JSON manifest must be a list of cases or {{'cases': [...], 'labels': {{...}}}}")
        meta = meta if isinstance(meta, dict) else {}
    cases = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("image"):
            raise InputError(f"{path}: case {i} has no 'image' ({row!r})")
        images = row["image"] if isinstance(row["image"], list) else [row["image"]]
        case_id = str(row.get("case_id") or row.get("id") or f"case_{i:04d}")
        label = row.get("label")
        cases.append(
            Case(case_id=case_id, images=tuple(base / str(im) for im in images), label=base / str(label) if label else None)
        )
    ids = [c.case_id for c in cases]
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise InputError(f"{path}: duplicate case ids {', '.join(dupes)}")
    if "labels" in meta:
        raw = meta["labels"]
        labels = (
            _nnunet_labels(raw, str(path))
            if all(not str(k).lstrip("-").isdigit() for k in raw)
            else _int_keys(raw, f"{path} labels")
        )
    else:
        labels = {}
    channels = _int_keys(meta.get("channel_names", {"0": "image"}), f"{path} channel_names")
    ds = Dataset(root=path, format="manifest", labels=labels, channel_names=channels, cases=cases, name=path.stem)
    if not labels:
        ds.labels = _labels_from_data(ds)
    return ds


def _labels_from_data(ds: Dataset) -> dict[int, str]:
    """Label names for a manifest without ``labels``: every value seen, named ``label_N``."""
    values: set[int] = {0}
    for case in ds.cases:
        if case.label is not None and case.label.exists():
            values.update(int(v) for v in np.unique(load_label(case).array))
    log.info("%s: no label names given; found values %s", ds.root, sorted(values))
    return {v: ("background" if v == 0 else f"label_{v}") for v in sorted(values)}


# --------------------------------------------------------------------------- loading cases
def load_label(case: Case) -> Volume:
    """The label map of ``case`` as an integer :class:`Volume` (``is_label=True``)."""
    from medseg.io import load

    if case.label is None:
        raise InputError(f"case {case.case_id}: no label map")
    vol = load(case.label)
    arr = vol.array
    if arr.dtype.kind == "f":
        if not np.all(np.mod(arr, 1) == 0):
            raise InputError(f"{case.label}: label map holds non-integer values")
        arr = arr.astype(np.int16)
    return Volume(arr, vol.affine, vol.meta, is_label=True)


def load_case(case: Case) -> tuple[Volume, Volume | None]:
    """Image (channel-first ``[c, i, j, k]`` float32 when several channels) and label of ``case``."""
    from medseg.io import load

    vols = [load(p) for p in case.images]
    first = vols[0]
    for p, v in zip(case.images[1:], vols[1:]):
        if not v.same_grid(first, atol=1e-3):
            raise InputError(f"case {case.case_id}: channel {p} is not on the grid of {case.images[0]}")
    if len(vols) == 1:
        image = first
    else:
        image = Volume(np.stack([v.array.astype(np.float32) for v in vols]), first.affine, first.meta, channel_first=True)
    label = load_label(case) if case.label is not None else None
    return image, label


def _header(path: Path) -> tuple[tuple[int, ...], np.ndarray] | None:
    """(shape, affine) of a NIfTI file from its header only; None for other formats."""
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return None
    import nibabel as nib

    img = nib.load(str(path))
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, np.asarray(img.affine, dtype=np.float64)


# --------------------------------------------------------------------------- validation
def validate_dataset(ds: Dataset, *, check_values: bool = True, require_labels: bool = True) -> None:
    """Check every case; raise one :class:`InputError` that lists every bad case.

    Checks: image and label files exist; every channel and the label share one grid
    (shape and affine within 1e-3 mm); label values are all keys of ``ds.labels``
    (``check_values``, reads each label map).
    """
    problems: list[str] = []
    known = set(ds.labels)
    for case in ds.cases:
        missing = [str(p) for p in case.images if not p.exists()]
        if case.label is None:
            if require_labels:
                missing.append("(no label given)")
        elif not case.label.exists():
            missing.append(str(case.label))
        if missing:
            problems.append(f"{case.case_id}: missing file(s) {', '.join(missing)}")
            continue
        try:
            problems.extend(_check_case(case, known, check_values))
        except InputError as exc:
            problems.append(f"{case.case_id}: {exc}")
    if problems:
        raise InputError(
            f"{ds.root}: {len(problems)} bad case(s) of {len(ds.cases)}:\n  " + "\n  ".join(problems)
        )


def _check_case(case: Case, known: set[int], check_values: bool) -> list[str]:
    problems = []
    paths = list(case.images) + ([case.label] if case.label is not None else [])
    headers = [_header(p) for p in paths]
    if all(h is not None for h in headers):
        grids = headers
        label_vol = None
    else:
        from medseg.io import load

        vols = [load(p) for p in case.images]
        label_vol = load_label(case) if case.label is not None else None
        grids = [(v.spatial_shape, v.affine) for v in vols + ([label_vol] if label_vol else [])]
    ref_shape, ref_affine = grids[0]
    for p, (shape, affine) in zip(paths[1:], grids[1:]):
        if shape != ref_shape:
            problems.append(f"{case.case_id}: {p.name} has shape {shape}, image has {ref_shape}")
        elif not np.allclose(affine, ref_affine, atol=1e-3):
            problems.append(f"{case.case_id}: {p.name} is not on the image grid (affines differ)")
    if check_values and case.label is not None:
        label_vol = label_vol or load_label(case)
        values = {int(v) for v in np.unique(label_vol.array)}
        unknown = sorted(values - known)
        if unknown:
            problems.append(f"{case.case_id}: label values {unknown} are not in labels {sorted(known)}")
    return problems


__all__ = ["FORMATS", "Case", "Dataset", "load_dataset", "validate_dataset", "load_case", "load_label"]
