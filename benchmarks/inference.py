"""Benchmark: medseg inference against MONAI, end to end on a DICOM study, and batch throughput.

One run, same network (a randomly initialised ``unet3d`` from the registry, seed 0) and the
same input, three parts:

1. **Sliding window** on a CT-like volume (default 512 x 512 x 300, the phantom of
   ``medseg.data.phantom``, CT-normalised): MONAI ``sliding_window_inference`` (Gaussian
   mode, same overlap and windows per batch, softmax inside, then argmax) against medseg's
   streamed ``sliding_window_argmax`` (labels only) and ``sliding_window_average`` (all
   probabilities, for the comparison). Prints wall time, time in the network's forward
   passes, peak memory above the level before the call, and the max absolute difference
   of the probabilities (must be < 1e-4).
2. **End to end** for one DICOM study (written by ``medseg.data.dicom_writer``): DICOM
   load, preprocessing (canonical orientation, resampling to ``--target-spacing``,
   normalisation), network, back to the input grid, post-processing, NIfTI + DICOM-SEG
   writes, via ``medseg.inference.outputs.predict_to_files``. Prints each stage and the
   share of time outside the network's forward passes (target: < 25%).
3. **Batch** of ``--studies`` DICOM studies with 1 and 2 workers (``medseg.batch.run_batch``,
   local backend): studies per minute, and how many times each worker loaded the model.
4. **Peak memory** of ``medseg predict`` and ``medseg batch`` (1 worker, NIfTI + overlay + report)
   on one large CT (default 512 x 512 x 800 int16, 20 classes, a coarse 3.2 x 3.2 x 4 mm model
   grid), each a fresh process tree: the largest resident set of any of its processes, against the
   input array, whole and above the fixed cost (the same predict on a 16 x 16 x 8 image: the
   interpreter, torch and the model) (targets: batch within 10% of predict, predict under 4x the input).

Peak memory: on CPU the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` before each call) minus the resident set before the call; on
CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the call.

    python benchmarks/inference.py [--shape 512 512 300] [--patch 96 96 64] [--overlap 0.5]
        [--batch 2] [--classes 4] [--filters 16 32 64 128] [--device cpu|cuda]
        [--study-shape 512 512 300] [--target-spacing 1.6 1.6 3.0] [--studies 8]
        [--batch-shape 256 256 100] [--memory-shape 512 512 800] [--memory-classes 20]
        [--skip sw,e2e,batch,memory]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACING = (0.8, 0.8, 1.5)  # mm, a typical abdominal CT
CT_NORM = {"kind": "ct", "clip": [-160.0, 240.0], "mean": 60.0, "std": 50.0}


# ----------------------------------------------------------------------------- memory
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(fn: Callable[[], Any], device: str) -> tuple[Any, float, float]:
    """Run ``fn``; returns (result, seconds, peak memory above the start in MiB)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        return out, dt, (torch.cuda.max_memory_allocated() - before) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    before = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, dt, (_rss_kib("VmHWM") - before) / 1024


def build_network(classes: int, filters: list[int], device: str) -> Any:
    import torch

    from medseg.models import create_model

    torch.manual_seed(0)
    return create_model("unet3d", in_channels=1, out_channels=classes, filters=filters).to(device).eval()


class Timed:
    """Wraps a network and accumulates the seconds spent in its forward passes."""

    def __init__(self, net: Any, device: str) -> None:
        self.net, self.seconds, self.sync = net, 0.0, device.startswith("cuda")

    def __call__(self, x: Any) -> Any:
        import torch

        t0 = time.perf_counter()
        y = self.net(x)
        if self.sync:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return y


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n## {title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


# ----------------------------------------------------------------------------- part 1
def bench_sliding_window(args: argparse.Namespace) -> None:
    import torch
    from monai.inferers import sliding_window_inference

    from medseg.data.phantom import make_phantom
    from medseg.inference.sliding_window import as_window_fn, sliding_window_argmax, sliding_window_average
    from medseg.transforms.preprocess import normalize_intensity

    image, _ = make_phantom(args.shape, SPACING, seed=0)
    x = torch.from_numpy(normalize_intensity(image.array, CT_NORM))[None].to(args.device)
    del image
    net = build_network(args.classes, args.filters, args.device)
    patch, ov, bs = tuple(args.patch), args.overlap, args.batch
    with torch.inference_mode():  # warm-up (allocator, kernels) with a full batch of windows
        net(x[None, :, : patch[0], : patch[1], : patch[2]].expand(bs, -1, -1, -1, -1).contiguous())

    def monai_run(timed: Timed) -> Any:
        with torch.inference_mode():
            probs = sliding_window_inference(
                x[None], patch, bs, lambda w: torch.softmax(timed(w), 1), overlap=ov, mode="gaussian")[0]
            return probs, probs.argmax(0).to(torch.uint8).cpu().numpy()

    def ours_labels(timed: Timed) -> Any:
        return sliding_window_argmax(x, as_window_fn(timed), patch, overlap=ov, batch_size=bs, device=args.device)

    def ours_probs(timed: Timed) -> Any:
        return sliding_window_average(x, as_window_fn(timed), patch, overlap=ov, batch_size=bs, device=args.device)

    methods = [("MONAI sliding_window_inference + argmax", monai_run), ("medseg argmax (streamed)", ours_labels),
               ("medseg probabilities (all classes)", ours_probs)]
    best: dict[str, tuple[float, float, float]] = {}
    results: dict[str, Any] = {}
    for _ in range(args.repeat):  # interleaved repeats; best time, max memory
        for name, fn in methods:
            timed = Timed(net, args.device)
            out, dt, mem = measure(lambda: fn(timed), args.device)
            results[name] = out
            old = best.get(name, (float("inf"), 0.0, 0.0))
            best[name] = (min(old[0], dt), timed.seconds if dt < old[0] else old[1], max(old[2], mem))
            del out
    rows = [[n, f"{t:.2f}", f"{net_s:.2f}", f"{t - net_s:.2f}", f"{mem:.0f}"] for n, (t, net_s, mem) in best.items()]
    probs_ref, labels_ref = results[methods[0][0]]
    labels_m, probs_m = results[methods[1][0]], results[methods[2][0]]
    t_ref, mem_ref = best[methods[0][0]][0], best[methods[0][0]][2]
    t_m, mem_m = best[methods[1][0]][0], best[methods[1][0]][2]

    diff = float((probs_m.to(probs_ref.device) - probs_ref).abs().max())
    agree = float((labels_m == labels_ref).mean())
    table(
        f"sliding window: {tuple(args.shape)} voxels, patch {patch}, overlap {ov}, {bs} windows/batch, "
        f"{args.classes} classes, unet3d filters {args.filters}, device {args.device}",
        ["method", "time s", "network s", "outside network s", "peak MiB above start"], rows,
    )
    print(f"max |probabilities medseg - MONAI| = {diff:.2e} ({'OK' if diff < 1e-4 else 'FAIL'} < 1e-4); "
          f"argmax labels identical on {100 * agree:.4f}% of voxels")
    print(f"ratios medseg/MONAI (streamed argmax): time {t_m / t_ref:.3f}, peak memory {mem_m / max(mem_ref, 1e-9):.3f}")


# ----------------------------------------------------------------------------- part 2
def export_model(folder: Path, args: argparse.Namespace) -> Path:
    from medseg.data.phantom import LABELS
    from medseg.models.export import save_export

    net = build_network(args.classes, args.filters, "cpu")
    names = {"0": "background", **{str(k): LABELS.get(k, f"label_{k}") for k in range(1, args.classes)}}
    info = {
        "model": {"name": "unet3d", "config": {"in_channels": 1, "out_channels": args.classes, "filters": args.filters}},
        "spatial_dims": 3,
        "labels": names,
        "preprocessing": {"orientation": "RAS", "target_spacing_mm": list(args.target_spacing), "normalization": CT_NORM},
        "inference": {"patch_size": list(args.patch), "overlap": args.overlap, "batch_size": args.batch},
        "postprocessing": {str(k): {"largest_component": True} for k in range(1, args.classes)},
    }
    return save_export(folder, net, info)


def write_study(folder: Path, shape: list[int], seed: int) -> Path:
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantom import make_phantom

    image, _ = make_phantom(shape, SPACING, seed=seed)
    write_dicom_series(image, folder, seed=seed, instance_number_shuffle=True)
    return folder


def bench_end_to_end(args: argparse.Namespace, work: Path) -> None:
    from medseg.inference import Predictor
    from medseg.inference.outputs import predict_to_files
    from medseg.volume import Volume

    model = export_model(work / "model", args)
    study = write_study(work / "study" / "ct", args.study_shape, seed=1)
    t0 = time.perf_counter()
    predictor = Predictor.from_run(model, device=args.device)
    t_model = time.perf_counter() - t0
    # warm-up, as in a batch worker after its first study: network kernels, highdicom's DICOM standard tables
    predictor.predict(Volume(np.zeros((32, 32, 32), np.int16), np.diag([*args.target_spacing, 1.0])))
    warm = write_study(work / "warm" / "ct", [16, 16, 2], seed=2)
    t0 = time.perf_counter()
    predict_to_files(predictor, warm, work / "warm_out", formats=("nifti", "dicomseg"))
    t_warm = time.perf_counter() - t0
    record = predict_to_files(predictor, study, work / "out", formats=("nifti", "dicomseg"))
    t = record["timings_s"]
    total, network = t["total"], t["network_s"]
    stages = [
        ["model load (once per process, not in total)", f"{t_model:.2f}"],
        ["first tiny study (highdicom tables; once per process, not in total)", f"{t_warm:.2f}"],
        ["DICOM load", f"{t['load']:.2f}"],
        ["preprocess (orientation, resample, normalise)", f"{t['preprocess_s']:.2f}"],
        ["network forward passes", f"{network:.2f}"],
        ["sliding window outside the network", f"{t['sliding_window_s'] - network:.2f}"],
        ["back to the input grid", f"{t['to_input_grid_s']:.2f}"],
        ["post-processing", f"{t['postprocess_s']:.2f}"],
        ["write NIfTI + DICOM-SEG", f"{t['write']:.2f}"],
        ["total", f"{total:.2f}"],
    ]
    table(f"end to end, one DICOM study {tuple(args.study_shape)} at {SPACING} mm -> model grid at "
          f"{tuple(args.target_spacing)} mm, device {args.device}", ["stage", "seconds"], stages)
    share = (total - network) / total
    print(f"share of time outside the network forward passes: {100 * share:.1f}% (target < 25%)")
    print(f"outputs: {json.dumps({k: Path(v).name for k, v in record['outputs'].items()})}")


# ----------------------------------------------------------------------------- part 3
def bench_batch(args: argparse.Namespace, work: Path) -> None:
    from medseg.batch.runner import run_batch

    model = work / "model"
    if not (model / "model.json").is_file():
        export_model(model, args)
    cohort = work / "cohort"
    for n in range(args.studies):
        write_study(cohort / f"case{n:02d}", args.batch_shape, seed=10 + n)
    rows = []
    for workers in (1, 2):
        out = work / f"batch_{workers}"
        result = run_batch(model, cohort, out, workers=workers, formats=("nifti", "dicomseg"), device=args.device,
                           report=False)
        pids: dict[int, int] = {}
        for r in result.records:
            w = r.get("worker", {})
            pids[w.get("pid")] = max(pids.get(w.get("pid"), 0), int(w.get("model_loads", 0)))
        rows.append([workers, f"{result.count('ok')}/{len(result.records)}", f"{result.elapsed_s:.1f}",
                     f"{result.studies_per_minute:.2f}", len(pids), max(pids.values(), default=0)])
    table(f"batch: {args.studies} DICOM studies {tuple(args.batch_shape)}, local backend, NIfTI + DICOM-SEG, "
          f"device {args.device}",
          ["workers", "ok", "wall s", "studies/min", "worker processes", "model loads per worker (max)"], rows)
    if len(rows) == 2:
        print(f"speed-up 2 workers / 1 worker: {float(rows[1][3]) / max(float(rows[0][3]), 1e-9):.2f}x "
              f"on {os.cpu_count()} CPU cores")


# ----------------------------------------------------------------------------- part 4
def _peak_child_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a fresh launcher process; (its wall seconds, the largest resident set any process
    of the tree reached, MB: ``RUSAGE_CHILDREN`` of the launcher, a maximum, not a sum)."""
    launcher = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
                "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    out = subprocess.run([sys.executable, "-c", launcher, *cmd], check=True, capture_output=True, text=True)
    seconds, kib = json.loads(out.stdout.strip().splitlines()[-1])
    return float(seconds), kib / 1024


def bench_memory(args: argparse.Namespace, work: Path) -> None:
    """Peak memory of ``medseg predict`` and ``medseg batch`` (NIfTI + overlay) on one large CT, each a
    fresh process tree, against the input array's size."""
    from medseg.io import save
    from medseg.volume import Volume

    shape = list(args.memory_shape)
    rng = np.random.default_rng(0)
    image = np.full(shape, -1000, np.int16)
    centre = [n // 2 for n in shape]
    image[centre[0] - shape[0] // 3:centre[0] + shape[0] // 3, centre[1] - shape[1] // 3:centre[1] + shape[1] // 3] = 40
    image += rng.integers(-20, 20, size=shape[2], dtype=np.int16)[None, None, :]
    studies = work / "memory_studies"
    studies.mkdir(parents=True, exist_ok=True)
    path = save(Volume(image, np.diag([0.8, 0.8, 1.0, 1.0]), {"modality": "CT"}), studies / "large_ct.nii")
    input_mb = image.nbytes / 2**20
    del image
    local = argparse.Namespace(**{**vars(args), "classes": args.memory_classes, "target_spacing": args.memory_spacing,
                                  "filters": [8, 16, 32, 64]})
    model = export_model(work / "memory_model", local)
    small = save(Volume(np.full((16, 16, 8), -1000, np.int16), np.diag([0.8, 0.8, 1.0, 1.0]), {"modality": "CT"}),
                 work / "memory_small" / "small_ct.nii")
    medseg = [sys.executable, "-m", "medseg"]
    # the fixed cost (interpreter, torch, the model) measured by the same command on a 16x16x8 image
    _, fixed = _peak_child_mb(medseg + ["predict", "--model", str(model), "-i", str(small),
                                        "-o", str(work / "memory_fixed"), "--device", args.device])
    # what the fixed cost is made of: the libraries' own import, each in a fresh interpreter
    _, torch_mb = _peak_child_mb([sys.executable, "-c", "import torch"])
    _, monai_mb = _peak_child_mb([sys.executable, "-c", "import torch, monai.networks.nets"])
    rows = []
    for name, cmd in (
        ("medseg predict (NIfTI)", medseg + ["predict", "--model", str(model), "-i", str(path),
                                            "-o", str(work / "memory_predict"), "--device", args.device]),
        ("medseg batch, 1 worker (NIfTI + overlay + report)",
         medseg + ["batch", "--model", str(model), "-i", str(studies), "-o", str(work / "memory_batch"),
                   "--workers", "1", "--device", args.device]),
    ):
        seconds, peak = _peak_child_mb(cmd)
        rows.append([name, f"{seconds:.1f}", f"{peak:.0f}", f"{peak / input_mb:.2f}", f"{peak - fixed:.0f}",
                     f"{(peak - fixed) / input_mb:.2f}"])
    table(f"peak memory: one CT {tuple(shape)} int16 ({input_mb:.0f} MB) at 0.8x0.8x1 mm, {args.memory_classes} "
          f"classes, model grid at {tuple(args.memory_spacing)} mm, device {args.device}; fixed cost (same predict "
          f"on a 16x16x8 image) {fixed:.0f} MB",
          ["command", "wall s", "peak RSS MB", "peak / input", "peak - fixed MB", "(peak - fixed) / input"], rows)
    predict_mb, batch_mb = float(rows[0][2]), float(rows[1][2])
    print(f"batch / predict peak: {batch_mb / predict_mb:.2f} (target within 1.10); "
          f"predict peak / input: {predict_mb / input_mb:.2f}, above the fixed cost: "
          f"{(predict_mb - fixed) / input_mb:.2f} (target under 4)")
    print(f"of the fixed cost {fixed:.0f} MB: `import torch` alone peaks at {torch_mb:.0f} MB, `import torch, "
          f"monai.networks.nets` at {monai_mb:.0f} MB ({monai_mb / input_mb:.2f}x the input before any work)")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--patch", type=int, nargs=3, default=[96, 96, 64])
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=2, help="windows per forward pass")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--study-shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--target-spacing", type=float, nargs=3, default=[1.6, 1.6, 3.0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--batch-shape", type=int, nargs=3, default=[256, 256, 100])
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repeats of the sliding-window part")
    parser.add_argument("--memory-shape", type=int, nargs=3, default=[512, 512, 800])
    parser.add_argument("--memory-classes", type=int, default=20)
    parser.add_argument("--memory-spacing", type=float, nargs=3, default=[3.2, 3.2, 4.0])
    parser.add_argument("--skip", default="", help="comma list of parts to skip: sw, e2e, batch, memory")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="medseg_bench_inference_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if "sw" not in skip:
            bench_sliding_window(args)
        if "e2e" not in skip:
            bench_end_to_end(args, work)
        if "batch" not in skip:
            bench_batch(args, work)
        if "memory" not in skip:
            bench_memory(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
