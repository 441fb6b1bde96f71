"""Sphinx helpers for the longtail-losses docs: render Markdown files written by the project's scripts.

``.. markdown-include:: ../benchmarks/results/bench_losses.md`` turns a small Markdown subset (headings, paragraphs,
bullet lists, pipe tables, fenced code, inline code, links, bold/italic) into reStructuredText and parses it.
The benchmark and evidence scripts write Markdown, and the changelog is Markdown; this keeps the docs free of a
Markdown parser dependency. If the file does not exist, the ``:missing:`` text is shown instead (no warning), so
the docs build before the scripts have ever been run.

Options:
    ``:missing:`` reStructuredText to show when the file is absent.
    ``:titles:`` turn Markdown headings into real sections (default: rubrics).
    ``:skip-first-heading:`` drop the first heading (the including page has its own title).
    ``:skip-images:`` leave out the image lines (the including page shows the plots itself, e.g. first).
    ``:split-cells:`` labels, one per line: a table whose cells hold ``a / b`` becomes one table per label, the
    first with the ``a`` parts, the next with the ``b`` parts (one quantity per cell; a header's ``(x / y)``
    note is dropped).

It also checks the maths of every page: a doubled backslash before a letter (``\\le``, ``\\text``) in rendered
maths is a docstring that escaped its backslashes in a raw string, and renders as a line break and plain letters
("20lenle100"); the build warns (an error under ``-W``).
"""

from __future__ import annotations

import doctest
import math
import re
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

_SECTION_CHARS = "=-~^\"'"


def _inline(text: str) -> str:
    """Convert inline Markdown to reStructuredText."""
    parts = re.split(r"(`+[^`]+?`+)", text)  # keep code spans untouched
    out = []
    for part in parts:
        if part.startswith("`"):
            out.append("``" + part.strip("`") + "``")
            continue
        part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"`\1 <\2>`__", part)  # [text](url)
        part = re.sub(r"(?<![`<])\[([^\]]+)\](?![(_])", r"\1", part)  # [Unreleased] -> Unreleased
        part = re.sub(r"(?<![\w*])_([^_\s][^_]*?)_(?!\w)", r"*\1*", part)  # _italic_
        part = part.replace("|", r"\|")
        out.append(part)
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def markdown_to_rst(
    text: str,
    *,
    titles: bool = False,
    skip_first_heading: bool = False,
    image_base: str = ".",
    skip_images: bool = False,
    split_labels: tuple[str, ...] = (),
) -> list[str]:
    """Translate the Markdown subset to reStructuredText lines.

    ``image_base`` is the folder of the Markdown file relative to the including document; a line that is only an
    image, ``![alt](relative.png)``, becomes an ``image`` directive with the path rebased onto it.
    """
    lines = text.splitlines()
    out: list[str] = []
    levels: list[int] = []
    i = 0
    skipped = not skip_first_heading
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if re.match(r"^\[[^\]]+\]:\s*\S+", stripped):  # reference-style link definitions
            i += 1
            continue
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", stripped)
        if fence:
            lang = fence.group(2) or "text"
            i += 1
            body = []
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                body.append(lines[i])
                i += 1
            i += 1
            out += ["", f".. code-block:: {lang}", ""] + ["   " + b for b in body] + [""]
            continue
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", stripped)
        if image and skip_images:
            i += 1
            continue
        if image:
            target = image.group(2)
            if "://" not in target and not target.startswith("/"):
                target = f"{image_base}/{target}"
            out += ["", f".. image:: {target}", f"   :alt: {image.group(1) or target}", ""]
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*$", stripped)
        if heading:
            i += 1
            if not skipped:
                skipped = True
                continue
            title = _inline(heading.group(2))
            if skip_images and title.strip().lower() == "plots":  # a section of images only
                continue
            if titles:
                level = len(heading.group(1))
                while levels and levels[-1] > level:
                    levels.pop()
                if not levels or levels[-1] < level:
                    levels.append(level)
                char = _SECTION_CHARS[min(len(levels) - 1, len(_SECTION_CHARS) - 1)]
                out += ["", title, char * max(len(title), 3), ""]
            else:
                out += ["", f".. rubric:: {title}", ""]
            continue
        if stripped.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = _cells(lines[i])
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            width = max(len(r) for r in rows)
            body_split = any(len(c.split(" / ")) == len(split_labels) for r in rows[1:] for c in r[1:])
            parts = list(enumerate(split_labels)) if split_labels and body_split else [(None, "")]
            for k, label in parts:
                if k is not None:
                    out += ["", f"*{label}*", ""]
                out += ["", ".. list-table::", "   :header-rows: 1", ""]
                for r_index, row in enumerate(rows):
                    row = row + [""] * (width - len(row))
                    for j, cell in enumerate(row):
                        if k is not None and r_index == 0:
                            cell = re.sub(r"\s*\([^()]*/[^()]*\)", "", cell)
                        elif k is not None and j > 0 and len(cell.split(" / ")) == len(split_labels):
                            cell = cell.split(" / ")[k]
                        lead = "   * - " if j == 0 else "     - "
                        out.append((lead + _inline(cell)).rstrip())
                out.append("")
            continue
        bullet = re.match(r"^(\s*)[-*+]\s+(.*)$", line)
        if bullet:
            indent = len(bullet.group(1))
            out.append(" " * indent + "- " + _inline(bullet.group(2)))
            i += 1
            while (
                i < len(lines)
                and lines[i].strip()
                and re.match(r"^\s{2,}\S", lines[i])
                and not re.match(r"^\s*[-*+]\s", lines[i])
            ):
                out.append(" " * (indent + 2) + _inline(lines[i].strip()))
                i += 1
            continue
        if not stripped:
            out.append("")
        else:
            if out and out[-1].lstrip().startswith("- "):
                out.append("")  # a paragraph after a list item ends the list
            out.append(_inline(stripped))
        i += 1
    return out


class _GeneratedRst(SphinxDirective):
    """A directive that renders reStructuredText it generates."""

    def _path(self) -> Path:
        rel, path = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(rel)
        return Path(path)

    def _missing(self) -> list[str]:
        return str(self.options.get("missing", f"``{self.arguments[0]}`` has not been generated yet.")).splitlines()

    def _render(self, rst: list[str], source: str, *, titles: bool = False) -> list[nodes.Node]:
        container = nodes.section() if titles else nodes.container()
        content = StringList(rst, source=source)
        if titles:
            nested_parse_with_titles(self.state, content, container)
        else:
            self.state.nested_parse(content, self.content_offset, container)
        return list(container.children)


class _FileDirective(_GeneratedRst):
    """A directive over the file given as its one argument; ``:missing:`` is shown if the file does not exist."""

    required_arguments = 1
    final_argument_whitespace = True
    option_spec: ClassVar[dict[str, Any]] = {"missing": directives.unchanged}


class MarkdownInclude(_FileDirective):
    """Include a Markdown file, translated to reStructuredText (see the module docstring)."""

    option_spec: ClassVar[dict[str, Any]] = {
        **_FileDirective.option_spec,
        "titles": directives.flag,
        "skip-first-heading": directives.flag,
        "skip-images": directives.flag,
        "split-cells": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        source = self._path()
        if not source.is_file():
            return self._render(self._missing(), self.get_source_info()[0], titles="titles" in self.options)
        import os

        doc_dir = Path(self.env.doc2path(self.env.docname)).parent
        rst = markdown_to_rst(
            source.read_text(encoding="utf-8"),
            titles="titles" in self.options,
            skip_first_heading="skip-first-heading" in self.options,
            skip_images="skip-images" in self.options,
            split_labels=tuple(
                line.strip() for line in self.options.get("split-cells", "").splitlines() if line.strip()
            ),
            image_base=Path(os.path.relpath(source.parent, doc_dir)).as_posix(),
        )
        return self._render(rst, str(source), titles="titles" in self.options)


def _fix_rtype_position(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Move a ``:rtype:`` field that sphinx-autodoc-typehints put after ``.. rubric:: Example`` into the field list.

    sphinx-autodoc-typehints (3.x) inserts the return type after the first line of the last "section" when a
    Google docstring has no *Returns* section, which splits napoleon's ``.. rubric:: Example`` from its blank
    line. Runs after sphinx-autodoc-typehints.
    """
    for r, line in enumerate(lines):
        if line.startswith(":rtype:") and r > 0 and lines[r - 1].startswith(".. rubric::"):
            rtype = lines.pop(r)
            k = r - 1  # the rubric
            if k > 0 and not lines[k - 1].strip():
                lines.insert(k - 1, rtype)  # right after the last field, before the blank line
            else:
                lines[k:k] = [rtype, ""]
            return


class JsonTable(_FileDirective):
    """Show selected values of a JSON results file as a two-column table.

    ``.. json-table:: ../benchmarks/results/stage2_cache.json`` with ``:keys:`` (dotted paths, one per line) and
    ``:labels:`` (one per line, same order); ``:missing:`` is shown if the file does not exist. Floats are shown
    with 3 significant digits.
    """

    option_spec: ClassVar[dict[str, Any]] = {
        **_FileDirective.option_spec,
        "keys": directives.unchanged_required,
        "labels": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        import json

        path = self._path()
        keys = [k.strip() for k in self.options["keys"].splitlines() if k.strip()]
        labels = [k.strip() for k in self.options.get("labels", "").splitlines() if k.strip()] or keys
        if len(labels) != len(keys):
            raise self.error(f"json-table: {len(keys)} keys but {len(labels)} labels")
        if not path.is_file():
            return self._render(self._missing(), str(path))
        values = json.loads(path.read_text(encoding="utf-8"))
        rst = [".. list-table::", "   :header-rows: 1", "", "   * - Quantity", "     - Value"]
        for key, label in zip(keys, labels):
            value: Any = values
            for part in key.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise self.error(f"json-table: {self.arguments[0]} has no key {key!r}")
                value = value[part]
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            rst += [f"   * - {label}", f"     - {shown}"]
        return self._render(rst, str(path))


#: The ``NUMBER`` doctest option of pytest (``pyproject.toml`` enables it for ``--doctest-modules``): a float in
#: the expected output matches any value within one unit of its last written decimal, so ``tensor(0.7380)``
#: accepts 0.73803 or 0.73797. Registered here so that ``sphinx-build -b doctest`` checks docstrings exactly as
#: pytest does.
NUMBER = doctest.register_optionflag("NUMBER")

_NUMBER_RE = re.compile(
    r"(?P<number>(?P<mantissa>[+-]?\d*\.(?P<fraction>\d+)|[+-]?\d+\.)(?:[Ee](?P<exponent1>[+-]?\d+))?"
    r"|[+-]?\d+[Ee](?P<exponent2>[+-]?\d+))"
)


class NumberOutputChecker(doctest.OutputChecker):
    """An output checker that honours ``NUMBER`` the way pytest's doctest plugin does."""

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        if super().check_output(want, got, optionflags):
            return True
        if not optionflags & NUMBER:
            return False
        wants, gots = list(_NUMBER_RE.finditer(want)), list(_NUMBER_RE.finditer(got))
        if len(wants) != len(gots):
            return False
        offset = 0
        for w, g in zip(wants, gots):
            exponent = w.group("exponent1") or w.group("exponent2")
            precision = len(w.group("fraction") or "") - (int(exponent) if exponent else 0)
            if math.isclose(float(w.group()), float(g.group()), rel_tol=1e-6, abs_tol=10.0**-precision):
                got = got[: g.start() + offset] + w.group() + got[g.end() + offset :]
                offset += (w.end() - w.start()) - (g.end() - g.start())
        return super().check_output(want, got, optionflags)


def _use_number_checker(app: Sphinx) -> None:
    if app.builder.name != "doctest":
        return
    from sphinx.ext import doctest as sphinx_doctest

    base = sphinx_doctest.SphinxDocTestRunner
    if getattr(base, "_ltl_number_checker", False):
        return

    class Runner(base):  # type: ignore[misc, valid-type]
        _ltl_number_checker = True

        def __init__(self, checker: Any = None, verbose: Any = None, optionflags: int = 0) -> None:
            super().__init__(checker or NumberOutputChecker(), verbose, optionflags)

    # The builder creates its runners per document from this module-level name.
    sphinx_doctest.SphinxDocTestRunner = Runner


def _check_public_names_documented(app: Sphinx, env: Any) -> None:
    """Warn (an error under ``-W``) for every public name without a reference entry.

    The public names are the ``__all__`` of each module in the ``ltl_public_modules`` config value; a name is
    documented if the Python domain knows ``<module>.<name>`` (a function, class, data or module entry).
    """
    import importlib

    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    objects = env.get_domain("py").objects
    modules = env.get_domain("py").modules
    for module_name in app.config.ltl_public_modules:
        module = importlib.import_module(module_name)
        if module_name not in modules:
            logger.warning("public module %s has no reference entry (py:module)", module_name, type="ltl")
        for name in getattr(module, "__all__", []):
            full = f"{module_name}.{name}"
            obj = getattr(module, name)
            # The same object documented under another public path (ltl.class_counts is data.class_counts) counts.
            aliases = [
                f"{other}.{name}"
                for other in app.config.ltl_public_modules
                if vars(importlib.import_module(other)).get(name) is obj
            ]
            if not any(a in objects or a in modules for a in [full, *aliases]):
                logger.warning("public name %s has no reference entry in the API pages", full, type="ltl")


_DOUBLED_BACKSLASH = re.compile(r"\\\\[A-Za-z]")


def _check_math_backslashes(app: Sphinx, doctree: nodes.document) -> None:
    """Warn for a doubled backslash before a letter in any maths of the page (see the module docstring)."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for node in doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block))):
        text = node.astext()
        match = _DOUBLED_BACKSLASH.search(text)
        if match:
            logger.warning(
                "doubled backslash '%s' in maths '%s': it renders as a line break and plain letters; write the "
                'docstring as a raw string (r"""...) with single backslashes',
                match.group(0),
                text if len(text) <= 80 else text[:77] + "...",
                location=node,
                type="ltl",
                subtype="math",
            )


class PaperRows(_GeneratedRst):
    """``.. paper-rows::`` renders :data:`longtail_losses.paper.ROWS` as a table: one definition of the rows."""

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
        return self._render(rst, "longtail_losses.paper.ROWS")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("ltl_public_modules", [], "env", types=frozenset({list}))
    app.connect("env-check-consistency", _check_public_names_documented)
    app.connect("doctree-read", _check_math_backslashes)
    app.connect("builder-inited", _use_number_checker, priority=100)
    app.add_directive("markdown-include", MarkdownInclude)
    app.add_directive("json-table", JsonTable)
    app.add_directive("paper-rows", PaperRows)
    app.connect("autodoc-process-docstring", _fix_rtype_position, priority=1000)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
