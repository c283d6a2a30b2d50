"""How ``medseg evaluate-images`` defines mIoU, against each library's own metric on the same masks.

medseg (as mmsegmentation's ``IoUMetric``): one confusion matrix over all images, ignored
reference pixels left out, per-class IoU, mean over the classes present in the prediction or the
reference. The README (General images, "How mIoU is defined") states the differences shown here.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from medseg.io.images import save_mask

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture()
def semantic_metrics():
    """ultralytics' ``SemanticMetrics``; its import sets ``OMP_NUM_THREADS=1`` and replaces ``PIL.Image.open``
    process-wide (a HEIF hook that tries to install pi-heif on any unreadable image), both undone here."""
    from PIL import Image

    before = os.environ.get("OMP_NUM_THREADS")
    threads = torch.get_num_threads()
    pil_open = Image.open
    from ultralytics.utils.metrics import SemanticMetrics

    yield SemanticMetrics
    Image.open = pil_open
    torch.set_num_threads(threads)
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before


def _case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two 3-class images: class 2 is predicted on some pixels but absent from every reference."""
    rng = np.random.default_rng(3)
    refs, preds = [], []
    for size, rate in ((20, 0.1), (6, 0.35)):  # a large object predicted well, a small one poorly
        ref = np.zeros((32, 48), np.uint8)
        ref[6:6 + size, 10:10 + size] = 1
        ref[0:3, :] = 255  # unlabelled
        pred = ref.copy()
        pred[ref == 255] = 0
        noise = rng.random(ref.shape) < rate
        pred[noise] = rng.integers(0, 3, int(noise.sum()))
        refs.append(ref)
        preds.append(pred.astype(np.uint8))
    return preds, refs


def _medseg(preds, refs, tmp_path, num_classes: int) -> dict:
    from medseg.evaluation.images import evaluate_image_folder

    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for i, (p, r) in enumerate(zip(preds, refs)):
        save_mask(tmp_path / "pred" / f"{i}.png", p)
        save_mask(tmp_path / "ref" / f"{i}.png", r)
    result = evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", num_classes=num_classes,
                                   ignore_index=255, boundary=False)
    return result.summary["dataset"] | {"confusion": result.confusion}


def test_ultralytics_semantic_miou_averages_only_classes_in_the_reference(tmp_path, semantic_metrics):
    preds, refs = _case()
    ours = _medseg(preds, refs, tmp_path, 3)
    theirs = semantic_metrics(names={0: "background", 1: "object", 2: "other"})
    theirs.update_stats(torch.from_numpy(np.stack(preds)).long(), torch.from_numpy(np.stack(refs)).long())
    theirs.process()
    iou = np.array(ours["iou"])
    assert ours["miou"] == pytest.approx(iou.mean())  # classes 0, 1 and the predicted-only 2 (IoU 0)
    assert theirs.miou == pytest.approx(iou[:2].mean(), abs=1e-6)  # only classes with reference pixels
    assert theirs.miou > ours["miou"] + 0.1
    np.testing.assert_allclose(theirs.per_class_iou, iou, atol=1e-6)  # per-class IoU agrees


def test_ultralytics_one_class_miou_is_the_foreground_iou(tmp_path, semantic_metrics):
    preds, refs = _case()
    preds = [np.where(p == 2, 1, p).astype(np.uint8) for p in preds]
    ours = _medseg(preds, refs, tmp_path, 2)
    theirs = semantic_metrics(names={0: "object"})  # one class: 0 background, 1 the object
    theirs.update_stats(torch.from_numpy(np.stack(preds)).long(), torch.from_numpy(np.stack(refs)).long())
    theirs.process()
    assert theirs.miou == pytest.approx(ours["iou"][1], abs=1e-6)
    assert ours["miou"] == pytest.approx(np.mean(ours["iou"]))  # background counts in medseg's mean
    assert abs(theirs.miou - ours["miou"]) > 0.01


def test_smp_four_reductions_give_four_numbers(tmp_path):
    import segmentation_models_pytorch as smp

    preds, refs = _case()
    ours = _medseg(preds, refs, tmp_path, 3)
    tp, fp, fn, tn = smp.metrics.get_stats(torch.from_numpy(np.stack(preds)).long(),
                                           torch.from_numpy(np.stack(refs)).long(),
                                           mode="multiclass", num_classes=3, ignore_index=255)
    values = {r: float(smp.metrics.iou_score(tp, fp, fn, tn, reduction=r))
              for r in ("micro", "macro", "micro-imagewise", "macro-imagewise")}
    cm = np.asarray(ours["confusion"], float)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    # macro: per-class IoU of the dataset counts, mean over every class: medseg's mIoU here (all 3 occur)
    assert values["macro"] == pytest.approx(ours["miou"], abs=1e-6)
    # micro: the counts of every class pooled, one IoU (for multiclass argmax maps: the pixel accuracy's kin)
    assert values["micro"] == pytest.approx(inter.sum() / union.sum(), abs=1e-6)
    assert len({round(v, 4) for v in values.values()}) == 4  # four reductions, four different numbers
