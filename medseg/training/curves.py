"""PNG curves of a run: training loss and validation Dice (or mIoU for ordinary images, mask AP for
instances) against the step;
:func:`save_panels` is the one tail (grid, legends, atomic PNG) of every run's curves, YOLO's included."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.io.atomic import atomic_path


def read_metrics(path: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Columns of a Lightning ``metrics.csv`` as ``{name: [(step, value), ...]}`` (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


#: ``(main column, per-class prefix, axis label, title)`` of the score panel, the first whose column is logged
SCORE_PANELS = (
    ("val_dice", "val_dice_", "Dice", "validation Dice (whole volumes)"),
    ("val_miou", "val_iou_", "mIoU", "validation mIoU (full-resolution images)"),
    ("val_map", "val_ap_", "mask AP", "validation mask AP 0.50:0.95 (full-resolution images)"),
)


def plot_curves(metrics_csv: str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Draw training loss (per step and per epoch) and validation Dice (mean and per label), or the
    validation mIoU and per-class IoU of an ordinary-image run, or the mask AP (overall and per class)
    of an instance run."""
    s = read_metrics(metrics_csv)
    fig, ax_loss, ax_dice = loss_and_score_panels()
    for key, style in (("train_loss_step", "-"), ("train_loss_epoch", "o-")):
        if key in s:
            x, y = zip(*s[key])
            ax_loss.plot(x, y, style, label=key, alpha=0.8, markersize=3)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    # medical runs log val_dice (whole volumes); ordinary-image runs log val_miou and val_iou_<class>,
    # instance runs val_map and val_ap_<class>
    main, prefix, what, title = next((row for row in SCORE_PANELS if row[0] in s), SCORE_PANELS[0])
    keys = [main] + sorted(k for k in s if k.startswith(prefix)) if main in s else []
    for key in keys:
        x, y = zip(*s[key])
        ax_dice.plot(x, y, "o-" if key == main else "--", label=what if key == main else key[len(prefix):],
                     linewidth=2.5 if key == main else 1, markersize=3)
    ax_dice.set_xlabel("step")
    ax_dice.set_ylabel(what)
    ax_dice.set_ylim(0, 1)
    ax_dice.set_title(title)
    return save_panels(fig, (ax_loss, ax_dice), out_png)


def loss_and_score_panels() -> tuple[Any, Any, Any]:
    """``(figure, loss axes, score axes)``: the two side-by-side panels of a run's curves (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    return fig, ax_loss, ax_score


def save_panels(fig: Any, axes: Sequence[Any], out_png: str | os.PathLike[str]) -> Path:
    """Grid and legend on every panel, then ``fig`` written atomically as a PNG and closed; returns ``out_png``."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(out_png)


__all__ = ["SCORE_PANELS", "read_metrics", "plot_curves", "loss_and_score_panels", "save_panels"]
