"""The real-data corpus (issue 10): every real DICOM file and series available offline, and
variants made from them, either loads (geometry equal to dcm2niix in world space where both
have patient geometry) and gives a DICOM-SEG that reads back to the same labels in world space
and passes dciodvfy where installed, or is refused with a one-line medseg error naming the file.

The cases and the classification live in :mod:`tests.realdata.corpus`, shared with
``benchmarks/realdata_table.py`` (the table in the README); expected refusals in
:mod:`tests.realdata.expected`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realdata.corpus import CATEGORIES, Case, Outcome, cases, classify, table
from tests.realdata.expected import EXPECTED_REFUSALS

CASES = cases()


def _param(case: Case):
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.big else [])


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_case_loads_with_a_seg_or_is_refused(case: Case, tmp_path: Path) -> None:
    outcome = classify(case, tmp_path)
    assert outcome.kind != "other", f"{case.id}: {outcome.stage}: {outcome.message}"
    expected = EXPECTED_REFUSALS.get(case.id)
    if expected is None:
        assert outcome.kind == "seg ok", f"{case.id}: refused at {outcome.stage}: {outcome.message}"
        assert not outcome.dcm2niix.startswith("differs"), outcome.dcm2niix
    else:
        stage, reason = expected
        assert outcome.kind == "refused", f"{case.id}: expected a refusal ({reason}), got {outcome.kind}"
        assert (outcome.stage, reason) == (stage, reason) and reason in outcome.message, outcome.message


def test_the_corpus_covers_every_source() -> None:
    ids = {c.id for c in CASES}
    assert set(EXPECTED_REFUSALS) <= ids, sorted(set(EXPECTED_REFUSALS) - ids)
    assert len(ids) == len(CASES), "case ids must be unique"
    present = {c.category for c in CASES}
    assert {"shared", "pydicom", "nibabel", "variants"} <= present
    pytest.importorskip("data_store", reason="pydicom-data (dev extra) is not installed")
    assert "pydicom-data" in present and len(CASES) >= 190


def test_table_counts_per_category() -> None:
    fake = [(Case("a", "shared", lambda t: t), Outcome("seg ok", "done", "", "same")),
            (Case("b", "shared", lambda t: t), Outcome("refused", "load", "InputError: x")),
            (Case("c", "variants", lambda t: t), Outcome("refused", "seg", "InputError: y")),
            (Case("d", "variants", lambda t: t), Outcome("other", "seg", "boom"))]
    text = table(fake)
    assert "| shared | 2 | 1 | 1 (1 / 0) | 0 | 1 |" in text
    assert "| variants | 2 | 0 | 1 (0 / 1) | 1 | 0 |" in text
    assert "| **all** | 4 | 1 | 2 (1 / 1) | 1 | 1 |" in text
    assert set(CATEGORIES) >= {"shared", "variants"}
