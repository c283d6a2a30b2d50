"""Quality of a training recipe on a synthetic CT cohort: liver Dice on held-out studies.

Writes a phantom cohort (nnU-Net format), runs ``medseg train PIPELINE`` with a time budget,
then predicts every held-out (validation-fold) study with the exported model and scores it
against the reference label map on the study's original grid.

    python benchmarks/train_quality.py --pipeline pipelines/unet3d_ct.yaml --minutes 10 --out /tmp/q3d
    python benchmarks/train_quality.py --pipeline pipelines/unet2d_mri.yaml --minutes 10 --out /tmp/q2d

Prints measured numbers only (wall times, steps, Dice per held-out case).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def predict_case(model, info: dict, image, device: str = "cpu") -> np.ndarray:
    """Label map of ``image`` (a Volume) on its own grid, with the export's preprocessing."""
    import torch
    from monai.inferers import sliding_window_inference

    from medseg.transforms.preprocess import preprocess_pair, resample_to_grid, to_canonical

    canon = to_canonical(image, info["preprocessing"].get("orientation", "RAS"))
    pre, _ = preprocess_pair(image, None, info["preprocessing"])
    x = torch.from_numpy(pre.array[None, None] if not pre.channel_first else pre.array[None]).to(device)
    inf = info["inference"]
    with torch.no_grad():
        if info["spatial_dims"] == 3:
            logits = sliding_window_inference(x, inf["patch_size"], inf["batch_size"], model, overlap=inf["overlap"],
                                              mode=inf.get("mode", "gaussian"))
        else:
            sl = x[0].permute(3, 0, 1, 2)
            logits = torch.cat([sliding_window_inference(sl[i:i + 16], inf["patch_size"], inf["batch_size"], model,
                                                         overlap=inf["overlap"]) for i in range(0, sl.shape[0], 16)])
            logits = logits.permute(1, 2, 3, 0)[None]
    labels = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
    from medseg.volume import Volume

    pred = Volume(labels, pre.affine, is_label=True)
    back = resample_to_grid(pred, canon.spatial_shape, canon.affine, order=0)
    return to_canonical(back, image.orientation).array


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default="pipelines/unet3d_ct.yaml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 64, 48])
    ap.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import torch

    from medseg.data.cohort import write_cohort
    from medseg.data.datasets import load_case, load_dataset
    from medseg.metrics.overlap import dice
    from medseg.models.export import load_exported
    from medseg.training import train

    t0 = time.monotonic()
    data_root = args.out / "data"
    root = write_cohort(data_root, args.cases, shape=args.shape, spacing=args.spacing, seed=100)
    t_data = time.monotonic() - t0
    overrides = [f"dataset.root={root}", f"train.max_minutes={args.minutes}", f"dataset.n_folds={args.folds}",
                 "train.progress_bar=false", *args.overrides]
    t1 = time.monotonic()
    run = train(args.pipeline, out_dir=args.out / "run", overrides=overrides)
    t_train = time.monotonic() - t1
    model, info = load_exported(run)
    ds = load_dataset(root)
    rows = []
    t2 = time.monotonic()
    for cid in info["training"]["val_cases"]:
        image, label = load_case(ds.case(cid))
        pred = predict_case(model, info, image)
        rows.append((cid, dice(pred == 1, label.array == 1)))
    t_pred = time.monotonic() - t2
    print(f"pipeline {args.pipeline}  overrides {args.overrides}")
    print(f"cohort: {args.cases} phantom CT studies {args.shape} at {args.spacing} mm "
          f"({len(info['training']['train_cases'])} train / {len(rows)} held out); "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load avg {os.getloadavg()}")
    print(f"wall: data {t_data:.1f} s, medseg train {t_train:.1f} s (budget {args.minutes} min of fitting), "
          f"predict {t_pred:.1f} s; steps {info['training']['global_step']}, epochs {info['training']['epochs']}")
    print("case        liver Dice")
    for cid, d in rows:
        print(f"{cid:10s}  {d:.4f}")
    print(f"mean liver Dice on held-out studies: {np.mean([d for _, d in rows]):.4f}")
    (args.out / "quality.json").write_text(json.dumps({"rows": rows, "train_s": t_train, "info": info["training"]},
                                                       indent=2))


if __name__ == "__main__":
    main()
