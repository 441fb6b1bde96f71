"""Sphinx helpers for the longtail-losses docs: stamps and tables from the committed result files.

The Markdown reports themselves are included with myst-parser (``.. include:: x.md`` with
``:parser: myst_parser.sphinx_``). This module adds:

``.. measured-on:: ../benchmarks/results/x.json``
    A line "Measured on commit X, YYYY-MM-DD (machine)" from the file's own record (``machine``, ``meta`` or top
    level: ``commit``, ``date``, ``cpu``/``device_name``, ``cpu_count``, ``torch``). Where the file lacks the commit
    or date, the line says so and gives the file's last commit from ``git log`` instead ("uncommitted" if none).
    With ``:keys:`` and ``:labels:`` (one per line; dotted paths), it is followed by a table of those values.
``.. paper-rows::``
    :data:`longtail_losses.paper.ROWS` as a table: one definition of the rows.

It also warns for a doubled backslash before a letter in rendered maths (``\\le``): a docstring that escaped its
backslashes in a raw string, which renders as a line break and plain letters; and splits napoleon's multi-line
docstring items so that sphinx-autodoc-typehints puts ``:rtype:`` where it means to (``_one_line_per_item``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _git_last_commit(path: str) -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h, %cs", "--", os.path.basename(path)],
            cwd=os.path.dirname(path),
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def stamp(record: dict[str, Any], path: str) -> str:
    """The "Measured on ..." line for the result ``record`` read from ``path``."""
    info = record.get("machine") or record.get("meta") or record
    commit, date = str(info.get("commit", ""))[:7], str(info.get("date", ""))[:10]
    phases = {str(p.get("commit", ""))[:7] for p in record.get("machine_by_phase", {}).values()} - {"", commit}
    machine = ", ".join(
        str(part)
        for part in (
            info.get("cpu") or info.get("device_name"),
            f"{info['cpu_count']} cores" if "cpu_count" in info else None,
            f"{info['threads']} threads" if "threads" in info else None,
            f"torch {info['torch']}" if "torch" in info else None,
        )
        if part
    )
    text = f"Measured on commit {commit}" if commit else "Measured on a commit the file does not record"
    if phases:
        text += f" (some phases on {', '.join(sorted(phases))})"
    if date:
        text += f", {date}"
    else:
        text += f", date not recorded; file last committed {_git_last_commit(path) or 'uncommitted'}"
    return text + (f" ({machine})." if machine else ".")


class MeasuredOn(SphinxDirective):
    """``.. measured-on:: file.json``: the stamp, then a table of ``:keys:`` if given (see the module docstring)."""

    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {"keys": directives.unchanged, "labels": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(rel)
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        line = nodes.paragraph("", "", nodes.emphasis(text=stamp(record, path)), classes=["ltl-measured-on"])
        keys = self.options.get("keys", "").split()
        labels = [label.strip() for label in self.options.get("labels", "").splitlines() if label.strip()] or keys
        if len(labels) != len(keys):
            raise self.error(f"measured-on: {len(keys)} keys but {len(labels)} labels")
        rst = [".. list-table::", "   :header-rows: 1", "", "   * - Quantity", "     - Value"]
        for key, label in zip(keys, labels):
            value: Any = record
            for part in key.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise self.error(f"measured-on: {self.arguments[0]} has no key {key!r}")
                value = value[part]
            rst += [f"   * - {label}", f"     - {value:.3g}" if isinstance(value, float) else f"     - {value}"]
        return [line, *(self.parse_text_to_nodes("\n".join(rst)) if keys else [])]


class PaperRows(SphinxDirective):
    """``.. paper-rows::`` renders :data:`longtail_losses.paper.ROWS` as a table."""

    _LOSS: ClassVar[dict[str, str]] = {
        "ce": "cross-entropy",
        "cb": "class-balanced focal (:class:`~longtail_losses.ClassBalancedFocal`)",
        "bs": "balanced softmax (:class:`~longtail_losses.BalancedSoftmax`)",
        "bfs": ":class:`~longtail_losses.BFS`",
        "bwlm": ":class:`~longtail_losses.BWLM` (BFS + penalty)",
    }
    _COUNTS: ClassVar[dict[str, str]] = {"full": "whole training set", "stage2": "stage-2 (reviewed) subset"}

    def run(self) -> list[nodes.Node]:
        from longtail_losses import paper

        rst = [".. list-table::", "   :header-rows: 1", "   :widths: 10 10 14 38 10 18", ""]
        rst += ["   * - ``--row``", "     - paper", "     - stages", "     - loss of the last stage", "     - penalty"]
        rst += ["     - class counts of the loss"]
        for r in paper.ROWS.values():
            rst += [f"   * - ``{r.short}``", f"     - {r.name}", f"     - {'two' if r.two_stage else 'one'}"]
            rst += [f"     - {self._LOSS[r.loss]}", f"     - {'yes' if r.penalty else 'no'}"]
            rst += [f"     - {self._COUNTS[r.counts]}"]
        return self.parse_text_to_nodes("\n".join(rst))


_DOUBLED_BACKSLASH = re.compile(r"\\\\[A-Za-z]")


def _check_math_backslashes(app: Sphinx, doctree: nodes.document) -> None:
    for node in doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block))):
        match = _DOUBLED_BACKSLASH.search(text := node.astext())
        if match:
            logger.warning(
                "doubled backslash '%s' in maths '%.80s': write the docstring as a raw string with single backslashes",
                match.group(0),
                text,
                location=node,
                type="ltl",
                subtype="math",
            )


def _one_line_per_item(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Split the items of ``lines`` that hold several lines (napoleon joins a multi-line *Raises* entry into one).

    sphinx-autodoc-typehints places ``:rtype:`` by line number in ``"\\n".join(lines)``, an index into ``lines``:
    one such item puts it a line late, after ``.. rubric:: Example``. Runs between the two (see ``extensions``).
    """
    lines[:] = [part for line in lines for part in line.split("\n")]


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _one_line_per_item)
    app.connect("doctree-read", _check_math_backslashes)
    app.add_directive("measured-on", MeasuredOn)
    app.add_directive("paper-rows", PaperRows)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
