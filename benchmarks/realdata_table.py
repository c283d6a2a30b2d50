"""Outcome table of the real-data DICOM corpus (issue 10): one row per category.

Runs the classification of ``tests/realdata/corpus.py`` (the one the test suite runs) over
every case and prints a markdown table of counts: loaded with a DICOM-SEG that reads back
right (and passes dciodvfy where installed), refused with a one-line medseg error, other.
``--cases`` also lists every case with its outcome and time.

    .venv/bin/python benchmarks/realdata_table.py [--cases] [--no-dciodvfy]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realdata.corpus import cases, classify, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", action="store_true", help="also list each case with its outcome")
    parser.add_argument("--no-dciodvfy", action="store_true", help="skip dciodvfy (faster)")
    parser.add_argument("--only", default="", help="run the cases whose id contains this text")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, case in enumerate(c for c in cases() if args.only in c.id):
            outcome = classify(case, Path(tmp) / f"case{n}", dciodvfy=not args.no_dciodvfy)
            results.append((case, outcome))
            if args.cases:
                print(f"{outcome.seconds:6.2f}s  {outcome.kind:8s} {outcome.stage:8s} {case.id}  "
                      f"[dcm2niix {outcome.dcm2niix}] {outcome.message[:220]}", flush=True)
    print(f"\nReal-data corpus, {datetime.date.today().isoformat()} (benchmarks/realdata_table.py):\n")
    print(table(results))


if __name__ == "__main__":
    main()
