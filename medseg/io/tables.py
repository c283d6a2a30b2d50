"""Tables and JSON records written by every room: strict JSON (no NaN/inf) and CSV, atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.io.atomic import write_text_atomic


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (JSON has no NaN/inf), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``value``: non-finite floats become ``null`` (never ``NaN``/``Infinity``).

    Example:
        >>> to_json({"hd95": float("inf"), "dice": 0.5}, indent=None)
        '{"hd95": null, "dice": 0.5}'
    """
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write :func:`to_json` of ``value`` (indented, newline-terminated) atomically; returns the path."""
    write_text_atomic(path, to_json(value) + "\n")
    return Path(path)


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` as CSV atomically; floats in ``repr`` form (``inf``/``nan`` kept as such)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())



__all__ = ["json_safe", "to_json", "write_json", "write_csv"]
