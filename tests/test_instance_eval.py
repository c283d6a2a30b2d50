"""``medseg evaluate-images --task instance|panoptic``: mask AP equals pycocotools' own COCOeval on the same
JSONs; PQ equals the arithmetic written out here; Boundary IoU of matched instances; the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from medseg.cli.main import app
from medseg.data.instance_convert import write_instance_png
from medseg.errors import InputError
from medseg.evaluation.instances import boundary_iou_of_pair, evaluate_instances
from medseg.metrics.boundary import boundary_iou
from medseg.evaluation.panoptic import evaluate_panoptic
from medseg.metrics.instance import panoptic_stats, panoptic_summary

H, W = 40, 60


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode()}


# image 1: two cats and a dog (and a crowd of cats); image 2: one dog
GT_OBJECTS = {
    1: [(1, _box(2, 12, 2, 14), 0), (1, _box(20, 34, 5, 20), 0), (2, _box(5, 25, 30, 50), 0),
        (1, _box(30, 40, 40, 60), 1)],
    2: [(2, _box(10, 30, 10, 40), 0)],
}
# (image, class, mask, score): good, shifted, wrong class, a false positive, one on the crowd region
PREDICTIONS = [
    (1, 1, _box(2, 12, 2, 13), 0.9), (1, 1, _box(22, 34, 7, 20), 0.6), (1, 1, _box(5, 25, 30, 50), 0.5),
    (1, 2, _box(5, 24, 31, 50), 0.8), (2, 2, _box(12, 30, 10, 36), 0.7), (2, 1, _box(0, 5, 50, 60), 0.95),
    (1, 1, _box(31, 40, 42, 60), 0.85),
]


def _write_gt(path: Path) -> Path:
    anns = []
    for image_id, objects in GT_OBJECTS.items():
        for cls, mask, crowd in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cls, "segmentation": _rle(mask),
                         "area": float(mask.sum()), "bbox": list(mask_utils.toBbox(_rle(mask))), "iscrowd": crowd})
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W}],
        "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    return path


def _write_results(path: Path) -> Path:
    path.write_text(json.dumps([{"image_id": i, "category_id": c, "segmentation": _rle(m), "score": s}
                                for i, c, m, s in PREDICTIONS]))
    return path


def _pycocotools(gt: Path, results: Path) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools itself on the two files: stats and eval['precision']."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(results)), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, ev.eval["precision"]


def _prediction_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, stem in ((1, "a"), (2, "b")):
        ids = np.zeros((H, W), np.int64)
        table = []
        for i, c, m, s in PREDICTIONS:
            if i == image_id:
                table.append({"class": c, "score": s, "mask": m})
        # overlapping predictions cannot share one id map: keep only non-overlapping ones in the folder test
        kept = []
        for entry in table:
            if not any((entry["mask"] & k["mask"]).any() for k in kept):
                kept.append(entry)
        for n, entry in enumerate(kept, 1):
            ids[entry["mask"]] = n
        write_instance_png(folder / f"{stem}_instances.png", ids)
        (folder / f"{stem}_instances.json").write_text(json.dumps(
            {"instances": [{"id": n, "class": e["class"], "score": e["score"]} for n, e in enumerate(kept, 1)]}))
    return folder


def test_mask_ap_equals_pycocotools_cocoeval_on_the_same_json_files(tmp_path: Path) -> None:
    gt, results = _write_gt(tmp_path / "gt.json"), _write_results(tmp_path / "results.json")
    stats, precision = _pycocotools(gt, results)
    result = evaluate_instances(results, gt, tmp_path / "out")
    coco = result.summary["coco"]
    for name, value in zip(("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"), stats):
        assert coco[name] == value if value >= 0 else math.isnan(coco[name]), name  # exactly pycocotools'
    assert 0 < coco["AP"] < 1
    for k, row in enumerate(result.rows):  # per class: the same slice summarize() averages, for one class
        p = precision[:, :, k, 0, -1]
        assert row["ap"] == np.mean(p[p > -1])
        assert row["ap50"] == np.mean(precision[0][:, k, 0, -1][precision[0][:, k, 0, -1] > -1])
    assert [r["ref_instances"] for r in result.rows] == [2, 2] and result.rows[0]["ref_crowd"] == 1
    for name in ("metrics.csv", "instances.csv", "summary.json", "ap_per_class.png"):
        assert (tmp_path / "out" / name).is_file()


def test_prediction_folder_scores_as_its_coco_results_and_matches_have_boundary_iou(tmp_path: Path) -> None:
    gt = _write_gt(tmp_path / "gt.json")
    folder = _prediction_folder(tmp_path / "pred")
    result = evaluate_instances(folder, gt, tmp_path / "out")
    # the same predictions as a results JSON, by hand
    results = []
    for stem, image_id in (("a", 1), ("b", 2)):
        ids = np.asarray(Image.open(folder / f"{stem}_instances.png")).astype(np.int64)
        for e in json.loads((folder / f"{stem}_instances.json").read_text())["instances"]:
            results.append({"image_id": image_id, "category_id": e["class"], "segmentation": _rle(ids == e["id"]),
                            "score": e["score"]})
    (tmp_path / "r.json").write_text(json.dumps(results))
    stats, _ = _pycocotools(gt, tmp_path / "r.json")
    assert result.summary["coco"]["AP"] == stats[0] and result.summary["coco"]["AP50"] == stats[1]
    first = next(r for r in result.instances if r["image"] == "a" and r["pred_id"] == 1)
    assert first["ref_id"] == 1 and first["iou"] == pytest.approx(110 / 120)  # 10x11 inside 10x12
    assert 0 < first["boundary_iou"] < 1
    assert first["boundary_iou"] == boundary_iou(_box(2, 12, 2, 13), _box(2, 12, 2, 14))  # on the whole image
    fp = next(r for r in result.instances if r["image"] == "b" and r["class"] == 1)
    assert fp["ref_id"] is None and math.isnan(fp["iou"])


def test_boundary_iou_on_the_joint_box_equals_the_whole_image() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(20, 300, 2))
        a, b = np.zeros((h, w), bool), np.zeros((h, w), bool)
        for m in (a, b):
            y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
            m[y:y + int(rng.integers(2, h - y + 1)), x:x + int(rng.integers(2, w - x + 1))] = True
            m &= rng.random((h, w)) < 0.97  # ragged edges and pin holes
        assert boundary_iou_of_pair(a, b) == boundary_iou(a, b)


def test_instance_masks_reference_folder_and_bad_predictions(tmp_path: Path) -> None:
    root = tmp_path / "ref"
    for sub in ("images", "masks", "instance_classes"):
        (root / sub).mkdir(parents=True)
    ids = np.zeros((H, W), np.int64)
    ids[_box(2, 12, 2, 14)] = 1
    ids[_box(5, 25, 30, 50)] = 2
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "a.png")
    write_instance_png(root / "masks" / "a.png", ids)
    (root / "instance_classes" / "a.json").write_text(json.dumps({"1": 1, "2": 2}))
    pred = tmp_path / "pred"
    pred.mkdir()
    write_instance_png(pred / "a_instances.png", ids)
    (pred / "a_instances.json").write_text(json.dumps({"instances": [{"id": 1, "class": 1, "score": 0.9},
                                                                     {"id": 2, "class": 2, "score": 0.8}]}))
    result = evaluate_instances(pred, root, tmp_path / "out")
    assert result.summary["coco"]["AP"] == pytest.approx(1.0) and result.summary["overall"]["boundary_iou"] == 1.0
    (pred / "a_instances.json").write_text(json.dumps({"instances": [{"id": 1, "class": 1, "score": 0.9}]}))
    with pytest.raises(InputError, match=r"a_instances\.json.*\[2\]"):
        evaluate_instances(pred, root, tmp_path / "out")


# --------------------------------------------------------------------------- panoptic
def test_pq_equals_the_hand_computation() -> None:
    """One image, 4x6 pixels. Reference: stuff 'sky' (class 3) on row 0, thing 'cat' (class 1) instances
    A (8 px) and B (4 px), a crowd of cats C (4 px), VOID (0) on 2 pixels. Prediction: sky on 4 of row 0's
    pixels, cat 6 covering A plus the 2 VOID pixels, cat 7 on half of B, cat 8 on the crowd, a spurious
    cat 9 (2 px) on sky."""
    ref = np.array([[1, 1, 1, 1, 1, 1],
                    [2, 2, 2, 2, 3, 3],
                    [2, 2, 2, 2, 3, 3],
                    [4, 4, 4, 4, 0, 0]])
    ref_segments = {1: (3, False), 2: (1, False), 3: (1, False), 4: (1, True)}
    pred = np.array([[5, 5, 5, 5, 9, 9],
                     [6, 6, 6, 6, 7, 7],
                     [6, 6, 6, 6, 0, 0],
                     [8, 8, 8, 8, 6, 6]])
    pred_segments = {5: 3, 6: 1, 7: 1, 8: 1, 9: 1}
    stats = panoptic_stats(pred, pred_segments, ref, ref_segments)
    # sky: ref 6 px, pred 4 px, intersection 4 -> IoU 4/6 > 0.5: TP, no FP/FN
    # cat A: pred 6 has 10 px, 2 of them on ref VOID (left out of the union): IoU 8 / (10 + 8 - 8 - 2) = 1.0
    # cat B (4 px) vs pred 7 (2 px): IoU 2/4 = 0.5, not > 0.5 -> FN for B; pred 7 is an FP (no VOID/crowd)
    # pred 8 lies on the crowd of cats: ignored; pred 9 (2 px on sky): FP for cat
    assert stats[3] == {"tp": 1, "fp": 0, "fn": 0, "iou": pytest.approx(4 / 6)}
    assert stats[1] == {"tp": 1, "fp": 2, "fn": 1, "iou": pytest.approx(1.0)}
    summary = panoptic_summary(stats, {1})
    cat_pq = 1.0 / (1 + 0.5 * 2 + 0.5 * 1)  # = 0.4
    assert summary["per_class"][1]["pq"] == pytest.approx(cat_pq)
    assert summary["per_class"][1]["sq"] == pytest.approx(1.0)
    assert summary["per_class"][1]["rq"] == pytest.approx(1 / 2.5)
    assert summary["per_class"][3]["pq"] == pytest.approx(4 / 6)  # SQ 4/6, RQ 1
    assert summary["things"]["pq"] == pytest.approx(cat_pq) and summary["stuff"]["pq"] == pytest.approx(4 / 6)
    assert summary["all"]["pq"] == pytest.approx((cat_pq + 4 / 6) / 2) and summary["all"]["n"] == 2


def _panoptic_png(path: Path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _panoptic_json(path: Path, segments: dict[int, tuple[int, bool]]) -> Path:
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 6}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": i, "category_id": c, "iscrowd": int(crowd)} for i, (c, crowd) in segments.items()]}],
        "categories": [{"id": 1, "name": "cat", "isthing": 1}, {"id": 3, "name": "sky", "isthing": 0}]}))
    return path


def test_evaluate_panoptic_on_coco_panoptic_pairs_and_the_cli(tmp_path: Path) -> None:
    ref = np.array([[1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 3, 3], [2, 2, 2, 2, 3, 3], [4, 4, 4, 4, 0, 0]])
    pred = np.array([[5, 5, 5, 5, 9, 9], [6, 6, 6, 6, 7, 7], [6, 6, 6, 6, 0, 0], [8, 8, 8, 8, 6, 6]])
    _panoptic_png(tmp_path / "gt" / "panoptic_val" / "a.png", ref)
    _panoptic_png(tmp_path / "pr" / "panoptic_val" / "a.png", pred)
    gt = _panoptic_json(tmp_path / "gt" / "panoptic_val.json", {1: (3, False), 2: (1, False), 3: (1, False),
                                                                4: (1, True)})
    pr = _panoptic_json(tmp_path / "pr" / "panoptic_val.json", {5: (3, False), 6: (1, False), 7: (1, False),
                                                                8: (1, False), 9: (1, False)})
    result = evaluate_panoptic(pr, gt, tmp_path / "out")
    assert result.summary["things"]["pq"] == pytest.approx(0.4)
    assert result.summary["stuff"]["pq"] == pytest.approx(4 / 6)
    out = CliRunner().invoke(app, ["evaluate-images", "--task", "panoptic", "--pred", str(pr), "--ref", str(gt),
                                   "-o", str(tmp_path / "cli")])
    assert out.exit_code == 0, out.output
    assert "PQ" in out.output and (tmp_path / "cli" / "metrics.csv").is_file()
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["all"]["n"] == 2


def test_evaluate_images_cli_instance_task(tmp_path: Path) -> None:
    gt, results = _write_gt(tmp_path / "gt.json"), _write_results(tmp_path / "results.json")
    out = CliRunner().invoke(app, ["evaluate-images", "--task", "instance", "--pred", str(results), "--ref", str(gt),
                                   "-o", str(tmp_path / "cli")])
    assert out.exit_code == 0, out.output
    stats, _ = _pycocotools(gt, results)
    assert f"AP={stats[0]:.4f}" in out.output
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["coco"]["AP"] == stats[0]
    bad = CliRunner().invoke(app, ["evaluate-images", "--pred", str(results), "--ref", str(gt), "-o",
                                   str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--num-classes" in bad.output + str(bad.exception)


def test_panoptic_from_predict_images_folder_against_instance_masks(tmp_path: Path) -> None:
    """Things-only reference (instance_masks): background is labeled (not VOID), so a prediction on it is a false
    positive; predict-images' <stem>_instances.png/.json read as the prediction."""
    root = tmp_path / "ref"
    for sub in ("images", "masks", "instance_classes"):
        (root / sub).mkdir(parents=True)
    ids = np.zeros((H, W), np.int64)
    ids[_box(2, 12, 2, 14)] = 1  # cat, 120 px
    ids[_box(20, 30, 20, 30)] = 2  # cat, 100 px
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "a.png")
    write_instance_png(root / "masks" / "a.png", ids)
    pred = tmp_path / "pred"
    pred.mkdir()
    p = np.zeros((H, W), np.int64)
    p[_box(2, 12, 2, 13)] = 1  # 110 px inside instance 1: IoU 110/120
    p[_box(35, 40, 50, 60)] = 2  # 50 px on background: FP
    write_instance_png(pred / "a_instances.png", p)
    (pred / "a_instances.json").write_text(json.dumps({"instances": [{"id": 1, "class": 1, "score": 0.9},
                                                                     {"id": 2, "class": 1, "score": 0.5}]}))
    result = evaluate_panoptic(pred, root, tmp_path / "out")
    cat = result.summary["classes"]["1"]
    # TP 1 (IoU 11/12), FP 1, FN 1 (instance 2): PQ = (11/12) / (1 + 0.5 + 0.5)
    assert (cat["tp"], cat["fp"], cat["fn"]) == (1, 1, 1)
    assert cat["pq"] == pytest.approx(11 / 12 / 2) and cat["sq"] == pytest.approx(11 / 12)
    assert result.summary["stuff"]["n"] == 0 and result.summary["things"]["pq"] == pytest.approx(11 / 24)


def test_pq_equals_torchmetrics_where_the_prediction_has_no_void() -> None:
    """torchmetrics' PanopticQuality on random maps (reference with VOID pixels, no crowd). Where the prediction
    has VOID pixels torchmetrics departs from panopticapi: it also removes reference pixels on prediction VOID from
    the union and skips FNs that lie mostly on prediction VOID; medseg follows panopticapi. (float32 there.)"""
    torch = pytest.importorskip("torch")
    from torchmetrics.detection import PanopticQuality

    def scene(seed: int, void: bool) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        cat, inst = np.full((H, W), 3), np.zeros((H, W), np.int64)
        for k in range(1, 7):
            y, x = r.integers(0, H - 12), r.integers(0, W - 12)
            h, w = r.integers(5, 12, 2)
            cat[y:y + h, x:x + w], inst[y:y + h, x:x + w] = 1, k
        if void:
            cat[r.random((H, W)) < 0.05] = 7
        return cat, np.where(cat == 1, inst, 0)

    for seed in range(3):
        (pc, pi), (rc, ri) = scene(seed, False), scene(seed + 10, True)
        pred, ref = np.where(pc == 7, 0, pc * 100 + pi), np.where(rc == 7, 0, rc * 100 + ri)
        stats = panoptic_stats(pred, {int(i): int(i) // 100 for i in np.unique(pred) if i}, ref,
                               {int(i): (int(i) // 100, False) for i in np.unique(ref) if i})
        ours = panoptic_summary(stats, {1})["per_class"]
        metric = PanopticQuality(things={1}, stuffs={3}, return_per_class=True, return_sq_and_rq=True)
        theirs = metric(torch.tensor(np.stack([pc, pi], -1))[None], torch.tensor(np.stack([rc, ri], -1))[None])
        for row, c in zip(theirs.tolist(), (1, 3)):
            assert [ours[c]["pq"], ours[c]["sq"], ours[c]["rq"]] == pytest.approx(row, rel=1e-6), (seed, c)


def test_panoptic_predict_images_folder_with_semantic_stuff_against_coco_panoptic(tmp_path: Path) -> None:
    """The hand-made case again, the prediction as predict-images writes it: instance ids + JSON for the cats,
    the semantic <stem>.png giving sky where no instance is; the same PQ as from panoptic PNGs."""
    ref = np.array([[1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 3, 3], [2, 2, 2, 2, 3, 3], [4, 4, 4, 4, 0, 0]])
    _panoptic_png(tmp_path / "gt" / "panoptic_val" / "a.png", ref)
    gt = _panoptic_json(tmp_path / "gt" / "panoptic_val.json", {1: (3, False), 2: (1, False), 3: (1, False),
                                                                4: (1, True)})
    pred = tmp_path / "pred"
    pred.mkdir()
    ids = np.array([[0, 0, 0, 0, 4, 4], [1, 1, 1, 1, 2, 2], [1, 1, 1, 1, 0, 0], [3, 3, 3, 3, 1, 1]])
    write_instance_png(pred / "a_instances.png", ids)
    (pred / "a_instances.json").write_text(json.dumps(
        {"instances": [{"id": i, "class": 1, "score": 0.5} for i in (1, 2, 3, 4)]}))
    semantic = np.where(ids == 0, 0, 1)
    semantic[0, :4] = 3
    Image.fromarray(semantic.astype(np.uint8)).save(pred / "a.png")
    result = evaluate_panoptic(pred, gt, tmp_path / "out")
    assert result.summary["things"]["pq"] == pytest.approx(0.4)
    assert result.summary["stuff"]["pq"] == pytest.approx(4 / 6)
