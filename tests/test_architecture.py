"""The layers of docs/architecture.rst: what each part of the package may import, and what the package needs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import longtail_losses

ROOT = Path(longtail_losses.__file__).parent

# The base layer: every part may import it; it imports nothing of the package.
BASE = {"_validation", "_docstrings"}
# part of the package -> the other parts it may import (docs/architecture.rst, "What may import what").
ALLOWED: dict[str, set[str]] = {
    **{part: set() for part in BASE},
    "losses": {"losses", "metrics"},
    "data": {"data"},
    "functional": {"losses"},
    "optim": set(),
    "metrics": set(),
    "models": set(),
    "training": {"losses"},
    "twostage": {"data", "training", "twostage"},
    "paper": {"losses"},
    "integrations": {"data", "integrations"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path) -> set[str]:
    """The parts of the package that ``path`` imports, at the top or inside functions."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            names = [f"{base}.{alias.name}" if base == "longtail_losses" else base for alias in node.names]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "longtail_losses":
                parts.add(pieces[1] if len(pieces) > 1 else "__init__")
    return parts


SOURCES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


def test_every_part_is_in_the_table() -> None:
    assert {_part(p) for p in SOURCES} == set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    part = _part(path)
    forbidden = _imported_parts(path) - ALLOWED[part] - {part} - (BASE if part not in BASE else set())
    assert not forbidden, (
        f"{path.relative_to(ROOT)} ({part}) imports {sorted(forbidden)}; allowed: {sorted(ALLOWED[part])}"
    )


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import longtail_losses\n    from longtail_losses import twostage\n")
    assert _imported_parts(bad) == {"__init__", "twostage"}


def test_import_needs_only_torch() -> None:
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import longtail_losses\n"
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(out) == {"longtail_losses"}, out
