"""Sphinx configuration for longtail-losses.

Build (warnings are errors, references checked strictly)::

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html
    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest  # the pages' own examples

The docstrings' examples run under pytest (``--doctest-modules``), the pages' ``doctest``/``testcode`` blocks under
``-b doctest``: each example runs once.

Both builds work offline: intersphinx tries the online inventories first and falls back to an empty local one;
only for an inventory that could not be loaded are references into that project (``torch.*``, ``numpy.*``, ...)
excused from the nitpicky check. Online, they are resolved and checked like our own.
"""

from __future__ import annotations

import doctest
import os
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))

import longtail_losses  # noqa: E402

# sphinx-autodoc-typehints 3.6.1 (the latest release) still calls a parser API that Sphinx 9 deprecates, and
# Sphinx shows its own next-version deprecations by default: fifteen lines per build that we cannot act on.
try:
    from sphinx.deprecation import RemovedInSphinx10Warning

    warnings.filterwarnings("ignore", category=RemovedInSphinx10Warning, module="sphinx_autodoc_typehints")
except ImportError:  # a Sphinx without that class no longer has the deprecated API either
    pass

# -- Project -----------------------------------------------------------------------------------------------------------

project = "longtail-losses"
author = "longtail-losses developers"
copyright = "2024-2026, longtail-losses developers"
release = longtail_losses.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "ltl_docs_ext",  # docs/ltl_docs_ext.py: "Measured on commit ..." stamps, the paper's rows; between napoleon and
    # sphinx_autodoc_typehints, whose :rtype: it keeps in place
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # PyPI sphinx-mathjax-offline: MathJax 3 copied into _static, no CDN (offline reading)
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "sphinx_autodoc_typehints",  # after napoleon
    "sphinx_copybutton",
    "sphinxcontrib.bibtex",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",  # the Markdown reports of benchmarks/results, the changelog and CONTRIBUTING.md
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]  # autosummary: one page per public object
nitpicky = True
default_role = "code"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- HTML --------------------------------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"longtail-losses {release}"
html_static_path = ["_static"]
html_css_files = ["ltl.css"]  # wrapped code, scrolling wide equations and tables, readable table font
html_theme_options = {
    "source_repository": "https://github.com/longtail-losses/longtail-losses/",
    "source_branch": "main",
    "source_directory": "docs/",
}

# -- autodoc, autosummary, napoleon, typehints -------------------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    "exclude-members": "forward, extra_repr",  # forward is documented by the class; extra_repr is repr plumbing
}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # types are rendered by sphinx-autodoc-typehints only, from the annotations
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autoclass_content = "class"
# The API pages are written by hand, grouped by task, each with autosummary tables; the page of every object is
# generated into api/generated/ (not committed). tests/test_docs.py checks that every public name is listed.
autosummary_generate = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Shape", "params_style")]

typehints_fully_qualified = False
always_document_param_types = False
typehints_document_rtype = True
typehints_use_signature = False
typehints_use_signature_return = False
typehints_defaults = None

# -- maths, bibliography, copybutton, plots ----------------------------------------------------------------------------

mathjax3_config = {"tex": {"macros": {"R": r"\mathbb{R}"}}}
math_numfig = True
numfig = True
math_eqref_format = "({number})"

bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "unsrt"
bibtex_reference_style = "author_year"

copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"
plot_rcparams = {"figure.figsize": (6.4, 3.6), "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight"}
plot_basedir = str(DOCS)

# Not part of PyTorch's documented API (only ever rendered from a return annotation): never resolvable, online or not.
nitpick_ignore = [("py:class", "torch.utils.hooks.RemovableHandle")]

# Short names used in docstrings (``:func:`bfs_loss```) resolve to the public, documented location.
_PUBLIC_NAMESPACES = [
    "longtail_losses",
    "longtail_losses.functional",
    "longtail_losses.data",
    "longtail_losses.twostage",
    "longtail_losses.training",
    "longtail_losses.paper",
    "longtail_losses.metrics",
    "longtail_losses.models",
]

# -- myst --------------------------------------------------------------------------------------------------------------

myst_enable_extensions: list[str] = []  # the reports need only CommonMark and tables (on by default)
# The pages include the reports from their "##" headings on (``:start-line: 1`` drops the "#" title).
suppress_warnings = ["myst.header"]

# -- doctest -----------------------------------------------------------------------------------------------------------

# Only the pages' own ``doctest`` and ``testcode`` blocks: the docstrings' examples (rendered as plain doctest
# blocks by autodoc) run under pytest --doctest-modules, not twice.
doctest_test_doctest_blocks = ""
doctest_global_setup = "import torch\nfrom torch import nn\nimport longtail_losses as ltl\ntorch.manual_seed(0)"
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.DONT_ACCEPT_TRUE_FOR_1

# -- intersphinx, offline-safe -----------------------------------------------------------------------------------------

_EMPTY_INVENTORY = DOCS / "_build" / ".empty-objects.inv"
_EMPTY_INVENTORY.parent.mkdir(parents=True, exist_ok=True)
_EMPTY_INVENTORY.write_bytes(
    b"# Sphinx inventory version 2\n# Project: offline placeholder\n# Version: 0\n"
    b"# The remainder of this file is compressed using zlib.\n" + zlib.compress(b"")
)
_FALLBACK = str(_EMPTY_INVENTORY)

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", (None, _FALLBACK)),
    "torch": ("https://docs.pytorch.org/docs/stable", (None, _FALLBACK)),
    "numpy": ("https://numpy.org/doc/stable", (None, _FALLBACK)),
    "sklearn": ("https://scikit-learn.org/stable", (None, _FALLBACK)),
}
intersphinx_timeout = float(os.environ.get("LTL_DOCS_INTERSPHINX_TIMEOUT", "5"))

# Target prefixes served by each inventory; excused from the nitpicky check only if that inventory is empty.
_EXTERNAL_PREFIXES = {
    "python": [r"(?:builtins|collections|typing|os|pathlib|pickle|numbers)\..*", r"pickle", r"Ellipsis"],
    "torch": [r"torch(?:\..*)?"],
    "numpy": [r"numpy(?:\..*)?", r"np\..*"],
    "sklearn": [r"sklearn(?:\..*)?"],
}

# torch documents its classes under their public names; type hints carry the defining module.
_TORCH_PUBLIC = {
    "torch.nn.modules.module.Module": "torch.nn.Module",
    "torch.nn.modules.linear.Linear": "torch.nn.Linear",
    "torch.optim.optimizer.Optimizer": "torch.optim.Optimizer",
    "torch.utils.data.dataset.Dataset": "torch.utils.data.Dataset",
    "torch.utils.data.dataloader.DataLoader": "torch.utils.data.DataLoader",
    "torch.utils.data.sampler.Sampler": "torch.utils.data.Sampler",
    "torch.utils.hooks.RemovableHandle": "torch.utils.hooks.RemovableHandle",
    "torch._C.Generator": "torch.Generator",
    "torch.Size": "torch.Size",
}


def _excuse_missing_inventories(app: Sphinx) -> None:
    inventories = getattr(app.env, "intersphinx_named_inventory", {})
    missing = []
    for name, patterns in _EXTERNAL_PREFIXES.items():
        inventory = inventories.get(name, {})
        if not any(inventory.values()):
            missing.append(name)
            for pattern in patterns:
                for role in ("py:class", "py:func", "py:meth", "py:mod", "py:attr", "py:obj", "py:exc", "py:data"):
                    app.config.nitpick_ignore_regex.append((role, pattern))
    if missing:
        from sphinx.util import logging

        logging.getLogger(__name__).info(
            "intersphinx: no inventory for %s (offline?); their references are not checked", ", ".join(missing)
        )


def _resolve_public_names(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    candidates: list[str] = []
    if target in _TORCH_PUBLIC:
        candidates.append(_TORCH_PUBLIC[target])
    if target.startswith("longtail_losses."):
        candidates += [f"{ns}.{target.rsplit('.', 1)[-1]}" for ns in _PUBLIC_NAMESPACES]
    elif "." not in target:
        candidates += [f"{ns}.{target}" for ns in _PUBLIC_NAMESPACES]
    for candidate in candidates:
        if candidate.startswith("torch."):
            from sphinx.ext import intersphinx

            new = node.deepcopy()
            new["reftarget"] = candidate
            found = intersphinx.missing_reference(app, env, new, contnode)
            if found is not None:
                return found
            continue
        resolved = domain.resolve_xref(
            env, node.get("refdoc"), app.builder, node.get("reftype"), candidate, node, contnode
        )
        if resolved is not None:
            return resolved
    return None


def _public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show a private base class (e.g. the loss modules' shared base) as the public class it derives from."""
    for i, base in enumerate(bases):
        module = getattr(base, "__module__", "")
        if module.startswith("longtail_losses.") and module.rsplit(".", 1)[-1].startswith("_"):
            bases[i] = next(b for b in base.__mro__[1:] if not b.__module__.rsplit(".", 1)[-1].startswith("_"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("builder-inited", _excuse_missing_inventories, priority=900)
    app.connect("missing-reference", _resolve_public_names, priority=400)
    return {"parallel_read_safe": True}
