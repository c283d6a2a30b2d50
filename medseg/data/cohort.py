"""Folders of synthetic cases: an nnU-Net raw dataset or DICOM studies with reference labels.

Case ``n`` (0-based) is ``make_phantom(shape, spacing, seed=seed + n)``, so two cohorts
written with the same arguments are identical and a case can be regenerated alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.data.phantom import LABELS, make_phantom
from medseg.errors import ConfigError
from medseg.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

FORMATS = ("nnunet", "dicom")
_NNUNET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")


def case_id(index: int) -> str:
    """The identifier of case ``index``: ``case_000``, ``case_001``, ..."""
    return f"case_{index:03d}"


def write_cohort(
    root: str | os.PathLike[str],
    n_cases: int = 10,
    *,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (2.0, 2.0, 2.5),
    seed: int = 0,
    fmt: str = "nnunet",
    dataset_name: str = "Dataset001_Phantom",
    noise_hu: float = 20.0,
    transfer_syntax: str = "explicit_le",
    orientation: str = "LPS",
    oblique_deg: float = 0.0,
) -> Path:
    """Write ``n_cases`` phantom cases under ``root``.

    Layouts:
        ``fmt="nnunet"``: ``root/<dataset_name>/imagesTr/case_XXX_0000.nii.gz``,
        ``labelsTr/case_XXX.nii.gz`` and ``dataset.json`` (``channel_names`` ``{"0": "CT"}``,
        ``labels`` ``{"background": 0, "liver": 1, ...}``, ``numTraining``, ``file_ending``).
        Returns ``root/<dataset_name>``.

        ``fmt="dicom"``: ``root/case_XXX/`` holds a CT series (PatientID ``PHANTOMXXX``),
        ``root/labels/case_XXX.nii.gz`` its exact label map on the grid a DICOM reader
        produces (i = columns, j = rows, k along the slice normal), and ``root/cohort.json``
        lists the cases. Returns ``root``.

    Args:
        shape, spacing: voxels and mm along ``(i, j, k)`` of every case.
        seed: case ``n`` uses ``seed + n``.
        noise_hu: noise standard deviation in HU.
        orientation, oblique_deg: grid orientation of every case, see
            :func:`medseg.data.phantom.make_phantom`.
        transfer_syntax: for ``fmt="dicom"``, see :data:`medseg.data.dicom_writer.TRANSFER_SYNTAXES`.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown cohort format {fmt!r}; known: {', '.join(FORMATS)}")
    if int(n_cases) != n_cases or n_cases < 1:
        raise ConfigError(f"n_cases must be a positive integer, got {n_cases!r}")
    root = Path(root)
    phantom_kwargs = {"orientation": orientation, "oblique_deg": oblique_deg, "noise_hu": noise_hu}
    if fmt == "nnunet":
        return _write_nnunet(root, int(n_cases), shape, spacing, seed, dataset_name, phantom_kwargs)
    return _write_dicom(root, int(n_cases), shape, spacing, seed, phantom_kwargs, transfer_syntax)


def _write_nnunet(
    root: Path, n_cases: int, shape: Sequence[int], spacing: Sequence[float], seed: int,
    dataset_name: str, phantom_kwargs: dict[str, Any],
) -> Path:
    from medseg.io import save

    if not _NNUNET_NAME.match(dataset_name):
        raise ConfigError(
            f"dataset_name {dataset_name!r} does not follow nnU-Net's 'DatasetXXX_Name' pattern "
            "(three digits, then a name)"
        )
    out = root / dataset_name
    for n in range(n_cases):
        image, labels = make_phantom(shape, spacing, seed=seed + n, **phantom_kwargs)
        save(image, out / "imagesTr" / f"{case_id(n)}_0000.nii.gz")
        save(labels, out / "labelsTr" / f"{case_id(n)}.nii.gz")
    dataset = {
        "name": dataset_name,
        "description": f"medseg synthetic CT phantoms, shape {list(shape)}, spacing {list(spacing)} mm, seeds {seed}..{seed + n_cases - 1}",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: value for value, name in LABELS.items()}},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "licence": "CC0 (synthetic)",
    }
    write_text_atomic(out / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    log.info("wrote %d nnU-Net cases to %s", n_cases, out)
    return out


def _write_dicom(
    root: Path, n_cases: int, shape: Sequence[int], spacing: Sequence[float], seed: int,
    phantom_kwargs: dict[str, Any], transfer_syntax: str,
) -> Path:
    from medseg.data.dicom_writer import dicom_grid, write_dicom_series
    from medseg.io import save

    cases = []
    for n in range(n_cases):
        image, labels = make_phantom(shape, spacing, seed=seed + n, **phantom_kwargs)
        paths = write_dicom_series(
            image, root / case_id(n), patient_id=f"PHANTOM{n:03d}", patient_name=f"Phantom^Case{n:03d}",
            series_description="phantom CT", transfer_syntax=transfer_syntax, seed=seed + n,
        )
        label_path = save(dicom_grid(labels), root / "labels" / f"{case_id(n)}.nii.gz")
        cases.append({
            "id": case_id(n),
            "image": case_id(n),
            "label": str(label_path.relative_to(root)),
            "seed": seed + n,
            "slices": len(paths),
        })
    manifest = {
        "format": "medseg-phantom-dicom",
        "labels": {str(k): v for k, v in LABELS.items()},
        "shape": list(shape),
        "spacing_mm": list(spacing),
        "cases": cases,
    }
    write_text_atomic(root / "cohort.json", json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %d DICOM cases to %s", n_cases, root)
    return root


__all__ = ["write_cohort", "case_id", "FORMATS"]
