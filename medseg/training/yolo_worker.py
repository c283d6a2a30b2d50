"""The child process of YOLO training and prediction: ``python -m medseg.training.yolo_worker COMMAND JOB.json``.

Started by :func:`medseg.training.yolo.run_worker` with an offline environment; this is the only
process that imports ultralytics. Commands:

- ``train``: ``YOLO(model, task=job["task"]).train(**args)`` (``segment`` or ``semantic``) (``amp=False`` and ``workers=0`` on CPU)
  or ``YOLO(last.pt).train(resume=last.pt)``, stopped at the first epoch end past ``budget_s`` seconds
  (then ``weights/resume.pt`` keeps that epoch's unstripped checkpoint for ``--resume``); then the best weights (ultralytics' ``best.pt``, our own
  file: this is the one place a pickled ultralytics checkpoint is read) are written as a plain
  state_dict (``export_state``) with the model YAML (``export_info``);
prediction has its own child, ``python -m medseg.inference.yolo``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

#: the resumable copy of ``last.pt`` made when ``train.max_minutes`` stops a run (ultralytics strips last.pt)
RESUME_NAME = "resume.pt"


def _device(args: dict[str, Any]) -> str:
    import torch

    return str(args.get("device") or ("0" if torch.cuda.is_available() else "cpu"))


def train(job: dict[str, Any]) -> None:
    """Run ultralytics' trainer as ``job`` says, then write the best weights as a plain state_dict."""
    import torch
    import ultralytics
    from ultralytics import YOLO

    if job.get("threads"):  # train.threads, after ultralytics' import set its own (1 on a 2-core machine)
        torch.set_num_threads(int(job["threads"]))
    t_start = time.monotonic()
    yolo = YOLO(job["resume"] or job["model"], task=job.get("task", "segment"))
    weights = Path(job["args"]["project"]) / job["args"]["name"] / "weights"
    resume_pt = weights / RESUME_NAME
    stopped = []
    if job.get("budget_s"):  # medseg's train.max_minutes caps the run (ultralytics' time= would stretch epochs)

        def stop_on_budget(trainer: Any) -> None:
            if time.monotonic() - t_start > job["budget_s"] and not trainer.stop:
                trainer.stop = True
                stopped.append(trainer.epoch)
                # last.pt of this epoch is saved; ultralytics strips it (no optimiser, "finished") when the
                # loop ends, so a copy keeps the run resumable (medseg train --resume reads it first)
                if Path(trainer.last).is_file():
                    shutil.copyfile(trainer.last, resume_pt)

        yolo.add_callback("on_fit_epoch_end", stop_on_budget)
    if job.get("resume"):  # the path, not True: ultralytics would otherwise fill in its default (downloaded) data
        yolo.train(resume=job["resume"])
    else:
        args = dict(job["args"])
        args["device"] = _device(args)
        if args["device"] == "cpu":
            args.setdefault("amp", False)
            args.setdefault("workers", 0)
        yolo.train(**args)
    if not stopped and resume_pt.is_file():  # ran to its end: the copy of an earlier stop is stale
        resume_pt.unlink()
    source = weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"
    ckpt = torch.load(source, map_location="cpu", weights_only=False)  # ultralytics' own checkpoint of this run
    net = (ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]).float()
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, job["export_state"])
    Path(job["export_info"]).write_text(json.dumps({"yaml": dict(net.yaml), "source": str(source),
                                                    "ch": int(net.yaml.get("channels", 3)),
                                                    "ultralytics": ultralytics.__version__}, indent=2))


if __name__ == "__main__":
    from medseg.models.yolo import worker_main

    sys.exit(worker_main(sys.argv[1:], "medseg.training.yolo_worker", {"train": train}))
