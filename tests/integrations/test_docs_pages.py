"""The code on the Integrations pages is the code the tests run: included from examples/integrations/ files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.integrations._examples import EXAMPLES, ROOT

PAGES = sorted((ROOT / "docs" / "integrations").glob("*.rst"))
TESTS = Path(__file__).parent
# Each example file and the test module that runs it.
RUN_BY = {
    "hf_trainer.py": "test_huggingface.py",
    "lightning_module.py": "test_lightning.py",
    "timm_mixup.py": "test_timm_torchvision.py",
    "torchvision_reference.py": "test_timm_torchvision.py",
}


def _includes(page: Path) -> list[tuple[Path, str | None]]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^\.\. literalinclude:: (\S+)\n((?:   :\S+:.*\n)*)", text, flags=re.MULTILINE):
        path = (page.parent / match.group(1)).resolve()
        obj = re.search(r":pyobject: (\S+)", match.group(2))
        found.append((path, obj.group(1) if obj else None))
    return found


def test_every_page_is_listed_and_includes_code() -> None:
    assert {p.stem for p in PAGES} == {"index", "huggingface", "lightning", "timm_torchvision"}
    for page in PAGES:
        if page.stem != "index":
            assert _includes(page), page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_on_the_page_comes_from_a_tested_example(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert ".. code-block:: python" not in text  # no hand-copied Python that no test runs
    for path, obj in _includes(page):
        assert path.parent == EXAMPLES, path
        runner = TESTS / RUN_BY[path.name]
        assert f'load("{path.stem}")' in runner.read_text(encoding="utf-8"), (path.name, runner.name)
        if obj is not None:
            names = {n.name for n in ast.parse(path.read_text(encoding="utf-8")).body if hasattr(n, "name")}
            assert obj in names, (path.name, obj)
    # The added lines of a diff are lines of an example file the tests run.
    sources = "\n".join(p.read_text(encoding="utf-8") for p in EXAMPLES.glob("*.py"))
    for block in re.findall(r"^\.\. code-block:: diff\n\n((?:   .*\n|\n)*)", text, flags=re.MULTILINE):
        for line in block.splitlines():
            if line.strip().startswith("+"):
                assert line.strip()[1:].strip() in sources, line
