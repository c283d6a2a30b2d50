"""The mutation fuzzer in the test suite: a fixed seed and a small count (about 20 s on 2 cores),
and every reproducer it ever found, each with its expected medseg error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fuzz.fuzz import format_table, fuzz, run_one

REGRESSIONS = Path(__file__).parent / "regressions"


def test_fuzz_smoke_has_no_other_hang_or_crash(tmp_path):
    table = fuzz(120, seed=12, jobs=2, timeout=20, keep=tmp_path / "found", work=tmp_path / "work")
    print(format_table(table))
    assert sum(sum(c.values()) for c in table.values()) == 120
    bad = {fmt: {o: c[o] for o in ("other", "hang", "crash") if c[o]} for fmt, c in table.items()}
    assert not any(bad.values()), f"{bad}; reproducers in {tmp_path / 'found'}"


@pytest.mark.parametrize("name", sorted(json.loads((REGRESSIONS / "expected.json").read_text())))
def test_fuzz_regression(name):
    expected = json.loads((REGRESSIONS / "expected.json").read_text())[name]
    outcome, detail = run_one(REGRESSIONS / name, timeout=30)
    assert outcome == "medseg", detail
    assert re.search(expected, detail), detail
