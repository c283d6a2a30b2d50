"""Published models: nnU-Net v2 folders (nnUNetPredictor) and a MONAI bundle (ConfigWorkflow) vs medseg.

Two model folders are made with nnU-Net's own code (random weights, 3d_fullres, CT
normalisation): a few classes and 24 classes; one synthetic CT (default 256x256x150 at
1.5x1.5x2 mm; ``--shape 512 512 300`` for the issue's size). Every run is a fresh process,
so the peak memory (VmHWM) is that run's alone. Times are split into preprocessing
(reading included), network (sliding window) and export (back to the input grid and the
NIfTI written). Labels are compared voxel by voxel.

A MONAI bundle (a MONAI UNet 16-32-64-128, 3 classes, random weights, ``Spacingd`` to 1.5x1.5x2 mm,
``SlidingWindowInferer`` 96^3, ``Invertd`` + ``SaveImaged``) is run by MONAI's own ``ConfigWorkflow``
(its ``run``: reading, preprocessing, network, inverting and saving; split by timing the bundle's own
``preprocessing``, ``inferer`` and ``postprocessing`` objects) and by medseg (``medseg import monai-bundle``
then the segmenter): stage times, total time, VmHWM, labels compared, export ratio.

    python benchmarks/published_models.py [--shape 256 256 150] [--tta] [--no-bundle | --no-nnunet] [--confident]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _make_models(root: Path) -> dict[str, Path]:
    from tests.test_nnunet import dataset, make_model_folder, make_plans

    models = {}
    for name, n in (("4 classes", 4), ("24 classes", 24)):
        plans = make_plans("3d_fullres", spacing=[3.0, 3.0, 3.0], patch=[64, 64, 64], stages=4, features=8)
        labels = {"background": 0, **{f"organ_{i}": i for i in range(1, n)}}
        models[name] = make_model_folder(root / name.replace(" ", "_"), plans, dataset(labels), "3d_fullres")
    return models


def _make_ct(path: Path, shape: tuple[int, int, int]) -> Path:
    import numpy as np

    from medseg.io import save
    from medseg.volume import Volume

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij"))
    body = (grid ** 2).sum(0) < 0.8
    arr = np.where(body, 40, -1000).astype(np.int16)
    arr += (150 * (((grid - 0.3) ** 2).sum(0) < 0.05)).astype(np.int16)
    arr += rng.normal(0, 20, shape).astype(np.int16)
    affine = np.diag([-1.5, 1.5, 2.0, 1.0])
    return save(Volume(arr, affine, {"modality": "CT"}), path)


BUNDLE_NETWORK = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                  "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2, "norm": "@norm_kind"}


def _make_bundle(root: Path, image: Path, out_dir: Path) -> tuple[Path, Path]:
    """The bundle (MONAI's own config format, random weights) and its medseg import."""
    import tests.test_monai_bundle as tb
    from medseg.models.monai_bundle import import_bundle

    tb.NETWORK_DEF = BUNDLE_NETWORK  # the test's bundle writer, with a network of realistic size
    config = tb.inference_json(image, out_dir)
    config["pixdim"] = [1.5, 1.5, 2.0]
    config["inferer"] = {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 1,
                         "overlap": 0.25}
    bundle = tb.make_bundle(root, config)
    return bundle, import_bundle(bundle, root / "medseg_export")


def confident_logits(shape: tuple[int, ...], seed: int = 0):  # noqa: ANN201
    """Float16 logits ``[C, *grid]`` of a confident model: a label map of blocks (a few voxels to tens of voxels
    across), the chosen class 3 above the others, plus noise of 0.5. Random-weight networks give noisy,
    near-tied logits everywhere, which no trained model does; ``--confident`` replaces both runners' network
    output (after the network ran) with this same array, so the export is compared on trained-like output."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, shape[0], (6, 6, 6))
    blocks = ndimage.zoom(coarse, [n / 6 for n in shape[1:]], order=0)[tuple(slice(0, n) for n in shape[1:])]
    logits = rng.normal(0, 0.5, shape).astype(np.float32)
    for c in range(shape[0]):
        logits[c] += 3.0 * (blocks == c)
    return logits.astype(np.float16)


def _medseg_run(seg, image: str, out: str, export_key: str) -> tuple[dict, object]:  # noqa: ANN001
    """Read, segment and write with a loaded medseg segmenter; its timings split into the table's columns."""
    import nibabel  # noqa: F401 - imported before the clock, as nnU-Net's SimpleITK reader is

    from medseg.io import load, save

    t_load = time.perf_counter()
    vol = load(image)
    t_read = time.perf_counter()
    result = seg.predict(vol)
    t_pred = time.perf_counter()
    save(result, out + ".nii.gz")
    t_exp = time.perf_counter()
    lt = seg.last_timings
    return ({"preprocess": (t_read - t_load) + lt["preprocess_s"], "network": lt["network_s"],
             "export": lt[export_key] + (t_exp - t_pred), "run": t_exp - t_load}, result.array)


def _time_monai_stages(workflow) -> dict:  # noqa: ANN001
    """Seconds the bundle's own ``preprocessing`` (reading included), ``inferer`` and ``postprocessing``
    (argmax, ``Invertd``, ``SaveImaged``) objects spend in ``__call__`` during the run, by wrapping their
    classes' ``__call__`` for those three instances only (the config's parsed objects, as its evaluator uses)."""
    spent = {"preprocessing": 0.0, "inferer": 0.0, "postprocessing": 0.0}
    timed = {id(workflow.parser.get_parsed_content(key)): key for key in spent}
    for cls in {type(workflow.parser.get_parsed_content(key)) for key in spent}:
        def timed_call(self, *args, _real=cls.__call__, **kwargs):  # noqa: ANN001, ANN202
            if id(self) not in timed:
                return _real(self, *args, **kwargs)
            t = time.perf_counter()
            try:
                return _real(self, *args, **kwargs)
            finally:
                spent[timed[id(self)]] += time.perf_counter() - t

        cls.__call__ = timed_call
    return spent


def worker(runner: str, model: str, image: str, out: str, tta: bool) -> dict:
    """One run in this (fresh) process; returns timings, VmHWM and writes the labels to ``out``."""
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    if runner == "nnunet":
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

        p = nnUNetPredictor(use_mirroring=tta, perform_everything_on_device=False, device=torch.device("cpu"),
                            allow_tqdm=False)
        p.initialize_from_trained_model_folder(model, (0,), "checkpoint_final.pth")
        t_load = time.perf_counter()
        img, props = SimpleITKIO().read_images([image])
        data, _, props = DefaultPreprocessor(verbose=False).run_case_npy(
            img, None, props, p.plans_manager, p.configuration_manager, p.dataset_json)
        t_pre = time.perf_counter()
        logits = p.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        if os.environ.get("MEDSEG_BENCH_CONFIDENT"):
            logits = torch.from_numpy(confident_logits(tuple(logits.shape)))
        t_net = time.perf_counter()
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, p.plans_manager, p.configuration_manager, p.label_manager, props)
        SimpleITKIO().write_seg(seg, out + ".nii.gz", props)
        labels = np.moveaxis(np.asarray(seg), (0, 1, 2), (2, 1, 0))
        t_exp = time.perf_counter()
        times = {"preprocess": t_pre - t_load, "network": t_net - t_pre, "export": t_exp - t_net}
    elif runner == "monai":
        from monai.bundle import ConfigWorkflow

        bundle = Path(model)
        workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                                  meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="infer",
                                  logging_file=False)
        workflow.initialize()
        spent = _time_monai_stages(workflow)
        t_load = time.perf_counter()
        workflow.run()
        workflow.finalize()
        t_run = time.perf_counter()
        from medseg.io import load

        written = next(Path(out + "_monai").glob("*_seg.nii.gz"))
        labels = np.asarray(load(written).array).reshape(load(image).spatial_shape)
        times = {"preprocess": spent["preprocessing"], "network": spent["inferer"],
                 "export": spent["postprocessing"], "run": t_run - t_load}
    else:
        from medseg.inference.monai_bundle import BundleSegmenter
        from medseg.inference.nnunet import NnunetSegmenter

        if runner == "medseg_bundle":
            times, labels = _medseg_run(BundleSegmenter.from_path(model, device="cpu"), image, out, "to_input_grid_s")
        else:
            seg = NnunetSegmenter.from_path(model, device="cpu", tta=tta)
            if os.environ.get("MEDSEG_BENCH_CONFIDENT"):
                network = seg.network_logits

                def confident(pre):  # noqa: ANN001, ANN202 - the network still runs (and is timed); its output is replaced
                    import torch

                    real = network(pre)
                    return torch.from_numpy(confident_logits(tuple(real.shape)))

                seg.network_logits = confident
            times, labels = _medseg_run(seg, image, out, "export_s")
    np.save(out + ".npy", labels)
    return {**times, "total": time.perf_counter() - t0, "vmhwm_mb": _vmhwm_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 256, 150])
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--no-bundle", action="store_true", help="leave out the MONAI bundle rows")
    ap.add_argument("--no-nnunet", action="store_true", help="leave out the nnU-Net rows (the bundle rows only)")
    ap.add_argument("--confident", action="store_true",
                    help="replace both runners' nnU-Net logits by the same confident, blocky logits (export comparison)")
    ap.add_argument("--worker", nargs=4, metavar=("RUNNER", "MODEL", "IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, tta=args.tta)))
        return
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="published_models_"))
    env = {**os.environ, "nnUNet_raw": str(tmp), "nnUNet_preprocessed": str(tmp), "nnUNet_results": str(tmp),
           **({"MEDSEG_BENCH_CONFIDENT": "1"} if args.confident else {})}
    os.environ.update({k: v for k, v in env.items() if k.startswith("nnUNet_")})  # nnU-Net's own process only
    models = {} if args.no_nnunet else _make_models(tmp / "models")
    image = _make_ct(tmp / "ct_0000.nii.gz", tuple(args.shape))
    load_before = os.getloadavg()
    rows = []
    for name, folder in models.items():
        res = {}
        for runner in ("nnunet", "medseg"):
            out = str(tmp / f"{runner}_{name.replace(' ', '_')}")
            cmd = [sys.executable, __file__, "--worker", runner, str(folder), str(image), out] + (["--tta"] if args.tta else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res[runner] = json.loads(proc.stdout.strip().splitlines()[-1])
            res[runner]["labels"] = np.load(out + ".npy")
        agree = float((res["nnunet"]["labels"] == res["medseg"]["labels"]).mean())
        rows.append((name, res, agree))
    bundle_row = None
    if not args.no_bundle:
        bundle, export = _make_bundle(tmp / "bundle", image, Path(str(tmp / "monai_bundle") + "_monai"))
        res = {}
        for runner, folder in (("monai", bundle), ("medseg_bundle", export)):
            out = str(tmp / "monai_bundle")
            cmd = [sys.executable, __file__, "--worker", runner, str(folder), str(image), out]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res[runner] = json.loads(proc.stdout.strip().splitlines()[-1])
            res[runner]["labels"] = np.load(out + ".npy")
        bundle_row = (res, float((res["monai"]["labels"] == res["medseg_bundle"]["labels"]).mean()))
    load_after = os.getloadavg()
    print(f"CT {'x'.join(map(str, args.shape))} (1.5x1.5x2 mm), 3d_fullres at 3 mm, patch 64^3, 1 fold, "
          f"TTA {'on' if args.tta else 'off'}, CPU x{os.cpu_count()}"
          + (", network output replaced by the same confident logits in both runners" if args.confident else ""))
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    head = f"{'model':<11} {'runner':<7} {'pre s':>7} {'net s':>7} {'export s':>9} {'total s':>8} {'VmHWM MB':>9}"
    print(head + f" {'export x':>9} {'labels equal':>13}")
    for name, res, agree in rows:  # empty with --no-nnunet
        for runner in ("nnunet", "medseg"):
            r = res[runner]
            ratio = res["nnunet"]["export"] / r["export"] if runner == "medseg" else 1.0
            print(f"{name:<11} {runner:<7} {r['preprocess']:7.2f} {r['network']:7.2f} {r['export']:9.2f} "
                  f"{r['total']:8.2f} {r['vmhwm_mb']:9.0f} {ratio:9.2f} "
                  f"{(f'{agree * 100:.4f}%' if runner == 'medseg' else ''):>13}")
    if bundle_row is not None:
        res, agree = bundle_row
        print("\nMONAI bundle (UNet 16-32-64-128, 3 classes, Spacingd 1.5x1.5x2 mm, sliding window 96^3, overlap 0.25)")
        print(f"{'runner':<22} {'pre s':>7} {'net s':>7} {'export s':>9} {'run s':>7} {'total s':>8} {'VmHWM MB':>9} "
              f"{'export x':>9} {'labels equal':>13}")
        for runner, label in (("monai", "MONAI ConfigWorkflow"), ("medseg_bundle", "medseg")):
            r = res[runner]
            ratio = res["monai"]["export"] / r["export"]
            print(f"{label:<22} {r['preprocess']:7.2f} {r['network']:7.2f} {r['export']:9.2f} {r['run']:7.2f} "
                  f"{r['total']:8.2f} {r['vmhwm_mb']:9.0f} {ratio:9.2f} "
                  f"{(f'{agree * 100:.4f}%' if runner == 'medseg_bundle' else ''):>13}")


if __name__ == "__main__":
    main()
