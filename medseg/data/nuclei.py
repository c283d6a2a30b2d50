"""A small real annotated image set: the 2018 Data Science Bowl nuclei image that stardist ships, in tiles.

stardist (BSD-3-Clause) carries one fluorescence microscopy image of the 2018 Kaggle Data Science Bowl
(Caicedo et al., "Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl", Nature
Methods 16, 2019) with its expert instance annotation: ``stardist/data/images/img2d.tif`` (512 x 512, 16-bit,
values 0-235) and ``mask2d.tif`` (125 nuclei, ids up to 183). It is the one real annotated ordinary image
that can be had offline from PyPI; medseg never installs stardist (it needs TensorFlow): the wheel or sdist
(``pip download stardist==0.9.2 --no-deps``, which ``make test`` does into ``.cache/stardist``) is read as an
archive, or a folder holding the two files.

:func:`write_dsb_nuclei` cuts the image into ``tile x tile`` pixel tiles (row-major stems ``nuclei_<row>_<col>``),
nuclei cut by a tile border kept as the part inside it, and writes one of the layouts medseg reads:

- ``instance``: ``instance_masks`` (:mod:`medseg.data.instance_datasets`): ``images/<stem>.png`` (8-bit gray,
  the original values), ``masks/<stem>.png`` (16-bit instance ids renumbered 1..N per tile), class 1 ``nucleus``;
- ``semantic``: ``image_folder`` (:mod:`medseg.data.image_datasets`): the same images, ``masks/<stem>.png``
  0 background / 1 nucleus.

Both get ``classes.json`` and ``splits.json``: the tiles of the main diagonal (row == col) are the validation
split, the rest the training split (with 128-pixel tiles: 12 training tiles with 123 nuclei or parts of
nuclei, 4 validation tiles with 37).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import write_text_atomic
from medseg.io.images import save_mask

#: the two files inside the stardist package, with their SHA-256 (stardist 0.9.2)
FILES = {"img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
         "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f"}
MEMBER_DIR = "stardist/data/images/"
CLASSES = {1: "nucleus"}


def _archive_members(path: Path) -> dict[str, bytes]:
    wanted = {name: None for name in FILES}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.rsplit("/", 1)[-1]
                if name in wanted and info.filename.endswith(MEMBER_DIR + name):
                    wanted[name] = zf.read(info)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            for member in tf.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if name in wanted and member.isfile() and member.name.endswith(MEMBER_DIR + name):
                    wanted[name] = tf.extractfile(member).read()
    else:
        raise InputError(f"{path}: not a stardist wheel or sdist (neither a zip nor a tar archive)")
    missing = [n for n, v in wanted.items() if v is None]
    if missing:
        raise InputError(f"{path}: no {', '.join(MEMBER_DIR + n for n in missing)} in this archive")
    return wanted  # type: ignore[return-value]


def find_source(folder: str | os.PathLike[str]) -> Path | None:
    """The stardist wheel or sdist in ``folder`` (``pip download`` output), or ``None``."""
    found = sorted(Path(folder).glob("stardist-*.whl")) + sorted(Path(folder).glob("stardist-*.tar.gz"))
    return found[-1] if found else None


def read_dsb_nuclei(source: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(image [512, 512] uint8, instance ids [512, 512] int32)`` from a stardist wheel / sdist or a folder
    holding ``img2d.tif`` and ``mask2d.tif``; both files are checked against :data:`FILES`' SHA-256.

    Raises:
        InputError: missing file, other content (a checksum differs), or values that do not fit 8 bits.
    """
    import tifffile

    src = Path(source)
    if src.is_dir():
        missing = [n for n in FILES if not (src / n).is_file()]
        if missing:
            raise InputError(f"{src}: no {', '.join(missing)} in this folder")
        data = {n: (src / n).read_bytes() for n in FILES}
    elif src.is_file():
        data = _archive_members(src)
    else:
        raise InputError(f"{src}: no such file or folder (give the stardist wheel from "
                         "`pip download stardist==0.9.2 --no-deps`)")
    for name, digest in FILES.items():
        if hashlib.sha256(data[name]).hexdigest() != digest:
            raise InputError(f"{src}: {name} is not the Data Science Bowl file stardist 0.9.2 ships (SHA-256 differs)")
    image = tifffile.imread(io.BytesIO(data["img2d.tif"]))
    ids = tifffile.imread(io.BytesIO(data["mask2d.tif"])).astype(np.int32)
    if image.max() > 255:
        raise InputError(f"{src}: img2d.tif has values above 255; expected the 8-bit range of the original")
    return image.astype(np.uint8), ids


def write_dsb_nuclei(root: str | os.PathLike[str], source: str | os.PathLike[str], *,
                     task: Literal["instance", "semantic"] = "instance", tile: int = 128) -> Path:
    """Write the tiled nuclei set under ``root`` in the layout of ``task`` (module docstring); returns ``root``.

    Args:
        root: the dataset folder (created).
        source: the stardist wheel / sdist, or a folder with ``img2d.tif`` and ``mask2d.tif``.
        task: ``instance`` (``instance_masks``) or ``semantic`` (``image_folder``).
        tile: tile side in pixels; must divide 512.

    Raises:
        InputError: see :func:`read_dsb_nuclei`; ValueError: a bad ``task`` or ``tile``.
    """
    from PIL import Image

    from medseg.io.atomic import atomic_path

    if task not in ("instance", "semantic"):
        raise ValueError(f"task {task!r}: instance or semantic")
    image, ids = read_dsb_nuclei(source)
    if tile < 16 or image.shape[0] % tile or image.shape[1] % tile:
        raise ValueError(f"tile {tile}: must be at least 16 and divide the image size {image.shape}")
    out = Path(root)
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    split: dict[str, list[str]] = {"train": [], "val": []}
    for row in range(image.shape[0] // tile):
        for col in range(image.shape[1] // tile):
            stem = f"nuclei_{row}_{col}"
            window = (slice(row * tile, (row + 1) * tile), slice(col * tile, (col + 1) * tile))
            with atomic_path(out / "images" / f"{stem}.png") as tmp:
                Image.fromarray(image[window]).save(tmp, format="PNG")
            part = ids[window]
            if task == "instance":
                values, renumbered = np.unique(part, return_inverse=True)
                mask = renumbered.reshape(part.shape) if values[0] == 0 else renumbered.reshape(part.shape) + 1
                save_mask(out / "masks" / f"{stem}.png", mask.astype(np.uint16))
            else:
                save_mask(out / "masks" / f"{stem}.png", (part > 0).astype(np.uint8))
            split["val" if row == col else "train"].append(stem)
    names = {str(k): v for k, v in CLASSES.items()} if task == "instance" else ["background", CLASSES[1]]
    write_text_atomic(out / "classes.json", json.dumps(names) + "\n")
    write_text_atomic(out / "splits.json", json.dumps(split) + "\n")
    return out


__all__ = ["FILES", "CLASSES", "find_source", "read_dsb_nuclei", "write_dsb_nuclei"]
