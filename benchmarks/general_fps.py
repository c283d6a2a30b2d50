"""Benchmark: inference speed of the general-image models, medseg's image path vs the library's own forward.

Each model is built from its config at the published sizes (random weights: speed does not depend
on them; nothing is downloaded): SegFormer-B2 and B5 (transformers ``SegformerForSemanticSegmentation``)
and DeepLabV3+ ResNet-101 (segmentation-models-pytorch), on ``--height x --width`` frames (default
1024 x 2048, Cityscapes), batch 1. Per model and precision it times, after ``--warmup`` untimed
runs, ``--runs`` ``torch.inference_mode`` forward passes (CUDA synchronised before each clock read):

- ``library``: the library's own module on the normalised tensor and its own way to a full-size
  label map (SegFormer: ``model(pixel_values=x)`` then ``SegformerImageProcessor.post_process_semantic_segmentation``,
  which upsamples the 1/4-size logits and takes the argmax; DeepLabV3+: ``model(x).argmax(1)``);
- ``medseg``: :func:`medseg.models.apply2d.image_logits` in ``whole`` mode on the registered model,
  what ``medseg predict-images`` and validation run (padding to the input multiple, SegFormer's
  logits upsampled to full size), plus the argmax to a label map.

fp32 everywhere; fp16 and bf16 (autocast) too when CUDA is present. The table prints parameters,
input, device, precision, ms/image and FPS of both, their ratio, and the published figures, marked
"published, not reproduced here" (measured by their authors on other hardware, with trained
weights; SegFormer on a V100, DeepLabV3+ from mmsegmentation's table).

Run: ``python benchmarks/general_fps.py [--models segformer-b2,segformer-b5,deeplabv3plus-r101]
[--height 1024] [--width 2048] [--runs 3] [--warmup 1] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any

#: model -> (registry name, builder config, published mIoU / FPS on Cityscapes as their authors report)
MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "segformer-b2": ("segformer", {"variant": "b2"}, "81.0 mIoU / 48 FPS (published, not reproduced here)"),
    "segformer-b5": ("segformer", {"variant": "b5"}, "84.0 mIoU / 15 FPS (published, not reproduced here)"),
    "deeplabv3plus-r101": ("deeplabv3plus", {"encoder_name": "resnet101"},
                           "80.9 mIoU / 22 FPS (published, not reproduced here)"),
    "segformer-tiny": ("segformer", {"variant": "b0", "depths": [1, 1, 1, 1], "decoder_hidden_size": 64},
                       "medseg's CPU pipeline size (no published figure)"),
}
NUM_CLASSES = 19


def _clock(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def time_runs(fn: Any, runs: int, warmup: int, device: str) -> float:
    """Mean seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = _clock(device)
        fn()
        times.append(_clock(device) - t0)
    return sum(times) / len(times)


def bench_model(key: str, *, height: int, width: int, runs: int, warmup: int, device: str,
                precision: str) -> dict[str, Any]:
    """One row: library and medseg ms/image of model ``key`` at ``precision`` (``fp32``, ``fp16``, ``bf16``)."""
    import contextlib

    import torch

    from medseg.models.apply2d import image_logits
    from medseg.models.registry import create_model, get_model_spec

    name, config, published = MODELS[key]
    config = {**config, "in_channels": 3, "out_channels": NUM_CLASSES}
    torch.manual_seed(0)
    net = create_model(name, **config).eval().to(device)
    library = net.model if name == "segformer" else net
    params = sum(p.numel() for p in net.parameters())
    multiple = get_model_spec(name).size_multiple(config)
    x = torch.randn(1, 3, height, width, device=device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    autocast = (torch.autocast(device_type="cuda", dtype=dtype) if dtype is not None
                else contextlib.nullcontext())

    processor = None
    if name == "segformer":
        from transformers import SegformerImageProcessor

        processor = SegformerImageProcessor()  # its post-processing only: nothing is read or downloaded

    def run_library() -> Any:
        with torch.inference_mode(), autocast:
            if processor is not None:
                out = library(pixel_values=x)
                return processor.post_process_semantic_segmentation(out, target_sizes=[(height, width)])[0]
            return library(x).argmax(1)

    def run_medseg() -> Any:
        with torch.inference_mode(), autocast:
            return image_logits(net, x, multiple=multiple, mode="whole").argmax(1)

    lib_s = time_runs(run_library, runs, warmup, device)
    med_s = time_runs(run_medseg, runs, warmup, device)
    return {"model": key, "params_m": params / 1e6, "input": f"1x3x{height}x{width}", "device": device,
            "precision": precision, "library_ms": lib_s * 1e3, "medseg_ms": med_s * 1e3,
            "library_fps": 1 / lib_s, "medseg_fps": 1 / med_s, "ratio": med_s / lib_s, "published": published}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="segformer-b2,segformer-b5,deeplabv3plus-r101")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precisions = ["fp32"] + (["fp16", "bf16"] if device.startswith("cuda") else [])
    load_before = os.getloadavg()[0]
    rows = []
    for key in args.models.split(","):
        if key not in MODELS:
            raise SystemExit(f"unknown model {key!r}; known: {', '.join(MODELS)}")
        for precision in precisions:
            rows.append(bench_model(key, height=args.height, width=args.width, runs=args.runs, warmup=args.warmup,
                                    device=device, precision=precision))
            r = rows[-1]
            print(f"  measured {r['model']} {r['precision']}: library {r['library_ms']:.0f} ms, "
                  f"medseg {r['medseg_ms']:.0f} ms", flush=True)
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"\ngeneral-image inference, batch 1, {args.runs} timed runs after {args.warmup} warm-up ({where}); "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (1 min)")
    header = ("| model | params (M) | input | device | precision | library ms/img | library FPS | medseg ms/img | "
              "medseg FPS | medseg / library | published (Cityscapes) |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(f"| {r['model']} | {r['params_m']:.1f} | {r['input']} | {r['device']} | {r['precision']} | "
              f"{r['library_ms']:.0f} | {r['library_fps']:.3g} | {r['medseg_ms']:.0f} | {r['medseg_fps']:.3g} | "
              f"{r['ratio']:.2f}x | {r['published']} |")


if __name__ == "__main__":
    main()
