"""Summaries of per-case metric values that count NaN and inf instead of dropping them.

The statistics (mean, std, median, quartiles, bootstrap CI) are computed over the
finite values; ``n_nan`` and ``n_inf`` say how many cases were left out of them and
why (NaN: undefined, e.g. both masks empty; inf: a missed or spurious structure).
Pass ``inf_value`` to score inf cases as a number (e.g. a cap in mm) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def bootstrap_ci(
    values: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (NaN, NaN when empty).

    Resamples the cases with replacement ``n_resamples`` times with a fixed ``seed``, so
    the interval is reproducible.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    batch = max(1, int(4_000_000 // max(v.size, 1)))
    for start in range(0, n_resamples, batch):  # bounded memory for many cases
        stop = min(start + batch, n_resamples)
        idx = rng.integers(0, v.size, size=(stop - start, v.size))
        means[start:stop] = v[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarize(
    values: Sequence[float] | np.ndarray,
    *,
    inf_value: float | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean, std, median, quartiles, IQR and bootstrap CI of the finite values, with counts.

    Returns:
        ``n`` (all cases), ``n_finite``, ``n_nan``, ``n_inf``, ``mean``, ``std`` (sample,
        ddof=1; NaN for fewer than 2), ``median``, ``q1``, ``q3``, ``iqr``, ``ci_low``,
        ``ci_high`` (JSON-compatible floats; NaN when there is no finite value).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n_nan = int(np.isnan(v).sum())
    n_inf = int(np.isinf(v).sum())
    if inf_value is not None:
        v = np.where(np.isinf(v), float(inf_value), v)
    finite = v[np.isfinite(v)]
    nan = float("nan")
    out: dict[str, Any] = {"n": int(v.size), "n_finite": int(finite.size), "n_nan": n_nan, "n_inf": n_inf}
    if finite.size == 0:
        out.update(mean=nan, std=nan, median=nan, q1=nan, q3=nan, iqr=nan, ci_low=nan, ci_high=nan)
        return out
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    lo, hi = bootstrap_ci(finite, confidence=confidence, n_resamples=n_resamples, seed=seed)
    out.update(
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else nan,
        median=float(median),
        q1=float(q1),
        q3=float(q3),
        iqr=float(q3 - q1),
        ci_low=lo,
        ci_high=hi,
    )
    return out


__all__ = ["summarize", "bootstrap_ci"]
