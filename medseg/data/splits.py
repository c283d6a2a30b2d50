"""Deterministic k-fold splits, saved as ``splits.json`` (nnU-Net's layout).

``splits.json`` is a list with one ``{"train": [case ids], "val": [case ids]}`` per fold.
The same case ids, ``n_folds`` and ``seed`` always give the same folds, on any machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import write_text_atomic

Split = dict[str, list[str]]


def make_splits(case_ids: Sequence[str], *, n_folds: int = 5, seed: int = 0) -> list[Split]:
    """K-fold splits of ``case_ids`` (sorted first, then shuffled with ``seed``).

    With fewer cases than folds, ``n_folds`` is reduced to the number of cases. With one
    fold (``n_folds=1``) the split holds out ~20% (at least one case) for validation.

    Raises:
        ConfigError: ``n_folds < 1`` or fewer than 2 cases.
    """
    ids = sorted(set(str(c) for c in case_ids))
    if len(ids) < 2:
        raise ConfigError(f"dataset.n_folds: need at least 2 cases to split, got {len(ids)}")
    if n_folds < 1:
        raise ConfigError(f"dataset.n_folds must be >= 1, got {n_folds}")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    if n_folds == 1:
        n_val = max(1, round(0.2 * len(ids)))
        return [{"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}]
    k = min(n_folds, len(ids))
    folds = [order[i::k] for i in range(k)]
    return [
        {"train": sorted(c for j, f in enumerate(folds) if j != i for c in f), "val": sorted(folds[i])}
        for i in range(k)
    ]


def save_splits(splits: list[Split], path: str | os.PathLike[str]) -> Path:
    """Write ``splits`` to ``path`` (JSON, atomic)."""
    write_text_atomic(path, json.dumps(splits, indent=2) + "\n")
    return Path(path)


def load_splits(path: str | os.PathLike[str]) -> list[Split]:
    """Read and check a ``splits.json``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a readable splits.json ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(f, dict) and {"train", "val"} <= set(f) for f in data):
        raise InputError(f"{p}: expected a list of {{'train': [...], 'val': [...]}}")
    return data


def get_fold(splits: list[Split], fold: int, *, known: Sequence[str] | None = None) -> Split:
    """Fold ``fold`` of ``splits``; checks that its cases are in ``known`` when given."""
    if not 0 <= fold < len(splits):
        raise ConfigError(f"dataset.fold must be in 0..{len(splits) - 1}, got {fold}")
    split = splits[fold]
    if known is not None:
        unknown = sorted((set(split["train"]) | set(split["val"])) - set(known))
        if unknown:
            raise InputError(f"splits fold {fold} names cases not in the dataset: {', '.join(unknown[:10])}")
    return split


__all__ = ["make_splits", "save_splits", "load_splits", "get_fold"]
