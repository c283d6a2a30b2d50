"""Every ``>>>`` example in the package runs as a doctest.

Modules are found on disk (``pkgutil.iter_modules`` per folder: nothing is imported to collect
them) and only those whose source has a ``>>>`` are collected; each is imported in its test. A
module whose import fails only because an optional extra is missing (ultralytics, sam2, ...) is
skipped; any other import error fails.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import medseg

PACKAGE = Path(medseg.__file__).parent


def _modules(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    found = []
    for info in pkgutil.iter_modules([str(folder)]):
        name = prefix + info.name
        path = folder / info.name
        if info.ispkg:
            found.append((name, path / "__init__.py"))
            found += _modules(path, name + ".")
        else:
            found.append((name, path.with_suffix(".py")))
    return found


WITH_EXAMPLES = sorted(name for name, path in [("medseg", PACKAGE / "__init__.py"), *_modules(PACKAGE, "medseg.")]
                       if ">>>" in path.read_text(encoding="utf-8"))


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "medseg":
            pytest.skip(f"{name} needs {exc.name} (an optional extra), not installed")
        raise


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_examples_run(name: str) -> None:
    module = _import(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append, clear_globs=True)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
