"""The house's floors, read from the source: lower rooms never import higher ones.

Every ``import``/``from ... import`` of a ``medseg`` module counts, at module level and
inside functions alike (read from the AST of every file under ``medseg/``). The floors
are the ones ``docs/architecture.md`` draws.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"

#: room -> floor; a room may import rooms on lower floors only (and itself)
FLOORS: dict[str, int] = {
    "__init__": 0, "errors": 0, "volume": 0, "lazy": 0,
    "io": 1, "metrics": 1, "configs": 1,
    "data": 2, "transforms": 2,
    "models": 3, "plots": 3,
    "sam": 4, "evaluation": 4, "report": 4,
    "training": 5, "inference": 5, "pacs": 5,
    "batch": 6,
    "demo": 7, "testing": 7,
    "cli": 8, "general": 8,
    "__main__": 9,
}


def _room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _is_room(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _imports() -> dict[tuple[str, str], list[str]]:
    """``{(room, imported room): [file:line, ...]}`` for every medseg import in the package."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + ([f"{base}.{a.name}" for a in node.names if _is_room(a.name)]
                                    if base == "medseg" else [])
            for target in targets:
                if target == "medseg" or target.startswith("medseg."):
                    a, b = _room(module), _room(target)
                    if a != b and not (b == "__init__" and target != "medseg"):
                        edges[(a, b)].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return edges


EDGES = _imports()


def test_every_room_has_a_floor():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms - set(FLOORS) == set(), "a new room needs a floor here and in docs/architecture.md"


def test_no_two_rooms_import_each_other():
    both = sorted({tuple(sorted(k)) for k in EDGES if (k[1], k[0]) in EDGES})
    assert both == [], {f"{a} <-> {b}": EDGES[(a, b)][:2] + EDGES[(b, a)][:2] for a, b in both}


@pytest.mark.parametrize("edge", sorted(EDGES), ids=lambda e: f"{e[0]}->{e[1]}")
def test_imports_only_go_down(edge):
    room, imported = edge
    assert FLOORS[imported] < FLOORS[room] or imported in ("errors", "volume", "lazy", "__init__"), (
        f"{room} (floor {FLOORS[room]}) imports {imported} (floor {FLOORS[imported]}): {EDGES[edge][:3]}")


def test_metrics_stay_light():
    """Evaluation scripts import metrics without torch: metrics depends on errors only."""
    assert {b for a, b in EDGES if a == "metrics"} <= {"errors"}
