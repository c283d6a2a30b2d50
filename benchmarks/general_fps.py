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

The issue-15 families run the same way: ``yolo11n-seg`` / ``yolov8x-seg`` (ultralytics ``SegmentationModel``;
library: its forward, ``non_max_suppression`` and ``process_mask`` at ultralytics' default quarter-size-then-
upsampled masks; medseg: :func:`medseg.inference.yolo.instance_maps`, masks from prototypes upsampled to the
full image, on the letterboxed frame), ``yolo26n-sem`` (library: ultralytics' semantic predictor's
upsample-and-argmax of the stride-8 logits; medseg: ``image_logits``) and ``mask2former-tiny`` /
``mask2former-swin-t`` (library: ``model(pixel_values=x)`` + ``Mask2FormerImageProcessor.post_process_semantic_segmentation``;
medseg: ``image_logits``). A row whose library (ultralytics, transformers) is not installed is skipped
with a line saying so.

fp32 everywhere; fp16 and bf16 (autocast) too when CUDA is present. The table prints parameters,
input, device, precision, ms/image and FPS of both, their ratio, and the published figures, marked
"published, not reproduced here" (measured by their authors on other hardware, with trained
weights; SegFormer on a V100, DeepLabV3+ from mmsegmentation's table).

Run: ``python benchmarks/general_fps.py [--models segformer-b2,segformer-b5,deeplabv3plus-r101]
[--height 1024] [--width 2048] [--runs 3] [--warmup 1] [--device cpu|cuda]``; the CPU rows of the
README: ``--models yolo11n-seg,yolo26n-sem,mask2former-tiny,mask2former-swin-t --height 512 --width 512``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
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
    "yolo11n-seg": ("yolo_seg", {"model": "yolo11n-seg.yaml"}, "instance; COCO figures in ultralytics' docs"),
    "yolov8x-seg": ("yolo_seg", {"model": "yolov8x-seg.yaml"}, "instance; COCO figures in ultralytics' docs"),
    "yolo26n-sem": ("yolo_sem", {"model": "yolo26n-sem.yaml"}, "semantic; no published figure compared"),
    "mask2former-tiny": ("mask2former", {"config": {"hidden_dim": 64, "num_queries": 16, "encoder_layers": 2,
                                                    "decoder_layers": 3, "encoder_feedforward_dim": 128,
                                                    "dim_feedforward": 128, "mask_feature_size": 64,
                                                    "feature_size": 64, "num_attention_heads": 4},
                                         "backbone": {"embed_dim": 16, "depths": [1, 1, 1, 1],
                                                      "num_heads": [1, 2, 4, 8], "window_size": 4}},
                         "medseg's CPU pipeline size (no published figure)"),
    "mask2former-swin-t": ("mask2former", {"config": {"num_queries": 100},
                                           "backbone": {"embed_dim": 96, "depths": [2, 2, 6, 2],
                                                        "num_heads": [3, 6, 12, 24], "window_size": 7}},
                           "Swin-T, 100 queries; no published figure compared"),
}
#: the library each registry family needs (its row is skipped when that is not installed)
LIBRARY = {"segformer": "transformers", "mask2former": "transformers", "deeplabv3plus": "segmentation_models_pytorch",
           "yolo_seg": "ultralytics", "yolo_sem": "ultralytics"}
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


def _dense_runners(net: Any, x: Any, multiple: Any) -> tuple[Any, Any]:
    """SegFormer (transformers' module + its processor's post-processing) or DeepLabV3+ (``argmax``) vs medseg."""
    from medseg.models.apply2d import image_logits

    size = [tuple(x.shape[2:])]
    if hasattr(net, "model"):
        from transformers import SegformerImageProcessor

        processor = SegformerImageProcessor()  # its post-processing only: nothing is read or downloaded
        library = lambda: processor.post_process_semantic_segmentation(net.model(pixel_values=x), target_sizes=size)[0]  # noqa: E731
    else:
        library = lambda: net(x).argmax(1)  # noqa: E731
    return library, lambda: image_logits(net, x, multiple=multiple, mode="whole").argmax(1)


def _mask2former_runners(net: Any, x: Any, multiple: Any) -> tuple[Any, Any]:
    from transformers import Mask2FormerImageProcessor

    from medseg.models.apply2d import image_logits

    processor = Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False)
    size = [tuple(x.shape[2:])]
    return (lambda: processor.post_process_semantic_segmentation(net.model(pixel_values=x), target_sizes=size)[0],
            lambda: image_logits(net, x, multiple=multiple, mode="whole").argmax(1))


def _yolo_sem_runners(net: Any, x: Any, multiple: Any) -> tuple[Any, Any]:
    import torch.nn.functional as F

    from medseg.models.apply2d import image_logits

    def library() -> Any:  # ultralytics' SemanticSegmentationPredictor.postprocess on an unpadded frame
        out = net.net(x)
        return F.interpolate(out[0] if isinstance(out, tuple) else out, x.shape[2:], mode="bilinear",
                             align_corners=False).max(1).indices

    return library, lambda: image_logits(net, x, multiple=multiple, mode="whole").argmax(1)


def _yolo_seg_runners(net: Any, x: Any, multiple: Any) -> tuple[Any, Any]:
    import numpy as np
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    from medseg.inference.yolo import instance_maps

    h, w = x.shape[2:]
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    device = str(x.device)
    import torch

    boxed = torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255)[None].to(x.device)  # the same frame

    def library() -> Any:  # ultralytics' SegmentationPredictor (retina_masks=False): masks at 1/4, upsampled
        pred, protos = net(boxed)[0]
        det = non_max_suppression(pred, 0.25, 0.7, max_det=300, nc=NUM_CLASSES)[0]
        return ops.process_mask(protos[0], det[:, 6:], det[:, :4], (h, w), upsample=True) if len(det) else det

    return library, lambda: instance_maps(net, image, imgsz=max(h, w), conf=0.25, iou=0.7, max_det=300,
                                          device=device)


RUNNERS = {"mask2former": _mask2former_runners, "yolo_sem": _yolo_sem_runners, "yolo_seg": _yolo_seg_runners}


def bench_model(key: str, *, height: int, width: int, runs: int, warmup: int, device: str,
                precision: str) -> dict[str, Any]:
    """One row: library and medseg ms/image of model ``key`` at ``precision`` (``fp32``, ``fp16``, ``bf16``)."""
    import contextlib

    import torch

    from medseg.models.registry import create_model, get_model_spec

    name, config, published = MODELS[key]
    config = {**config, "nc": NUM_CLASSES, "imgsz": max(height, width)} if name == "yolo_seg" else \
        {**config, "in_channels": 3, "out_channels": NUM_CLASSES}
    torch.manual_seed(0)
    net = create_model(name, **config).eval().to(device)
    params = sum(p.numel() for p in net.parameters())
    multiple = get_model_spec(name).size_multiple(config)
    x = torch.randn(1, 3, height, width, device=device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    autocast = (torch.autocast(device_type="cuda", dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    library_fn, medseg_fn = RUNNERS.get(name, _dense_runners)(net, x, multiple)

    def run_library() -> Any:
        with torch.inference_mode(), autocast:
            return library_fn()

    def run_medseg() -> Any:
        with torch.inference_mode(), autocast:
            return medseg_fn()

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
        library = LIBRARY.get(MODELS[key][0])
        if library and importlib.util.find_spec(library) is None:
            print(f"  skipped {key}: {library} is not installed", flush=True)
            continue
        for precision in precisions:
            rows.append(bench_model(key, height=args.height, width=args.width, runs=args.runs, warmup=args.warmup,
                                    device=device, precision=precision))
            r = rows[-1]
            print(f"  measured {r['model']} {r['precision']}: library {r['library_ms']:.0f} ms, "
                  f"medseg {r['medseg_ms']:.0f} ms (load average {os.getloadavg()[0]:.1f})", flush=True)
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    if "ultralytics" in sys.modules:  # importing it set OMP_NUM_THREADS=1: say so next to the figures
        print(f"  (ultralytics was imported; torch threads {torch.get_num_threads()})")
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
