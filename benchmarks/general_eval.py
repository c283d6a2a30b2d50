"""Benchmark: dataset mIoU of medseg.general vs torchmetrics on Cityscapes-sized synthetic masks.

Builds ``--images`` pairs (default 200) of ``512 x 1024`` label masks with 19 classes
(blocky reference regions, 10% of the prediction pixels replaced by random classes, 5% of
the reference pixels set to the ignore index 255), then measures in one run:

- medseg, arrays: what ``evaluate_image_folder`` does for the dataset metrics, called on
  numpy arrays (no file I/O): per image the ignore mask, the label range checks
  (``_check_labels``) and ``medseg.metrics.confusion`` summed over images, then
  ``dataset_metrics`` (per class IoU, mIoU, ...);
- torchmetrics, tensors: a ``MetricCollection`` of ``MulticlassJaccardIndex`` (``average=None``
  and ``"macro"``) and ``MulticlassConfusionMatrix``, ``ignore_index=255`` (one shared
  confusion state), ``update`` per image then ``compute``; with its default
  ``validate_args=True`` and with ``validate_args=False``. Tensors are made from the numpy
  arrays beforehand (``torch.from_numpy``, not timed);
- with files (unless ``--no-files``): the masks written as PNGs (not timed), then the whole
  ``evaluate_image_folder`` (``boundary=False, plots=False``: matching, reading, checks,
  confusion, CSV and JSON) vs torchmetrics fed by ``medseg.general.read_mask`` of the same files.

Time is wall-clock, best of ``--repeat`` runs after one untimed warm-up call of each. Agreement: the confusion matrices must be
equal; the table gives the maximum absolute difference of the per-class IoU and of mIoU.

Run: ``python benchmarks/general_eval.py [--images 200] [--height 512] [--width 1024] [--repeat 3] [--no-files]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NUM_CLASSES = 19
IGNORE = 255


def build_masks(n: int, height: int, width: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` (prediction, reference) ``uint8`` mask pairs of ``height x width``."""
    rng = np.random.default_rng(seed)
    preds, refs = [], []
    block = 16
    for _ in range(n):
        coarse = rng.integers(0, NUM_CLASSES, (-(-height // block), -(-width // block)), dtype=np.uint8)
        ref = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]
        pred = ref.copy()
        noise = rng.random(ref.shape) < 0.10
        pred[noise] = rng.integers(0, NUM_CLASSES, int(noise.sum()), dtype=np.uint8)
        ref[rng.random(ref.shape) < 0.05] = IGNORE
        preds.append(np.ascontiguousarray(pred))
        refs.append(np.ascontiguousarray(ref))
    return preds, refs


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def medseg_arrays(preds: list[np.ndarray], refs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """The confusion/mIoU part of ``evaluate_image_folder`` on arrays: ``(confusion, iou, miou)``."""
    from medseg.evaluation.images import _check_labels, dataset_metrics
    from medseg.metrics import confusion

    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        keep = ref != IGNORE if (ref == IGNORE).any() else None
        _check_labels(ref, keep, NUM_CLASSES, Path(f"ref{i}"), "reference")
        _check_labels(pred, keep, NUM_CLASSES, Path(f"pred{i}"), "prediction")
        total += confusion(pred if keep is None else pred[keep], ref if keep is None else ref[keep], NUM_CLASSES)
    data = dataset_metrics(total)
    return total, np.array(data["iou"]), data["miou"]


def _collection(validate: bool) -> Any:
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    kw = {"num_classes": NUM_CLASSES, "ignore_index": IGNORE, "validate_args": validate}
    return MetricCollection({"iou": MulticlassJaccardIndex(average=None, **kw),
                             "miou": MulticlassJaccardIndex(average="macro", **kw),
                             "cm": MulticlassConfusionMatrix(**kw)})


def torchmetrics_run(pairs: Any, validate: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """``update`` per (pred, ref) tensor pair, then ``compute``: ``(confusion, iou, miou)``."""
    metric = _collection(validate)
    for pred, ref in pairs:
        metric.update(pred, ref)
    out = metric.compute()
    return out["cm"].numpy(), out["iou"].double().numpy(), float(out["miou"])


def run(n: int, height: int, width: int, repeat: int, files: bool) -> None:
    import torch

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # read_mask's arrays

    print(f"{n} mask pairs of {height} x {width}, {NUM_CLASSES} classes, ignore index {IGNORE}; "
          f"best of {repeat}; torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}")
    preds, refs = build_masks(n, height, width)
    tensors = [(torch.from_numpy(p), torch.from_numpy(r)) for p, r in zip(preds, refs)]
    rows: list[tuple[str, float, float, float, float]] = []
    medseg_arrays(preds[:2], refs[:2])  # warm-up (imports, first torch calls), not timed
    torchmetrics_run(tensors[:2], True)
    torchmetrics_run(tensors[:2], False)

    (cm_m, iou_m, miou_m), t_m = best_of(lambda: medseg_arrays(preds, refs), repeat)
    for label, validate in (("torchmetrics (validate_args=True)", True), ("torchmetrics (validate_args=False)", False)):
        (cm_t, iou_t, miou_t), t_t = best_of(lambda: torchmetrics_run(tensors, validate), repeat)
        if not np.array_equal(cm_m, cm_t):
            raise SystemExit(f"confusion matrices differ ({label}): max {np.abs(cm_m - cm_t).max()}")
        rows.append((f"arrays: {label}", t_m, t_t, float(np.max(np.abs(iou_m - iou_t))), abs(miou_m - miou_t)))

    if files:
        from medseg.general import evaluate_image_folder, read_mask, save_mask

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for i, (p, r) in enumerate(zip(preds, refs)):
                save_mask(root / "pred" / f"img{i:04d}.png", p)
                save_mask(root / "ref" / f"img{i:04d}.png", r)

            def medseg_files() -> tuple[np.ndarray, np.ndarray, float]:
                res = evaluate_image_folder(root / "pred", root / "ref", root / "out", num_classes=NUM_CLASSES,
                                            ignore_index=IGNORE, boundary=False, plots=False, progress=False)
                return res.confusion, np.array(res.summary["dataset"]["iou"]), res.summary["dataset"]["miou"]

            def torchmetrics_files() -> tuple[np.ndarray, np.ndarray, float]:
                pairs = ((torch.from_numpy(read_mask(root / "pred" / f"img{i:04d}.png")),
                          torch.from_numpy(read_mask(root / "ref" / f"img{i:04d}.png"))) for i in range(n))
                return torchmetrics_run(pairs, True)

            (cm_f, iou_f, miou_f), t_f = best_of(medseg_files, repeat)
            (cm_tf, iou_tf, miou_tf), t_tf = best_of(torchmetrics_files, repeat)
            if not np.array_equal(cm_f, cm_tf) or not np.array_equal(cm_f, cm_m):
                raise SystemExit("confusion matrices from files differ")
            rows.append(("PNG files: evaluate_image_folder vs read_mask + torchmetrics", t_f, t_tf,
                         float(np.max(np.abs(iou_f - iou_tf))), abs(miou_f - miou_tf)))

    print(f"\n{'comparison':62s} {'medseg s':>9s} {'other s':>9s} {'ratio':>7s} {'max |dIoU|':>11s} {'|dmIoU|':>9s}")
    for label, a, b, d_iou, d_miou in rows:
        print(f"{label:62s} {a:9.3f} {b:9.3f} {b / a:6.2f}x {d_iou:11.1e} {d_miou:9.1e}")
    print("ratio = other time / medseg time (above 1: medseg faster); confusion matrices identical in every row")
    print(f"mIoU {miou_m:.6f}")
    try:
        print(f"load average during the run: {os.getloadavg()[0]:.1f} (1 min)")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best time is kept")
    parser.add_argument("--no-files", action="store_true", help="skip the end-to-end measurement on PNG files")
    args = parser.parse_args()
    run(args.images, args.height, args.width, args.repeat, not args.no_files)


if __name__ == "__main__":
    main()
