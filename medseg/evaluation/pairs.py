"""What both folder evaluators do with their matched pairs: warn about the unmatched, refuse no match."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from medseg.errors import InputError

log = logging.getLogger(__name__)


def check_matches(pairs: Sequence[object], only_pred: Sequence[str], only_ref: Sequence[str], *,
                  pred: str | os.PathLike[str], ref: str | os.PathLike[str], noun: str, how: str = "") -> None:
    """Log each unmatched prediction/reference; raise when nothing matched.

    Raises:
        InputError: no pair (names both folders and the first unmatched names on each side).
    """
    for name in only_ref:
        log.warning("%s %s: reference without prediction, not evaluated", noun, name)
    for name in only_pred:
        log.warning("%s %s: prediction without reference, not evaluated", noun, name)
    if not pairs:
        raise InputError(f"no {noun} matched between {pred} and {ref}{how} (prediction-only: {list(only_pred[:5])}, "
                         f"reference-only: {list(only_ref[:5])})")


__all__ = ["check_matches"]
