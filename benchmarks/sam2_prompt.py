"""SAM2 on CPU (or CUDA when present): time per prompt, per encoded slice, per propagated slice,
and box-prompted Dice before/after a short fine-tune on a synthetic CT cohort.

Random-initialised SAM2.1 Hiera-tiny (no weights are downloaded; the code path is the
one used with Meta's checkpoints). Prints measured numbers only.

    python benchmarks/sam2_prompt.py                       # sizes 1024 and 512, fine-tune at 256
    python benchmarks/sam2_prompt.py --sizes 512 --finetune-steps 0 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_prompting(size: int, n_slices: int, repeats: int, device: str) -> dict[str, float]:
    from medseg.data.phantom import make_phantom
    from medseg.sam import SlicePredictor, build_sam2, propagate, prompts_from_mask

    image, labels = make_phantom((256, 256, n_slices), (1.5, 1.5, 5.0), seed=0)
    net = build_sam2("tiny", image_size=size, device=device)
    predictor = SlicePredictor(net, image)
    prompt = prompts_from_mask(labels, kind="box", labels=[1], key_slices="center")[0]
    point = prompts_from_mask(labels, kind="points", labels=[1], key_slices="center")[0]
    predictor.encode(prompt.slice_index)  # warm-up
    predictor._cache.clear()

    def encode() -> None:
        predictor._cache.clear()
        predictor.encode(prompt.slice_index)

    t_encode = _median_time(encode, repeats)
    enc = predictor.encode(prompt.slice_index)
    enc.predict_prompt(prompt)
    t_box = _median_time(lambda: enc.predict_prompt(prompt), max(5, 4 * repeats))
    t_point = _median_time(lambda: enc.predict_prompt(point), max(5, 4 * repeats))
    t0 = time.perf_counter()
    propagate(net, image, [prompt])
    t_prop = (time.perf_counter() - t0) / n_slices
    return {"encode_s": t_encode, "box_prompt_s": t_box, "point_prompt_s": t_point, "propagate_s_per_slice": t_prop}


def bench_finetune(steps: int, size: int, n_train: int, n_test: int, device: str) -> dict[str, float]:
    from medseg.data.phantom import make_phantom
    from medseg.sam import build_sam2
    from medseg.training.sam2 import FinetuneConfig, PromptSimulation, evaluate_prompted, finetune

    shape, spacing = (64, 64, 24), (5.0, 5.0, 10.0)
    train = [make_phantom(shape, spacing, seed=100 + i) for i in range(n_train)]
    test = [make_phantom(shape, spacing, seed=200 + i) for i in range(n_test)]
    import torch

    torch.manual_seed(0)
    base = build_sam2("tiny", image_size=size, device=device)
    from medseg.models.sam2 import save_checkpoint

    init = Path("/tmp") / f"sam2_bench_init_{size}.pt"
    save_checkpoint(base, init)
    before = evaluate_prompted(base, test, kinds=("box",))
    t0 = time.perf_counter()
    module = finetune({"config": "tiny", "image_size": size}, train, init_checkpoint=str(init),
                      config=FinetuneConfig(steps=steps, batch_size=8, lr=1e-3,
                                            prompt=PromptSimulation(box_jitter=0.05)),
                      key_slices="all", accelerator="gpu" if device.startswith("cuda") else "cpu")
    t_train = time.perf_counter() - t0
    after = evaluate_prompted(module.net.to(device), test, kinds=("box",))
    init.unlink(missing_ok=True)

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    return {"dice_before": mean(before, "dice"), "dice_after": mean(after, "dice"),
            "nsd_before": mean(before, "nsd"), "nsd_after": mean(after, "nsd"),
            "biou_before": mean(before, "boundary_iou"), "biou_after": mean(after, "boundary_iou"),
            "train_s": t_train, "steps": steps, "prompts": len(before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--slices", type=int, default=8, help="slices propagated through")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--finetune-size", type=int, default=256)
    args = parser.parse_args()
    import torch

    from medseg.models.sam2 import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} model=sam2.1_hiera_t (random init)")
    print(f"{'image size':>10} {'encode/slice s':>15} {'box prompt ms':>14} {'point prompt ms':>16} "
          f"{'propagate s/slice':>18} {'re-encode/prompt ratio':>23}")
    for size in args.sizes:
        r = bench_prompting(size, args.slices, args.repeats, device)
        ratio = (r["encode_s"] + r["box_prompt_s"]) / r["box_prompt_s"]
        print(f"{size:>10} {r['encode_s']:>15.3f} {1000 * r['box_prompt_s']:>14.1f} {1000 * r['point_prompt_s']:>16.1f} "
              f"{r['propagate_s_per_slice']:>18.3f} {ratio:>22.0f}x", flush=True)
    if args.finetune_steps > 0:
        r = bench_finetune(args.finetune_steps, args.finetune_size, 4, 2, device)
        print(f"\nfine-tune (image size {args.finetune_size}, frozen+cached encoder, {r['steps']} steps x 8 slices, "
              f"4 train / 2 test phantoms, {r['prompts']} box prompts on each label's largest slice): {r['train_s']:.1f} s")
        print(f"{'':>8} {'Dice':>7} {'NSD@2mm':>8} {'BIoU':>7}")
        print(f"{'before':>8} {r['dice_before']:>7.3f} {r['nsd_before']:>8.3f} {r['biou_before']:>7.3f}")
        print(f"{'after':>8} {r['dice_after']:>7.3f} {r['nsd_after']:>8.3f} {r['biou_after']:>7.3f}")


if __name__ == "__main__":
    main()
