"""Benchmark: medseg.metrics vs MONAI vs DeepMind surface-distance on a 512x512x200 CT-sized case.

Builds three structures on a 512 x 512 x 200 grid with 0.8 x 0.8 x 2.5 mm voxels (a
liver-sized, a kidney-sized and a small tumour-like one, the tumour's prediction with a
false-positive island 40 mm away), then, per structure, measures in one run:

- medseg: ``dice`` + ``surface_metrics`` (HD, HD95, ASSD, MASD, NSD from one distance pass),
  voxel and surfel boundaries;
- MONAI: ``compute_dice``, ``compute_hausdorff_distance(percentile=95)``,
  ``compute_average_surface_distance(symmetric=True)``, ``compute_surface_dice``, each a
  separate call as users make them (inputs converted to tensors beforehand, not timed);
- DeepMind ``surface_distance`` (when installed): ``compute_surface_distances`` then its
  HD95 / average distance / surface Dice functions.

Time is wall-clock (best of ``--repeat`` runs); memory is the peak resident memory above
the level before the call (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``), so it counts numpy, torch and C++ allocations alike; glibc's
``malloc_trim`` runs before each call so that memory freed by earlier calls leaves the
resident set and cannot hide a later peak.
Value differences are relative: medseg voxel vs MONAI, medseg surfel vs DeepMind.

Run: ``python benchmarks/metrics.py [--repeat 3] [--tolerance-mm 2] [--no-deepmind]``
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

SHAPE = (512, 512, 200)
SPACING = (0.8, 0.8, 2.5)


def _ellipsoid(center_mm, radii_mm, *, wobble: float = 0.0, seed: int = 0) -> np.ndarray:
    """Boolean mask of an ellipsoid (optionally with a smooth bumpy surface) on the benchmark grid."""
    sp = np.asarray(SPACING)
    c, r = np.asarray(center_mm, float), np.asarray(radii_mm, float) * (1 + abs(wobble))
    lo = np.maximum(np.floor((c - r) / sp).astype(int) - 1, 0)
    hi = np.minimum(np.ceil((c + r) / sp).astype(int) + 2, SHAPE)
    grids = np.meshgrid(*[np.arange(a, b) * s - cc for a, b, s, cc in zip(lo, hi, sp, c)], indexing="ij")
    rel = [g / rr for g, rr in zip(grids, np.asarray(radii_mm, float))]
    rho = np.sqrt(sum(x * x for x in rel))
    limit = 1.0
    if wobble:
        rng = np.random.default_rng(seed)
        a, b = rng.integers(2, 5, size=2)
        theta = np.arctan2(rel[1], rel[0])
        phi = np.arccos(np.clip(rel[2] / np.maximum(rho, 1e-9), -1, 1))
        limit = 1.0 + wobble * np.sin(a * theta) * np.cos(b * phi)
    mask = np.zeros(SHAPE, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = rho <= limit
    return mask


def build_case() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{structure: (prediction, reference)}`` boolean masks on the 512 x 512 x 200 grid."""
    liver_ref = _ellipsoid((205, 180, 250), (95, 75, 80), wobble=0.05, seed=1)
    liver_pred = _ellipsoid((207, 178, 252), (97, 74, 78), wobble=0.06, seed=2)
    kidney_ref = _ellipsoid((290, 260, 230), (28, 22, 50), wobble=0.04, seed=3)
    kidney_pred = _ellipsoid((289, 261, 233), (27, 23, 48), wobble=0.05, seed=4)
    tumour_ref = _ellipsoid((180, 160, 260), (9, 8, 10))
    tumour_pred = _ellipsoid((181, 161, 262), (8, 8, 9)) | _ellipsoid((180, 200, 260), (4, 4, 5))  # + FP island
    return {"liver": (liver_pred, liver_ref), "kidney": (kidney_pred, kidney_ref), "tumour": (tumour_pred, tumour_ref)}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


CPU_TIMES: dict[int, float] = {}


def measure(func: Callable[[], Any], repeat: int) -> tuple[Any, float, float]:
    """(result, best wall time in s, peak extra resident memory in MB) of ``func()``.

    The CPU time (all threads) of the run with the best wall time is kept in
    ``CPU_TIMES[id(func)]``: on a shared machine it is the steadier number.
    """
    best, peak, result = float("inf"), 0.0, None
    for _ in range(repeat):
        _trim()
        can_reset = os.path.exists("/proc/self/clear_refs")
        if can_reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _rss_kib("VmRSS")
        t, c = time.perf_counter(), time.process_time()
        result = func()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if wall < best:
            best, CPU_TIMES[id(func)] = wall, cpu
        if can_reset:
            peak = max(peak, (_rss_kib("VmHWM") - base) / 1024)
    return result, best, peak


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


def run(repeat: int, tolerance_mm: float, deepmind: bool) -> None:
    from medseg.metrics import dice, surface_metrics

    print(f"case {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}, spacing {SPACING} mm, NSD tolerance {tolerance_mm} mm, "
          f"best of {repeat}; CPU threads: {os.cpu_count()}")
    case = build_case()
    try:
        import torch
        from monai.metrics import (
            compute_average_surface_distance,
            compute_dice,
            compute_hausdorff_distance,
            compute_surface_dice,
        )

        torch.set_num_threads(1)
        have_monai = True
    except ImportError:
        have_monai = False
    sd_lib = None
    if deepmind:
        try:
            import surface_distance as sd_lib  # type: ignore[no-redef]
        except ImportError:
            print("DeepMind surface-distance not installed (pip install surface-distance): skipped")
    rows = []
    for name, (pred, ref) in case.items():
        print(f"\n== {name}: reference {int(ref.sum())} voxels, prediction {int(pred.sum())} voxels")

        def ours(surface: str) -> dict[str, float]:
            out = {"dice": dice(pred, ref)}
            out.update(surface_metrics(pred, ref, spacing=SPACING, tolerance_mm=tolerance_mm, surface=surface))
            return out

        f_vox, f_surf = (lambda: ours("voxel")), (lambda: ours("surfel"))
        m_vox, t_vox, mem_vox = measure(f_vox, repeat)
        m_surf, t_surf, mem_surf = measure(f_surf, repeat)
        cpu_vox, cpu_surf = CPU_TIMES[id(f_vox)], CPU_TIMES[id(f_surf)]
        print(f"medseg voxel : {t_vox:8.3f} s (cpu {cpu_vox:6.3f} s) {mem_vox:8.1f} MB  " + _fmt(m_vox))
        print(f"medseg surfel: {t_surf:8.3f} s (cpu {cpu_surf:6.3f} s) {mem_surf:8.1f} MB  " + _fmt(m_surf))
        row: dict[str, Any] = {"structure": name, "medseg_s": t_vox, "medseg_mb": mem_vox, "medseg_cpu": cpu_vox,
                               "surfel_s": t_surf, "surfel_mb": mem_surf, "surfel_cpu": cpu_surf}
        if have_monai:
            p_t = torch.from_numpy(pred)[None, None].float()
            r_t = torch.from_numpy(ref)[None, None].float()
            sp = list(SPACING)
            calls = {
                "dice": lambda: compute_dice(p_t, r_t, include_background=True).item(),
                "hd95": lambda: compute_hausdorff_distance(
                    p_t, r_t, include_background=True, percentile=95, spacing=sp).item(),
                "assd": lambda: compute_average_surface_distance(
                    p_t, r_t, include_background=True, symmetric=True, spacing=sp).item(),
                "nsd": lambda: compute_surface_dice(
                    p_t, r_t, class_thresholds=[tolerance_mm], include_background=True, spacing=sp).item(),
            }
            total_t, total_cpu, total_mem, values = 0.0, 0.0, 0.0, {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for key, call in calls.items():
                    values[key], t, mem = measure(call, repeat)
                    total_t += t
                    total_cpu += CPU_TIMES[id(call)]
                    total_mem = max(total_mem, mem)
                    print(f"MONAI {key:6s}: {t:8.3f} s (cpu {CPU_TIMES[id(call)]:6.3f} s) {mem:8.1f} MB  "
                          f"value {values[key]:.6g}  "
                          f"rel. diff to medseg voxel {_rel(m_vox[key], values[key]):.1e}")
            print(f"MONAI total : {total_t:8.3f} s (cpu {total_cpu:6.3f} s) {total_mem:8.1f} MB (peak of the calls)")
            row.update(monai_s=total_t, monai_mb=total_mem, monai_cpu=total_cpu,
                       max_rel_diff=max(_rel(m_vox[k], values[k]) for k in values))
        if sd_lib is not None:
            def deepmind_all() -> dict[str, float]:
                d = sd_lib.compute_surface_distances(ref, pred, SPACING)  # (gt, pred)
                gt_to_pred, pred_to_gt = sd_lib.compute_average_surface_distance(d)
                return {"hd95": float(sd_lib.compute_robust_hausdorff(d, 95)),
                        "masd": float(0.5 * (gt_to_pred + pred_to_gt)),
                        "nsd": float(sd_lib.compute_surface_dice_at_tolerance(d, tolerance_mm))}

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dm, t_dm, mem_dm = measure(deepmind_all, 1)
            cpu_dm = CPU_TIMES[id(deepmind_all)]
            diff = max(_rel(m_surf[k], dm[k]) for k in dm)
            print(f"DeepMind     : {t_dm:8.3f} s (cpu {cpu_dm:6.3f} s) {mem_dm:8.1f} MB  " + _fmt(dm)
                  + f"  max rel. diff to medseg surfel {diff:.1e}")
            row.update(deepmind_s=t_dm, deepmind_mb=mem_dm, deepmind_cpu=cpu_dm, deepmind_rel_diff=diff)
        rows.append(row)
    _table(rows)
    labels = np.zeros(SHAPE, np.uint8)
    refs = np.zeros(SHAPE, np.uint8)
    for lab, (pred, ref) in enumerate(case.values(), start=1):
        labels[pred] = lab
        refs[ref] = lab
    from medseg.metrics import evaluate_labels

    out, t, mem = measure(lambda: evaluate_labels(labels, refs, labels=[1, 2, 3], spacing=SPACING,
                                                  metrics=["dice", "hd95", "assd", "nsd"],
                                                  tolerance_mm=tolerance_mm), repeat)
    print(f"\nmedseg evaluate_labels on the uint8 label maps (3 labels; the tumour is painted over the liver): "
          f"{t:.3f} s, {mem:.1f} MB")
    for r in out:
        print("  " + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.6g}" for k, v in values.items())


def _table(rows: list[dict[str, Any]]) -> None:
    print("\nSummary: Dice + HD95 + ASSD + NSD per structure. s = best wall time, cpu = CPU seconds of that run,")
    print("MB = peak extra resident memory; speed-ups are ratios of wall time (and of CPU time).")
    print(f"{'structure':10s} {'medseg s':>9s} {'cpu':>6s} {'MB':>5s} | {'MONAI s':>8s} {'cpu':>6s} {'MB':>5s} "
          f"{'speed-up':>8s} {'(cpu)':>7s} {'rel diff':>8s} | {'surfel s':>8s} {'DeepMind s':>10s} {'speed-up':>8s} "
          f"{'rel diff':>8s}")
    for r in rows:
        line = f"{r['structure']:10s} {r['medseg_s']:9.3f} {r['medseg_cpu']:6.3f} {r['medseg_mb']:5.0f} | "
        if "monai_s" in r:
            line += (f"{r['monai_s']:8.3f} {r['monai_cpu']:6.3f} {r['monai_mb']:5.0f} "
                     f"{r['monai_s'] / r['medseg_s']:7.1f}x {r['monai_cpu'] / r['medseg_cpu']:6.1f}x "
                     f"{r['max_rel_diff']:8.1e} | ")
        else:
            line += "MONAI not installed | "
        line += f"{r['surfel_s']:8.3f} "
        if "deepmind_s" in r:
            line += (f"{r['deepmind_s']:10.3f} {r['deepmind_s'] / r['surfel_s']:7.1f}x "
                     f"{r['deepmind_rel_diff']:8.1e}")
        print(line)
    try:
        print(f"load average during the run: {os.getloadavg()[0]:.1f} (1 min)")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best time is kept")
    parser.add_argument("--tolerance-mm", type=float, default=2.0)
    parser.add_argument("--no-deepmind", action="store_true", help="skip DeepMind surface-distance")
    args = parser.parse_args()
    run(args.repeat, args.tolerance_mm, not args.no_deepmind)


if __name__ == "__main__":
    main()
