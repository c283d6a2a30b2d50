"""Charts shared by the evaluation and training rooms: one figure setup, one atomic PNG writer.

matplotlib is imported inside the functions (Agg backend, no display needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_path


def new_figure(figsize: tuple[float, float], dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` (no pyplot state, Agg backend) of ``figsize`` inches."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def save_png(fig: Any, path: str | os.PathLike[str]) -> None:
    """Lay out ``fig`` and write it as PNG to ``path`` atomically."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def metric_boxplot(path: str | os.PathLike[str], metric: str, groups: list[tuple[str, np.ndarray]]) -> None:
    """Box plot PNG of one metric per label (finite values; inf/nan counts in the tick labels)."""
    fig = new_figure(figsize=(max(4.0, 1.2 * len(groups) + 2), 4.0), dpi=100)
    ax = fig.subplots()
    data, ticks = [], []
    for name, values in groups:
        finite = values[np.isfinite(values)]
        data.append(finite)
        extra = []
        if np.isinf(values).any():
            extra.append(f"{int(np.isinf(values).sum())} inf")
        if np.isnan(values).any():
            extra.append(f"{int(np.isnan(values).sum())} nan")
        ticks.append(f"{name}\nn={values.size}" + (f" ({', '.join(extra)})" if extra else ""))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(ticks) + 1), ticks, fontsize=8)
    unit = " (mm)" if metric in ("hd", "hd95", "assd", "masd") else ""
    ax.set_ylabel(metric + unit)
    ax.set_title(f"{metric} per label (finite values)")
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)


def class_bar_chart(path: str | os.PathLike[str], names: Sequence[str], values: Sequence[float], overall: float,
                    metric: str, *, ylabel: str | None = None, title: str | None = None) -> None:
    """Bar chart PNG of ``metric`` per class (``n/a`` for NaN, range 0..1) with ``overall`` as a dashed line."""
    n = len(names)
    fig = new_figure(figsize=(min(40.0, max(5.0, 0.35 * n + 2)), 4.0), dpi=100)
    ax = fig.subplots()
    arr = np.array(values, dtype=np.float64)
    x = np.arange(n)
    ax.bar(x, np.nan_to_num(arr, nan=0.0), color="tab:blue")
    for i in np.flatnonzero(np.isnan(arr)):
        ax.text(i, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    if math.isfinite(overall):
        ax.axhline(overall, color="tab:red", linestyle="--", label=f"{metric} {overall:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(x, list(names), rotation=90 if n > 8 else 0, fontsize=7 if n > 20 else 8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel or metric)
    ax.set_title(title or f"{metric} per class")
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)


def iou_bar_chart(path: str | os.PathLike[str], names: Sequence[str], iou: Sequence[float], miou: float) -> None:
    """Bar chart PNG of the dataset IoU per class, with the mIoU as a dashed line (``n/a`` for NaN)."""
    class_bar_chart(path, names, iou, miou, "mIoU", ylabel="IoU (dataset)", title="IoU per class")


__all__ = ["new_figure", "save_png", "metric_boxplot", "iou_bar_chart", "class_bar_chart"]
