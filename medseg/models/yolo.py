"""``yolo_seg`` and ``yolo_sem``: ultralytics' YOLO networks (the optional AGPL ``yolo`` extra).

``yolo_seg`` is the instance-segmentation network (YOLOv8/11/26-seg); ``yolo_sem`` is ultralytics 8.4's
semantic task (``yolo26n-sem.yaml``: ``SemanticSegmentationModel``), wrapped so that it is an ordinary
dense family: its stride-8 logits are upsampled (bilinear, as ultralytics' predictor does) to the input
size, so the dense predictors, the model harness and ``predict-images`` take it as they take SegFormer.
Both are trained by ultralytics' own trainer in a child process (the registry's ``trainer``).

The network is ultralytics' ``SegmentationModel`` built from a model YAML: a name ultralytics ships
(``yolo11n-seg.yaml``: the scale letter picks the width/depth, random init, nothing downloaded), a
local YAML file, or the YAML dict an export records. Trained weights come only from a local file
(an export's ``model.pt`` state_dict; training reads ultralytics' own ``.pt`` files in a child
process, :mod:`medseg.training.yolo`). ultralytics is imported inside the builder only, so
``import medseg.models`` and listing the models stay light.

In eval mode the network returns ultralytics' raw ``(predictions, protos)``; it is an *instance*
family (``task="instance"``): :mod:`medseg.inference.yolo` turns its output into instance maps.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, ModelError
from medseg.io.atomic import write_text_atomic
from medseg.models.registry import register_model

log = logging.getLogger(__name__)

#: YOLO's total stride: letterboxed image sides are multiples of it
YOLO_STRIDE = 32


def check_yolo_model(model: str) -> str:
    """``model`` if it is a model YAML (a name ultralytics ships or a local file) or a local ``.pt`` file.

    Raises:
        ConfigError: a weights name that is not a local file (ultralytics would download it), or
            a ``.yaml``/``.pt`` path that does not exist.
    """
    path = Path(str(model)).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".pt":
        if not path.is_file():
            raise ConfigError(
                f"model.config.model {model!r}: no such local file; medseg never downloads weights "
                "(ultralytics would fetch this name). Download the .pt yourself and give its path, or name "
                "a model YAML such as 'yolo11n-seg.yaml' for random initial weights")
        return str(path.resolve())
    if suffix in (".yaml", ".yml"):
        if len(path.parts) > 1 and not path.is_file():
            raise ConfigError(f"model.config.model {model!r}: no such model YAML file")
        return str(path.resolve()) if path.is_file() else str(model)
    raise ConfigError(f"model.config.model {model!r}: expected a model YAML ('yolo11n-seg.yaml') or a local .pt file")


def yolo_yaml(model: str | Mapping[str, Any]) -> dict[str, Any]:
    """The model YAML dict of ``model`` (a YAML name ultralytics ships, a local YAML file, or a dict)."""
    if isinstance(model, Mapping):
        return copy.deepcopy(dict(model))
    yaml_model_load = _tasks().yaml_model_load
    name = check_yolo_model(str(model))
    if name.endswith(".pt"):
        raise ConfigError(f"model {model!r}: the yolo_seg builder takes a model YAML; a .pt file is read by training")
    try:
        return yaml_model_load(name)
    except FileNotFoundError as exc:
        raise ConfigError(f"model {model!r}: ultralytics ships no such model YAML ({exc})") from exc


# --------------------------------------------------------------------------- ultralytics child processes
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def _tasks() -> Any:
    """``ultralytics.nn.tasks``, imported in this process without keeping its process-wide side effects:
    importing ultralytics replaces ``PIL.Image.open`` (a HEIF hook that tries to install pi-heif on any
    image Pillow cannot identify, which turns medseg's unreadable-image errors into ImportErrors) and sets
    ``OMP_NUM_THREADS=1``; both, and torch's thread count, are put back. Training and prediction run
    ultralytics in a child process instead (:func:`run_worker`)."""
    import sys

    if "ultralytics.nn.tasks" in sys.modules:
        return sys.modules["ultralytics.nn.tasks"]
    import torch
    from PIL import Image

    pil_open, omp, threads = Image.open, os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    try:
        import ultralytics.nn.tasks as tasks
    finally:
        Image.open = pil_open
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        torch.set_num_threads(threads)
    return tasks


def yolo_environment(config_dir: Path) -> dict[str, str]:
    """Environment of an ultralytics child: offline, no auto-install, a private config dir with fonts."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    target = config_dir / "Ultralytics"
    target.mkdir(parents=True, exist_ok=True)
    for name in FONTS:
        if not (target / name).is_file():
            shutil.copyfile(font, target / name)
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(config_dir),
                "MPLBACKEND": "Agg"})
    return env


def run_worker(module: str, command: str, job: Mapping[str, Any], folder: Path, *, log_name: str) -> None:
    """Run ``python -m MODULE COMMAND JOB.json`` (an ultralytics child) with :func:`yolo_environment`;
    its stdout and stderr go to ``folder/log_name``.

    Raises:
        ModelError: the child failed (exit status and the last lines of its log).
    """
    folder.mkdir(parents=True, exist_ok=True)
    job_path = folder / f"{command}_job.json"
    write_text_atomic(job_path, json.dumps(dict(job), indent=2) + "\n")
    log_path = folder / log_name
    env = yolo_environment(folder / "config")
    t0 = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as out:
        rc = subprocess.call([sys.executable, "-m", module, command, str(job_path)], env=env, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if rc != 0:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-400:]
        raise ModelError(f"ultralytics {command} failed (exit status {rc}); see {log_path}: {tail}")
    log.info("ultralytics %s finished in %.1f s", command, time.monotonic() - t0)
    log.debug("ultralytics %s log: %s", command, log_path)


def worker_main(argv: list[str], module: str, commands: Mapping[str, Any]) -> int:
    """Entry point of an ultralytics child: ``python -m MODULE COMMAND JOB.json`` runs ``commands[COMMAND](job)``."""
    if len(argv) != 2 or argv[0] not in commands:
        sys.stderr.write(f"usage: python -m {module} {'|'.join(commands)} JOB.json\n")
        return 2
    commands[argv[0]](json.loads(Path(argv[1]).read_text(encoding="utf-8")))
    return 0


TRAINER = "medseg.training.yolo:train_yolo"


@register_model(
    "yolo_seg", spatial_dims=2, task="instance", trainer=TRAINER,
    image_predictor="medseg.inference.yolo:predict_yolo_folder",
    description="YOLO-seg instance segmentation (ultralytics SegmentationModel from a model YAML; AGPL extra)",
    input_multiple=lambda c: [YOLO_STRIDE] * 2,
    tiny_config={"model": "yolo11n-seg.yaml", "nc": 2, "imgsz": 64},
)
def build_yolo_seg(*, model: str | dict[str, Any] = "yolo11n-seg.yaml", nc: int = 1, imgsz: int = 640,
                   in_channels: int = 3) -> Any:
    """ultralytics ``SegmentationModel(yaml, ch=in_channels, nc=nc)``, random weights; ``imgsz`` (pixels) is
    the letterbox size it was trained at (recorded for prediction, not part of the network)."""
    SegmentationModel = _tasks().SegmentationModel

    if int(nc) < 1:
        raise ConfigError(f"model.config.nc must be >= 1, got {nc}")
    if int(imgsz) % YOLO_STRIDE:
        raise ConfigError(f"model.config.imgsz {imgsz} must be a multiple of {YOLO_STRIDE}")
    cfg = yolo_yaml(model)
    net = SegmentationModel(cfg, ch=int(in_channels), nc=int(nc), verbose=False)
    net.imgsz = int(imgsz)
    return net


def _semantic_class() -> type:
    import torch
    import torch.nn.functional as F

    class YoloSemantic(torch.nn.Module):
        """ultralytics' ``SemanticSegmentationModel`` (``self.net``) returning logits ``[B, K, H, W]`` at the
        input's size: its stride-8 output upsampled bilinearly. The P4 auxiliary head, a training-only
        loss term of ultralytics' trainer that inference never reads, is left out of the network (and of
        the export's state_dict)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            net.model[-1].aux_head = None
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)

    YoloSemantic.__module__ = __name__
    return YoloSemantic


@register_model(
    "yolo_sem", spatial_dims=2, task="semantic", trainer=TRAINER,
    description="YOLO semantic segmentation (ultralytics 8.4 SemanticSegmentationModel, yolo26n-sem.yaml; AGPL extra)",
    input_multiple=lambda c: [YOLO_STRIDE] * 2,
    tiny_config={"model": "yolo26n-sem.yaml", "in_channels": 1, "out_channels": 3},
)
def build_yolo_sem(*, model: str | dict[str, Any] = "yolo26n-sem.yaml", in_channels: int = 3,
                   out_channels: int = 2) -> Any:
    """ultralytics ``SemanticSegmentationModel(yaml, ch=in_channels, nc=out_channels)``, random weights, with
    logits upsampled to the input size; ``out_channels`` counts every class, background included."""
    if int(out_channels) < 2:
        raise ConfigError(f"model.config.out_channels must be >= 2 (background and a class), got {out_channels}")
    cfg = yolo_yaml(model)
    head = str(cfg.get("head", [[None, None, ""]])[-1][2]) if cfg.get("head") else ""
    if head != "SemanticSegment":
        raise ConfigError(f"model.config.model {model!r}: not a semantic model YAML (its head is {head!r}, "
                          "expected SemanticSegment, as in yolo26n-sem.yaml)")
    net = _tasks().SemanticSegmentationModel(cfg, ch=int(in_channels), nc=int(out_channels), verbose=False)
    return _semantic_class()(net)


__all__ = ["YOLO_STRIDE", "build_yolo_seg", "build_yolo_sem", "check_yolo_model", "yolo_yaml", "yolo_environment", "run_worker", "worker_main"]
