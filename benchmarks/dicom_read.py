"""DICOM series reading speed: medseg vs SimpleITK, MONAI LoadImage and dcm2niix.

Generates a synthetic CT series (default 300 slices of 512x512 int16, uncompressed,
written by medseg.data.dicom_writer; ``--shuffle`` makes InstanceNumber say nothing about
position), reads it with each tool a
few times, checks that medseg's voxels and affine equal SimpleITK's and MONAI's (in
world space), and prints the median wall time and the ratio to medseg.

    python benchmarks/dicom_read.py [--slices 300] [--size 512] [--repeat 3] [--syntax explicit_le] [--shuffle]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

FLIP = np.diag([-1.0, -1.0, 1.0])


def make_series(folder: Path, slices: int, size: int, syntax: str, shuffle: bool = False) -> np.ndarray:
    """Write a CT-like series; returns the written voxel array [i, j, k]."""
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.volume import Volume

    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    body = ((i - size / 2) ** 2 + (j - size / 2) ** 2) < (0.42 * size) ** 2
    base = np.where(body, 40, -1000).astype(np.int16)
    array = np.empty((size, size, slices), dtype=np.int16)
    for k in range(slices):
        array[:, :, k] = base + rng.integers(-20, 20, size=(size, size), dtype=np.int16) + (k % 50)
    affine = np.diag([-0.7, -0.7, 1.0, 1.0])
    affine[:3, 3] = [180.0, 200.0, -150.0]
    write_dicom_series(Volume(array, affine), folder, seed=0, instance_number_shuffle=shuffle, transfer_syntax=syntax)
    return array


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus finished child processes (dcm2niix)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def time_it(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall seconds, median CPU seconds and the last result of ``repeat`` calls."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        c0, t0 = _cpu_seconds(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def read_medseg(folder: Path):
    from medseg.io import load

    v = load(folder)
    return v.array, v.affine


def read_sitk(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    affine = np.eye(4)
    affine[:3, :3] = FLIP @ np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    affine[:3, 3] = FLIP @ np.array(img.GetOrigin())
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), affine


def read_monai(folder: Path):
    from monai.transforms import LoadImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = LoadImage(image_only=True, reader="PydicomReader", affine_lps_to_ras=True)(str(folder))
    return np.asarray(img), np.asarray(img.affine, dtype=np.float64)


def read_dcm2niix(folder: Path):
    out = Path(tempfile.mkdtemp(prefix="dcm2niix_"))
    try:
        subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-o", str(out), "-f", "ref", str(folder)],
                       check=True, capture_output=True)
        import nibabel as nib

        img = nib.load(str(out / "ref.nii"))
        return np.asarray(img.dataobj), img.affine
    finally:
        shutil.rmtree(out, ignore_errors=True)


def same_in_world(a, b) -> str:
    """'yes' when both (array, affine) hold the same values at the same world positions."""
    (a_arr, a_aff), (b_arr, b_aff) = a, b
    if a_arr.size != b_arr.size:
        return f"no (shape {a_arr.shape} vs {b_arr.shape})"
    m = np.linalg.inv(b_aff) @ a_aff
    perm = np.rint(m[:3, :3])
    if not np.allclose(m[:3, :3], perm, atol=1e-4) or not np.allclose(m[:3, 3], np.rint(m[:3, 3]), atol=1e-3):
        return f"no (world grid differs: inv(B) A is off a permutation by {np.max(np.abs(m[:3, :3] - perm)):.3g})"
    # reorder b into a's index order
    order = [int(np.argmax(np.abs(perm[:, p]))) for p in range(3)]
    b2 = np.transpose(b_arr, order)
    for p in range(3):
        if perm[order[p], p] < 0:
            b2 = np.flip(b2, axis=p)
    return "yes" if np.array_equal(np.asarray(a_arr), b2) else "no (voxels differ)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--syntax", default="explicit_le", help="writer transfer syntax (explicit_le, rle, jpeg2000, ...)")
    parser.add_argument("--shuffle", action="store_true",
                        help="shuffle InstanceNumbers (readers that sort by InstanceNumber then misplace slices)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="medseg_bench_") as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        make_series(folder, args.slices, args.size, args.syntax, args.shuffle)
        print(f"series: {args.slices} slices {args.size}x{args.size} int16, {args.syntax}, "
              f"InstanceNumbers {'shuffled' if args.shuffle else 'in slice order'}, "
              f"written in {time.perf_counter() - t0:.1f} s to {folder}")
        readers = {"medseg": read_medseg, "SimpleITK ImageSeriesReader": read_sitk,
                   "MONAI LoadImage (PydicomReader)": read_monai}
        if shutil.which("dcm2niix"):
            readers["dcm2niix (to .nii, then nibabel)"] = read_dcm2niix
        read_medseg(folder)  # warm the page cache and imports for everyone
        read_sitk(folder)
        rows = []
        ref = None
        for name, fn in readers.items():
            wall, cpu, result = time_it(lambda fn=fn: fn(folder), args.repeat)
            if ref is None:
                ref = (wall, cpu, result)
            rows.append((name, wall, wall / ref[0], cpu, cpu / ref[1], same_in_world(ref[2], result)))
    print(f"\nmedian of {args.repeat} runs; CPU time is less sensitive to other load on the machine")
    print(f"{'reader':34s} {'wall s':>8s} {'x medseg':>9s} {'CPU s':>8s} {'x medseg':>9s}  same voxels+affine as medseg")
    for name, wall, wall_ratio, cpu, cpu_ratio, same in rows:
        print(f"{name:34s} {wall:8.3f} {wall_ratio:9.2f} {cpu:8.3f} {cpu_ratio:9.2f}  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
