"""Training steps per second: ``medseg train`` (Lightning engine) vs a plain MONAI loop.

Same network (MONAI DynUNet via ``create_model``), same patch and batch size, same
preprocessed data, same random patch sampling (MONAI ``RandCropByPosNegLabeld`` +
``RandFlipd``), same loss (DiceCE) and optimiser (AdamW); no validation. Speed is the
steady state: steps between the end of the first and the end of the last step. Runs
alternate (plain, medseg, plain, medseg, ...) so that machine load affects both alike.

    python benchmarks/train_throughput.py --steps 30 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

RECIPE = """
preprocess: [MedsegOrientd, MedsegSpacingd, MedsegNormalized, MedsegToArrayd,
             {SpatialPadd: {spatial_size: "@crop_size"}}, {FgBgToIndicesd: {keys: label}}]
train:
  - RandCropByPosNegLabeld: {label_key: label, spatial_size: "@crop_size", pos: 2, neg: 1, num_samples: 1,
                             fg_indices_key: label_fg_indices, bg_indices_key: label_bg_indices}
  - RandFlipd: {spatial_axis: [2], prob: 0.5}
"""


def plain_monai(cases, model_config, patch, batch, steps, lr, seed) -> float:
    """A hand-written MONAI/PyTorch loop; returns steady-state steps per second."""
    import torch
    from monai.data import DataLoader, Dataset
    from monai.losses import DiceCELoss
    from monai.networks.nets import DynUNet
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd

    torch.manual_seed(seed)
    n = len(model_config["filters"])
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    net = DynUNet(3, model_config["in_channels"], model_config["out_channels"], [[3, 3, 3]] * n, strides,
                  strides[1:], filters=model_config["filters"], norm_name="instance", res_block=False)
    tf = Compose([
        RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=patch, pos=2, neg=1,
                               num_samples=1, fg_indices_key="label_fg_indices", bg_indices_key="label_bg_indices"),
        RandFlipd(keys=["image", "label"], spatial_axis=[2], prob=0.5),
    ]).set_random_state(seed)
    data = [{k: v for k, v in c.items() if k != "case_id"} for c in cases] * (steps * batch // len(cases) + 1)
    loader = DataLoader(Dataset(data, tf), batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    times = []
    for i, b in enumerate(loader):
        if i == steps:
            break
        opt.zero_grad(set_to_none=True)
        # plain tensors, as medseg feeds them (a MetaTensor batch would slow every op down)
        x, y = b["image"].as_tensor().float(), b["label"].as_tensor().long()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--filters", type=int, nargs="+", default=[8, 16, 32, 64])
    args = ap.parse_args()

    import logging

    import torch

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from medseg.data.cohort import write_cohort
    from medseg.data.datasets import load_dataset
    from medseg.models.export import read_info
    from medseg.training.planning import plan_dataset, save_plan
    from medseg.training import train
    from medseg.training.engine import preprocess_cases
    from medseg.transforms.recipes import build_recipe, load_recipe

    tmp = Path(tempfile.mkdtemp(prefix="medseg_bench_"))
    root = write_cohort(tmp / "data", 4, shape=(64, 64, 48), spacing=(3.0, 3.0, 3.0), seed=7)
    ds = load_dataset(root)
    plan = plan_dataset(ds)
    save_plan(plan, tmp / "plan.json")
    (tmp / "recipe.yaml").write_text(RECIPE)
    model_config = {"in_channels": 1, "out_channels": ds.num_classes, "filters": args.filters}
    ctx = {"patch_size": args.patch, "crop_size": args.patch, "spatial_dims": 3,
           "preprocessing": plan["preprocessing"]}
    cases = preprocess_cases(ds, [c.case_id for c in ds.cases], build_recipe(load_recipe(tmp / "recipe.yaml"),
                                                                              "preprocess", ctx))
    cfg = {
        "dataset": {"root": str(root), "n_folds": 2, "validate_data": False},
        "plan": {"path": str(tmp / "plan.json")},
        "model": {"name": "unet3d", "config": {"filters": args.filters}},
        "transforms": {"recipe": str(tmp / "recipe.yaml")},
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 1e-4},
        "schedule": {"name": "constant"},
        "train": {"max_steps": args.steps, "iterations_per_epoch": args.steps, "patch_size": args.patch,
                  "batch_size": args.batch, "val_every_n_epochs": 1000, "progress_bar": False,
                  "accelerator": "cpu", "gradient_clip": None},
    }
    plain, ours = [], []
    for r in range(args.repeats):
        plain.append(plain_monai(cases[:2], model_config, args.patch, args.batch, args.steps, 0.003, r))
        run = train(cfg, out_dir=tmp / f"run{r}", overrides=[f"train.seed={r}"])
        ours.append(read_info(run)["training"]["steps_per_second"])
    p, m = statistics.median(plain), statistics.median(ours)
    print(f"DynUNet filters {args.filters}, patch {args.patch}, batch {args.batch}, {args.steps} steps x "
          f"{args.repeats} repeats; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load avg {tuple(round(x, 1) for x in os.getloadavg())}")
    print(f"{'loop':24s} {'steps/s (median)':>18s}  runs")
    print(f"{'plain MONAI loop':24s} {p:18.3f}  {[round(x, 3) for x in plain]}")
    print(f"{'medseg train':24s} {m:18.3f}  {[round(x, 3) for x in ours]}")
    print(f"medseg / plain: {m / p:.3f}  (overhead {100 * (1 - m / p):+.1f}%)")


if __name__ == "__main__":
    main()
