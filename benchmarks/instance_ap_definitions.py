"""Mask AP of one YOLO-seg model by three definitions: ultralytics' val, pycocotools on val's own
predictions, and medseg (pycocotools on the full-resolution masks ``medseg predict-images`` writes).

The same weights, the same validation images, three numbers that differ by definition:

1. ``ultralytics val``: ``YOLO(best.pt).val()`` (confidence 0.001, masks compared at a quarter of the
   letterboxed input size), its ``seg.map`` / ``seg.map50``;
2. ``pycocotools on val's predictions``: the ``predictions.json`` the same val writes with
   ``save_json=True`` (masks at full input size, scaled to the image) scored by pycocotools'
   ``COCOeval(iouType="segm")`` against the reference instance masks; and the same detections made one
   instance map per image (a higher score wins overlapping pixels), as an instance PNG holds them;
3. ``medseg``: ``predict_image_folder`` (``medseg predict-images``: confidence 0.25, masks from the
   prototypes upsampled to the full image) scored by ``evaluate_instances``
   (``medseg evaluate-images --task instance``, which is pycocotools at full resolution); and the same
   at val's confidence 0.001 (still one instance map per image: where masks overlap the higher score wins).

Without ``--run``, the script writes the synthetic instance set (``write_shapes_instances``, 128 x 128,
32 training and 8 validation images) or, with ``--dataset nuclei``, the real Data Science Bowl nuclei tiles
(:mod:`medseg.data.nuclei`: 12 training and 4 validation tiles of 128 x 128, 37 validation nuclei), converts it
to the YOLO layout and trains
``pipelines/yolo_seg_images_cpu.yaml`` (random init, at most 6 minutes on 2 cores) first.
ultralytics' val runs in a child process (its import changes PIL and thread settings).

    python benchmarks/instance_ap_definitions.py [--dataset shapes|nuclei] [--run RUN --reference DIR] [--minutes 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ultralytics_val(run: Path, out: Path) -> dict:
    """Child process: ultralytics' own val of the run's best weights with ``save_json``."""
    os.environ.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false",
                       "YOLO_CONFIG_DIR": str(run / "yolo" / "config")})
    from ultralytics import YOLO

    info = json.loads((run / "export" / "model.json").read_text())
    imgsz = int(info["model"]["config"]["imgsz"])
    model = YOLO(str(run / "yolo" / "train" / "weights" / "best.pt"))
    res = model.val(data=str(run / "yolo" / "data.yaml"), imgsz=imgsz, batch=8, device="cpu", workers=0,
                    save_json=True, plots=False, project=str(out), name="val", verbose=False)
    return {"map": float(res.seg.map), "map50": float(res.seg.map50),
            "predictions": str(Path(res.save_dir) / "predictions.json")}


def pycocotools_on(predictions: Path, reference: Path) -> dict:
    """ultralytics' ``predictions.json`` (image ids = file stems) scored against the reference masks."""
    from medseg.evaluation.instances import reference_coco
    from medseg.metrics.instance import coco_stats, run_cocoeval

    gt, stems = reference_coco(reference)
    results = [{**r, "image_id": stems[str(r["image_id"])]} for r in json.loads(predictions.read_text())]
    stats = coco_stats(run_cocoeval(gt, results, max_detections=100))
    maps = as_instance_maps(results)
    map_stats = coco_stats(run_cocoeval(gt, maps, max_detections=100))
    return {"map": stats["AP"], "map50": stats["AP50"], "detections": len(results),
            "map_as_maps": map_stats["AP"], "map50_as_maps": map_stats["AP50"], "kept": len(maps)}


def as_instance_maps(predictions: list[dict]) -> list[dict]:
    """ultralytics' overlapping per-detection masks made into one instance map per image as
    ``predict-images`` writes it (:func:`medseg.models.apply2d.ordered_segments`: the higher score wins an
    overlap, detections left without a pixel are dropped), back as COCO results
    (:func:`medseg.evaluation.instances.segment_results`, as ``evaluate-images`` builds them)."""
    from pycocotools import mask as mask_utils

    from medseg.evaluation.instances import segment_results
    from medseg.models.apply2d import ordered_segments

    by_image: dict = {}
    for r in predictions:
        by_image.setdefault(r["image_id"], []).append(r)
    out = []
    for image_id, rs in by_image.items():
        h, w = rs[0]["segmentation"]["size"]
        masks = []
        for r in rs:
            counts = r["segmentation"]["counts"]
            rle = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
            masks.append(mask_utils.decode(rle).astype(bool))
        ids, table = ordered_segments(masks, [r["category_id"] for r in rs], [r["score"] for r in rs], (h, w))
        info = {t["id"]: (t["class"], t["score"]) for t in table}
        out += segment_results(image_id, ids, info, where=f"image {image_id}")
    return out


def _validation_copy(dataset: Path, work: Path) -> tuple[Path, Path]:
    """The validation images, and an instance_masks reference of them only."""
    stems = json.loads((dataset / "splits.json").read_text())["val"]
    images, ref = work / "val_images", work / "val_reference"
    for folder in (images, ref / "images", ref / "masks", ref / "instance_classes"):
        folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(dataset / "classes.json", ref)
    for stem in stems:
        shutil.copy(dataset / "images" / f"{stem}.png", images)
        shutil.copy(dataset / "images" / f"{stem}.png", ref / "images")
        shutil.copy(dataset / "masks" / f"{stem}.png", ref / "masks")
        if (dataset / "instance_classes" / f"{stem}.json").is_file():  # absent: every instance class 1
            shutil.copy(dataset / "instance_classes" / f"{stem}.json", ref / "instance_classes")
    return images, ref


def _train(work: Path, minutes: float, epochs: int | None, nuclei: Path | None) -> tuple[Path, Path]:
    from medseg.data.instance_convert import convert_instances
    from medseg.training import train

    if nuclei is not None:  # the real Data Science Bowl tiles (medseg.data.nuclei): 12 training, 4 validation
        from medseg.data.nuclei import write_dsb_nuclei

        dataset = write_dsb_nuclei(work / "nuclei", nuclei, task="instance", tile=128)
    else:
        from medseg.data.shapes import write_shapes_instances

        dataset = write_shapes_instances(work / "shapes", n_train=32, n_val=8, size=(128, 128), seed=0, max_objects=3)
    convert_instances(dataset, work / "yolo", to="yolo_seg")
    t0 = time.monotonic()
    run = train(ROOT / "pipelines" / "yolo_seg_images_cpu.yaml", out_dir=work / "run", overrides=[
        f"dataset.root={work / 'yolo'}", f"train.max_minutes={minutes}", "train.progress_bar=false",
        *([f"train.max_epochs={epochs}"] if epochs else [])])
    print(f"trained {run} in {time.monotonic() - t0:.0f} s")
    return run, dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a yolo_seg run folder of medseg train (default: train one)")
    ap.add_argument("--reference", type=Path, help="instance_masks dataset of the run (with splits.json)")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, help="train.max_epochs (default: the pipeline's 80; the 12 nuclei tiles "
                                               "make 2 steps an epoch, so --epochs 1000 lets --minutes decide)")
    ap.add_argument("--dataset", choices=("shapes", "nuclei"), default="shapes",
                    help="what to train on without --run: the synthetic shapes, or the real Data Science Bowl "
                         "nuclei tiles (needs the stardist wheel: make nuclei-data)")
    ap.add_argument("--nuclei-source", type=Path, default=ROOT / ".cache" / "stardist",
                    help="the stardist wheel, or the folder holding it (default: where make nuclei-data puts it)")
    ap.add_argument("--val-child", nargs=2, metavar=("RUN", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.val_child:
        print(json.dumps(ultralytics_val(Path(args.val_child[0]), Path(args.val_child[1]))))
        return
    from medseg.evaluation.instances import evaluate_instances
    from medseg.inference.images import predict_image_folder
    from medseg.inference.yolo import predict_yolo_folder

    work = Path(tempfile.mkdtemp(prefix="instance_ap_"))
    load_before = os.getloadavg()
    if args.run is None:
        source = None
        if args.dataset == "nuclei":
            from medseg.data.nuclei import find_source

            source = find_source(args.nuclei_source) if args.nuclei_source.is_dir() else args.nuclei_source
            if source is None:
                raise SystemExit(f"{args.nuclei_source}: no stardist wheel (run make nuclei-data)")
        run, dataset = _train(work, args.minutes, args.epochs, source)
    elif args.reference is None:
        raise SystemExit("--run needs --reference (the instance_masks dataset it was trained on)")
    else:
        run, dataset = args.run, args.reference
    images, reference = _validation_copy(dataset, work)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
    child = subprocess.run([sys.executable, __file__, "--val-child", str(run), str(work / "ultralytics")],
                           env=env, capture_output=True, text=True, check=True)
    val = json.loads(child.stdout.strip().splitlines()[-1])
    own = pycocotools_on(Path(val["predictions"]), reference)
    predict_image_folder(run, images, work / "pred", progress=False)
    ours = evaluate_instances(work / "pred", reference, work / "eval").summary["overall"]
    predict_yolo_folder(run, images, work / "pred_low", conf=0.001)  # val's confidence, the rest as predict-images
    low = evaluate_instances(work / "pred_low", reference, work / "eval_low").summary["overall"]
    print(f"one YOLO-seg model ({run}), {len(list(images.iterdir()))} validation images; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print("| definition | mask mAP50-95 | mask mAP50 |\n|---|---|---|")
    print(f"| ultralytics val (confidence 0.001, masks at 1/4 of the input) | {val['map']:.3f} | {val['map50']:.3f} |")
    print(f"| pycocotools on val's predictions.json ({own['detections']} detections, full size) | {own['map']:.3f} "
          f"| {own['map50']:.3f} |")
    print(f"| the same predictions made one instance map per image (higher score wins, {own['kept']} kept) | "
          f"{own['map_as_maps']:.3f} | {own['map50_as_maps']:.3f} |")
    print(f"| medseg evaluate-images --task instance on predict-images (confidence 0.25, full resolution, "
          f"{ours['pred_instances']} instances) | {ours['ap']:.3f} | {ours['ap50']:.3f} |")
    print(f"| the same at val's confidence 0.001 (an instance map: a higher score wins overlaps; "
          f"{low['pred_instances']} instances) | {low['ap']:.3f} | {low['ap50']:.3f} |")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
