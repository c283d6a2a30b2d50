"""YOLO-seg behind ``medseg train`` and ``medseg predict-images``: ultralytics' trainer in a child process,
offline (a network guard inside the child), metrics.csv, a state_dict export, full-resolution instance maps."""

from __future__ import annotations

import contextlib
import importlib.util
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError

if importlib.util.find_spec("ultralytics") is None:  # found without importing it (its import patches PIL)
    pytest.skip("ultralytics (the optional yolo extra) is not installed", allow_module_level=True)

SIZE = 64
# installed in the child through PYTHONPATH: any non-loopback connect or DNS lookup is written down and fails
GUARD = '''
import os, socket
_log = os.environ["MEDSEG_TEST_NETLOG"]
open(_log + ".on", "w").close()  # the guard is installed in this process
def _note(what):
    with open(_log, "a") as fh:
        fh.write(repr(what) + "\\n")
    raise OSError("network access refused by the medseg test guard: %r" % (what,))
def _local(address):
    host = address[0] if isinstance(address, tuple) and address else None
    return not isinstance(address, tuple) or host in ("localhost", "127.0.0.1", "::1", "", None)
_connect, _connect_ex, _gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
def connect(self, address):
    return _connect(self, address) if _local(address) else _note(address)
def connect_ex(self, address):
    return _connect_ex(self, address) if _local(address) else _note(address)
def getaddrinfo(host, *a, **k):
    return _gai(host, *a, **k) if host in ("localhost", "127.0.0.1", "::1", None) else _note(host)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


def _shapes(n: int, seed: int) -> list[tuple[np.ndarray, list[tuple[int, np.ndarray]]]]:
    """``n`` RGB images with one square (class 0) and one triangle (class 1) each, and their polygons."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.full((SIZE, SIZE, 3), 20, np.uint8)
        x0, y0 = rng.integers(4, 24, size=2)
        s = int(rng.integers(14, 22))
        img[y0:y0 + s, x0:x0 + s] = (220, 60, 60)
        square = np.array([[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]], float)
        tx, ty = 40 + int(rng.integers(0, 6)), 36 + int(rng.integers(0, 6))
        tri = np.array([[tx, ty], [tx + 18, ty + 18], [tx, ty + 18]], float)
        yy, xx = np.mgrid[:SIZE, :SIZE]
        inside = (xx >= tx) & (yy <= ty + 18) & (xx - tx <= yy - ty)
        img[inside] = (60, 200, 60)
        out.append((img, [(0, square), (1, tri)]))
    return out


def make_yolo_dataset(root: Path) -> Path:
    """A yolo_seg folder: 4 training and 2 validation images, 64 x 64, two classes."""
    from PIL import Image

    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, (img, polys) in enumerate(_shapes(n, seed)):
            Image.fromarray(img).save(root / "images" / split / f"{split}{i}.png")
            lines = [" ".join([str(c)] + [f"{v / SIZE:.5f}" for v in p.ravel()]) for c, p in polys]
            (root / "labels" / split / f"{split}{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [square, triangle]\n")
    return root


def yolo_config(root: Path, **train) -> dict:
    return {"model": {"name": "yolo_seg", "config": {"model": "yolo11n-seg.yaml",
                                                     "args": {"mosaic": 0.0, "plots": True, "val": True}}},
            "dataset": {"root": str(root)}, "images": {"crop_size": [SIZE, SIZE]},
            "train": {"max_epochs": 2, "batch_size": 4, "seed": 0, **train}}


@contextlib.contextmanager
def network_guard(folder: Path):
    """Children started inside get :data:`GUARD` (through PYTHONPATH); yields the attempts file."""
    guard = folder / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    netlog = folder / "network_attempts.txt"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "MEDSEG_TEST_NETLOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(guard), str(Path(__file__).resolve().parents[1])])
    os.environ["MEDSEG_TEST_NETLOG"] = str(netlog)
    try:
        yield netlog
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def assert_offline(netlog: Path) -> None:
    assert Path(f"{netlog}.on").is_file(), "the network guard was not installed in the ultralytics child"
    assert not netlog.exists(), f"the ultralytics child tried the network: {netlog.read_text()}"


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory):
    """One YOLO-seg training run (1 epoch) under a network guard inside the ultralytics child."""
    from medseg.training.engine import train

    tmp = tmp_path_factory.mktemp("yolo")
    data = make_yolo_dataset(tmp / "data")
    with network_guard(tmp) as netlog:
        # 3 epochs asked, a budget already spent when the first one ends: train.max_minutes caps the run
        run = train(yolo_config(data, max_epochs=3, max_minutes=0.001), out_dir=tmp / "run")
    return run, data, netlog


def test_yolo_train_run_folder_offline(yolo_run):
    run, data, netlog = yolo_run
    assert_offline(netlog)
    assert "Downloading" not in (run / "yolo" / "train.log").read_text()
    assert (run / "yolo" / "config" / "Ultralytics" / "Arial.ttf").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1]  # max_minutes stopped it, not ultralytics' time= stretching
    for key in ("train_loss", "val_map50_mask", "val_map_mask", "train_seg_loss"):
        assert key in rows[0], sorted(rows[0])
    assert (run / "curves.png").stat().st_size > 1000
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["model"]["name"] == "yolo_seg" and info["model"]["config"]["nc"] == 2
    assert info["labels"] == {"0": "background", "1": "square", "2": "triangle"}
    assert not list(data.rglob("*.cache")), "ultralytics wrote its label cache into the dataset"


def test_yolo_export_is_a_state_dict_that_reloads(yolo_run):
    import torch

    from medseg.models.export import load_exported

    run, _, _ = yolo_run
    state = torch.load(run / "export" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, info = load_exported(run)
    assert info["inference"]["task"] == "instance" and not model.training
    assert torch.get_num_threads() >= 1


def test_bare_weights_name_refused(tmp_path):
    from medseg.training.engine import train

    data = make_yolo_dataset(tmp_path / "data")
    cfg = yolo_config(data)
    cfg["model"]["config"]["model"] = "yolo11n-seg.pt"
    with pytest.raises(ConfigError, match="local file"):
        train(cfg, out_dir=tmp_path / "run")
    cfg["model"]["config"] = {"model": "yolo11n-seg.yaml", "args": {"epochs": 3}}
    with pytest.raises(ConfigError, match="epochs"):
        train(cfg, out_dir=tmp_path / "run")


def test_import_medseg_models_stays_light():
    import subprocess

    code = "import sys, medseg.models; medseg.models.list_models(); print('ultralytics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_predict_images_full_resolution_instances(yolo_run, tmp_path):
    """predict-images on a yolo_seg run: 16-bit instance ids at the image's own size, the table, the union."""
    from PIL import Image

    from medseg.data.instance_datasets import read_instance_prediction
    from medseg.inference.images import predict_image_folder

    run, data, _ = yolo_run
    src = tmp_path / "in"
    src.mkdir()
    img = np.asarray(Image.open(data / "images" / "val" / "val0.png"))
    Image.fromarray(np.kron(img, np.ones((2, 3, 1), np.uint8))).save(src / "wide.png")  # 128 x 192, not imgsz
    records = predict_image_folder(run, src, tmp_path / "out")
    assert [r["status"] for r in records] == ["ok"] and records[0]["shape"] == [128, 192]
    ids, table = read_instance_prediction(tmp_path / "out" / "wide_instances.png")
    assert ids.shape == (128, 192)
    assert Image.open(tmp_path / "out" / "wide_instances.png").mode.startswith("I")  # 16-bit
    semantic = np.asarray(Image.open(tmp_path / "out" / "wide.png"))
    assert semantic.shape == (128, 192)
    for iid, (cls, score) in table.items():
        assert cls in (1, 2) and 0 < score <= 1
        assert np.all(semantic[ids == iid] == cls)
    assert np.all(semantic[ids == 0] == 0)
    again = predict_image_folder(run, src, tmp_path / "out")  # resumes: already written
    assert [r["status"] for r in again] == ["skipped"]
    # a low threshold, so that the briefly trained network gives instances, under the guard
    from medseg.inference.yolo import predict_yolo_folder

    with network_guard(tmp_path) as netlog:
        [record] = predict_yolo_folder(run, src, tmp_path / "low", conf=0.001)
    assert_offline(netlog)
    ids, table = read_instance_prediction(tmp_path / "low" / "wide_instances.png")
    semantic = np.asarray(Image.open(tmp_path / "low" / "wide.png"))
    assert record["instances"] == len(table) > 0 and set(np.unique(ids)) - {0} == set(table)
    for iid, (cls, _score) in table.items():
        assert np.all(semantic[ids == iid] == cls)
    scores = [table[i][1] for i in sorted(table)]
    assert scores == sorted(scores, reverse=True)  # ids in decreasing score


@pytest.mark.parametrize("name", ["yolo_seg_images.yaml", "yolo_seg_images_cpu.yaml"])
def test_pipelines_load(name):
    from medseg.models.yolo import check_yolo_model
    from medseg.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "pipelines" / name, [])
    assert cfg.model.name == "yolo_seg" and cfg.images.crop_size[0] % 32 == 0
    assert check_yolo_model(cfg.model.config["model"]) == "yolo11n-seg.yaml"


def test_building_a_yolo_model_leaves_pil_and_threads_as_they_were(tmp_path):
    """ultralytics' import patches PIL.Image.open and OMP_NUM_THREADS; the builder puts both back, so an
    unreadable image is still medseg's InputError naming the file, not an attempt to install pi-heif."""
    import os

    import torch
    from PIL import Image

    from medseg.errors import InputError
    from medseg.io.images import read_image
    from medseg.models import create_model

    before, omp, threads = Image.open, os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    create_model("yolo_seg", model="yolo11n-seg.yaml", nc=2, imgsz=64)
    assert Image.open is before and os.environ.get("OMP_NUM_THREADS") == omp and torch.get_num_threads() == threads
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="broken.png"):
        read_image(broken)


def test_resume_continues_a_budget_stopped_run(yolo_run):
    """``medseg train --resume`` on the run max_minutes stopped after epoch 1 of 3: ultralytics strips last.pt
    when a run ends, so the worker kept the epoch's checkpoint as resume.pt; training goes on to epoch 3 from it.
    (Last in this module: it extends the shared run.)"""
    import torch

    from medseg.training.engine import train

    run, data, _ = yolo_run
    weights = run / "yolo" / "train" / "weights"
    assert (weights / "resume.pt").is_file()
    before = torch.load(run / "export" / "model.pt", weights_only=True)
    guarded = run.parent / "resume_guard"
    guarded.mkdir()
    with network_guard(guarded) as netlog:
        train(yolo_config(data, max_epochs=3), out_dir=run, resume=True)
    assert_offline(netlog)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # epoch 1 kept, 2 and 3 trained on from resume.pt
    assert not (weights / "resume.pt").exists()  # the run went to its end: nothing left to resume
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["training"]["epochs"] == 3
    after = torch.load(run / "export" / "model.pt", weights_only=True)
    assert any(not torch.equal(before[k], after[k]) for k in before)
