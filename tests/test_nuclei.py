"""The Data Science Bowl nuclei set (medseg.data.nuclei) read from the stardist wheel that `make test` fetches:
real fluorescence microscopy with an expert instance annotation, nobody here wrote it."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from medseg.errors import InputError
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def source():
    from medseg.data.nuclei import find_source

    found = find_source(REPO_ROOT / ".cache" / "stardist")
    if found is None:
        pytest.skip("no stardist wheel in .cache/stardist (make test fetches it: make nuclei-data)")
    return found


def test_the_wheel_holds_the_published_image_and_its_125_nuclei(source):
    from medseg.data.nuclei import read_dsb_nuclei

    image, ids = read_dsb_nuclei(source)
    assert image.shape == ids.shape == (512, 512) and image.dtype == np.uint8
    assert len(np.unique(ids)) - 1 == 125
    # nuclei are brighter than the background they sit on
    assert image[ids > 0].mean() > 2 * image[ids == 0].mean()


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_tiles_read_back_through_medseg_loaders_as_the_original_annotation(source, task, tmp_path):
    from medseg.data.nuclei import read_dsb_nuclei, write_dsb_nuclei
    from medseg.io.images import read_image, read_mask

    image, ids = read_dsb_nuclei(source)
    root = write_dsb_nuclei(tmp_path / task, source, task=task, tile=128)
    split = json.loads((root / "splits.json").read_text())
    assert split["val"] == [f"nuclei_{i}_{i}" for i in range(4)] and len(split["train"]) == 12
    if task == "instance":
        from medseg.data.instance_datasets import load_instance_dataset, validate_instance_dataset

        ds = load_instance_dataset(root)
        validate_instance_dataset(ds)
        assert ds.format == "instance_masks" and ds.class_names == {1: "nucleus"}
        counts = {s: sum(len(i.read()) for i in ds.items if i.split == s) for s in ("train", "val")}
        assert counts == {"train": 123, "val": 37}
    else:
        from medseg.data.image_datasets import load_image_dataset, validate_image_dataset

        ds = load_image_dataset(root)
        validate_image_dataset(ds, progress=False)
        assert ds.format == "image_folder"
    for row, col in [(0, 0), (1, 3), (3, 2)]:
        window = (slice(128 * row, 128 * (row + 1)), slice(128 * col, 128 * (col + 1)))
        stem = f"nuclei_{row}_{col}"
        assert np.array_equal(read_image(root / "images" / f"{stem}.png")[..., 0], image[window])
        mask, original = read_mask(root / "masks" / f"{stem}.png"), ids[window]
        if task == "semantic":
            assert np.array_equal(mask, original > 0)
        else:  # the same partition of the pixels, ids renumbered 1..N
            assert np.array_equal(mask > 0, original > 0)
            pairs = set(zip(mask.ravel().tolist(), original.ravel().tolist()))
            assert len(pairs) == len(np.unique(mask)) == len(np.unique(original))
            assert int(mask.max()) == len(np.unique(original)) - 1


def test_other_content_and_other_archives_are_refused_by_name(source, tmp_path):
    from medseg.data.nuclei import read_dsb_nuclei

    changed = tmp_path / "stardist-0.0-py3-none-any.whl"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(changed, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("stardist/data/images/mask2d.tif"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(info, data)
    with pytest.raises(InputError, match=r"stardist-0.0-py3-none-any.whl: mask2d.tif is not .* \(SHA-256 differs\)"):
        read_dsb_nuclei(changed)
    empty = tmp_path / "other.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other/__init__.py", "")
    with pytest.raises(InputError, match=r"other.whl: no stardist/data/images/img2d.tif"):
        read_dsb_nuclei(empty)
    text = tmp_path / "notes.txt"
    text.write_text("not an archive")
    with pytest.raises(InputError, match="notes.txt: not a stardist wheel"):
        read_dsb_nuclei(text)
    with pytest.raises(InputError, match="no such file"):
        read_dsb_nuclei(tmp_path / "missing.whl")
