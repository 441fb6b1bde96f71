"""Every public name has a page in the API reference.

The API pages (``docs/api/*.rst``) are grouped by task by hand; autosummary generates a page for each name they
list. This test catches a name in the ``__all__`` of a public module that no page lists. It reads the sources
only, so it needs no Sphinx build.
"""

import re
import types
from pathlib import Path

import pytest

import longtail_losses

DOCS = Path(__file__).resolve().parents[1] / "docs"

# ``.. module:: m`` / ``.. currentmodule:: m`` / ``.. automodule:: m`` / ``.. autofunction:: f`` / ``.. data:: x``
_DIRECTIVE = re.compile(r"^\s*\.\. (?:py:)?(currentmodule|module|automodule|auto\w+|data|function|class)::\s*(\S+)")
_AUTOSUMMARY = re.compile(r"^(\s*)\.\. autosummary::")


def documented_names() -> set[str]:
    """The full names that the docs' sources document: autosummary entries, auto* and py directives."""
    names: set[str] = set()
    for path in DOCS.rglob("*.rst"):
        if "_build" in path.parts or "generated" in path.parts or "_templates" in path.parts:
            continue
        current = ""
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = _DIRECTIVE.match(line)
            if match:
                kind, target = match.groups()
                if kind in {"currentmodule", "module", "automodule"}:
                    current = target
                    names.add(target)
                else:
                    names.add(target if target.startswith("longtail_losses.") else f"{current}.{target}")
                continue
            block = _AUTOSUMMARY.match(line)
            if not block:
                continue
            indent = len(block.group(1))
            for entry in lines[i + 1 :]:
                if entry.strip() and len(entry) - len(entry.lstrip()) <= indent:
                    break  # the end of the directive
                entry = entry.strip().lstrip("~")
                if entry and not entry.startswith(":"):
                    names.add(entry if entry.startswith("longtail_losses.") else f"{current}.{entry}")
    return names


def public_modules() -> list[types.ModuleType]:
    """``longtail_losses`` and the public modules it exports."""
    modules = [longtail_losses]
    for name in longtail_losses.__all__:
        value = getattr(longtail_losses, name)
        if isinstance(value, types.ModuleType) and hasattr(value, "__all__"):
            modules.append(value)
    return modules


def test_every_public_name_is_documented():
    documented = documented_names()
    modules = public_modules()
    missing = []
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            # The same object documented under another public module counts (``data.class_counts``).
            homes = [m.__name__ for m in modules if name in m.__all__ and getattr(m, name) is obj]
            full_names = [f"{home}.{name}" for home in homes]
            if isinstance(obj, types.ModuleType):
                full_names.append(obj.__name__)
            if not documented.intersection(full_names):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names listed on no page of docs/api (add them to an autosummary): {missing}"


def test_the_check_sees_a_missing_name(monkeypatch):
    monkeypatch.setattr(longtail_losses.metrics, "__all__", [*longtail_losses.metrics.__all__, "undocumented"])
    monkeypatch.setattr(longtail_losses.metrics, "undocumented", lambda: None, raising=False)
    assert "longtail_losses.metrics.shot_accuracy" in documented_names()
    with pytest.raises(AssertionError, match=r"\['longtail_losses\.metrics\.undocumented'\]"):
        test_every_public_name_is_documented()
