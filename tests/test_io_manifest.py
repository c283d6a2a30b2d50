"""``manifest.jsonl`` is strict JSON (issue 10, item 11): never ``Infinity``/``NaN``; and, like every
output, it honours the umask (item 10)."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from medseg.io.manifest import append_record, read_manifest, write_manifest


def _strict(line: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def _record(study: str) -> dict:
    return {"study_id": study, "status": "ok",
            "metrics": {"hd95": math.inf, "assd": -math.inf, "dice": math.nan, "per_label": [0.5, math.nan]},
            "timings_s": {"load": 0.1}}


def test_append_and_rewrite_write_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    append_record(path, _record("a"))
    append_record(path, _record("b"))
    for line in path.read_text().splitlines():
        rec = _strict(line)
        assert rec["metrics"]["hd95"] is None and rec["metrics"]["per_label"] == [0.5, None]
    write_manifest(path, read_manifest(path))
    assert [_strict(line)["study_id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_appended_manifest_honours_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        append_record(tmp_path / "manifest.jsonl", _record("a"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "manifest.jsonl").stat().st_mode) == 0o664
