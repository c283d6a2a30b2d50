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



def read_name_mapping(path: str | os.PathLike[str], *, noun: str = "label") -> tuple[Any, dict[int, str]]:
    """Read label/class names from JSON: ``{"1": "liver"}``, ``{"liver": 1}`` or a list of names.

    Returns ``(raw JSON, {number: name})`` (a list maps position -> name).

    Raises:
        InputError: unreadable file, or an entry that is not a number and a name (names the file and entry).
    """
    from medseg.errors import InputError

    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read {noun} names ({exc})") from exc
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        return raw, dict(enumerate(raw))
    if not isinstance(raw, dict) or not raw:
        return raw, {}
    names: dict[int, str] = {}
    for key, value in raw.items():
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                names[int(value)] = str(key)
            else:
                names[int(key)] = str(value)
        except ValueError as exc:
            raise InputError(f"{p}: entry {key!r}: {value!r} is not a {noun} number and a name") from exc
    return raw, names


__all__ = ["json_safe", "to_json", "write_json", "write_csv", "read_name_mapping"]
