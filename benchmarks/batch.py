"""Batch throughput: 8 DICOM studies, local backend with 1 and 2 workers.

Prints studies per minute (wall clock, worker start-up and model loading included),
the speed-up of 2 workers over 1, how many times each worker process loaded the
model (must be once), and the mean time of each stage per study.

The network is a randomly initialised 3D U-Net (DynUNet, filters 16-32-64-128) on a
4 x 4 x 5 mm grid; inputs are synthetic CT series of 96 x 96 x 64 voxels (2 x 2 x 2.5 mm)
written as DICOM; outputs are NIfTI + DICOM-SEG + overlay PNG. Nothing is downloaded.

Usage: python benchmarks/batch.py [--studies 8] [--workers 1 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path


def make_model(out: Path) -> Path:
    from medseg.testing import make_random_export

    return make_random_export(out, model_config={"arch": "dynunet", "filters": [16, 32, 64, 128]},
                              patch_size=(48, 48, 32), overlap=0.5, batch_size=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, default=None, help="keep inputs and outputs in this folder")
    args = parser.parse_args()

    from medseg.batch import run_batch
    from medseg.data.cohort import write_cohort

    root = args.keep or Path(tempfile.mkdtemp(prefix="medseg-bench-batch-"))
    try:
        cohort = write_cohort(root / "cohort", args.studies, shape=(96, 96, 64), spacing=(2.0, 2.0, 2.5), fmt="dicom")
        shutil.rmtree(cohort / "labels")
        model = make_model(root / "model")
        rows = []
        for workers in args.workers:
            out = root / f"out_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            result = run_batch(model, cohort, out, workers=workers, formats=("nifti", "dicomseg"), report=False)
            ok = [r for r in result.records if r["status"] == "ok"]
            loads: dict[int, int] = {}
            for r in ok:
                pid = r["worker"]["pid"]
                loads[pid] = max(loads.get(pid, 0), r["worker"]["model_loads"])
            stages = {}
            for stage in ("load", "predict", "write_nifti", "write_dicomseg", "overlay", "model_load", "total"):
                values = [r["timings_s"][stage] for r in ok if stage in r["timings_s"]]
                stages[stage] = statistics.fmean(values) if values else float("nan")
            network = statistics.fmean(r["predict_stages_s"].get("network_s", 0.0) for r in ok) if ok else float("nan")
            rows.append({"workers": workers, "ok": len(ok), "failed": len(result.records) - len(ok),
                         "wall_s": result.elapsed_s, "per_min": result.studies_per_minute,
                         "processes": len(loads), "loads": sorted(loads.values()), "network_s": network, **stages})
        print(f"\nbatch benchmark: {args.studies} DICOM studies 96x96x64, cpu_count={os.cpu_count()}, "
              f"torch threads per worker = cpu_count // workers")
        head = (f"{'workers':>7} {'ok':>3} {'failed':>6} {'wall s':>7} {'studies/min':>11} {'processes':>9} "
                f"{'model loads/process':>19} {'model_load s':>12} {'load s':>6} {'predict s':>9} {'network s':>9} "
                f"{'nifti s':>7} {'dcmseg s':>8} {'overlay s':>9} {'total s':>7}")
        print(head)
        for r in rows:
            print(f"{r['workers']:>7} {r['ok']:>3} {r['failed']:>6} {r['wall_s']:>7.1f} {r['per_min']:>11.2f} "
                  f"{r['processes']:>9} {str(r['loads']):>19} {r['model_load']:>12.2f} {r['load']:>6.2f} "
                  f"{r['predict']:>9.2f} {r['network_s']:>9.2f} {r['write_nifti']:>7.2f} {r['write_dicomseg']:>8.2f} "
                  f"{r['overlay']:>9.2f} {r['total']:>7.2f}")
        if len(rows) > 1 and rows[0]["per_min"] > 0:
            print(f"speed-up {rows[-1]['workers']} vs {rows[0]['workers']} workers: "
                  f"{rows[-1]['per_min'] / rows[0]['per_min']:.2f}x")
        if any(set(r["loads"]) != {1} for r in rows):
            raise SystemExit("a worker process loaded the model more than once")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
