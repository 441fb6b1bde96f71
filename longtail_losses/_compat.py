"""Old import paths and argument names, kept working with a :class:`FutureWarning` that says where to go.

Three mechanisms, each used wherever something moved or was renamed:

* :data:`MOVED_MODULES` and :class:`_MovedModuleFinder`: ``import longtail_losses.combined`` (a module of 0.1)
  still works; it warns and gives a module that holds the names of the new module(s).
* :func:`moved_attribute`: a package's ``__getattr__`` for names that moved to another module.
* :func:`renamed_argument`: a keyword argument renamed to the library's one name for a concept.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar

__all__ = ["MOVED_MODULES", "REMOVAL", "install", "moved_attribute", "renamed_argument", "stacklevel_outside"]

#: The release that removes the old paths and names.
REMOVAL = "0.3"

#: Module paths of 0.1 -> the module(s) that now hold their public names.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "longtail_losses.adaptive": ("longtail_losses.losses.seesaw", "longtail_losses.losses.eqlv2"),
    "longtail_losses.balanced_softmax": ("longtail_losses.losses.balanced_softmax",),
    "longtail_losses.class_balanced": ("longtail_losses.losses.class_balanced",),
    "longtail_losses.combined": ("longtail_losses.losses.bwlm",),
    "longtail_losses.counts": ("longtail_losses.data.counts",),
    "longtail_losses.decoupled": ("longtail_losses.twostage.decoupled",),
    "longtail_losses.ldam": ("longtail_losses.losses.ldam",),
    "longtail_losses.linear": ("longtail_losses.losses.linear",),
    "longtail_losses.logit_adjustment": ("longtail_losses.losses.logit_adjustment",),
    "longtail_losses.regularizers": ("longtail_losses.losses.regularizers",),
    "longtail_losses.samplers": ("longtail_losses.data.samplers",),
}


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(
        f"`{old}` has moved to `{new}`; the old path will be removed in longtail-losses {REMOVAL}.",
        FutureWarning,
        stacklevel=stacklevel + 1,
    )


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths of :data:`MOVED_MODULES` (and nothing else)."""

    def find_spec(self, fullname: str, path: Any, target: Optional[types.ModuleType] = None) -> Any:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = MOVED_MODULES[spec.name]
        # The importing frame sits below the import machinery's own (frozen) frames; the message names both paths.
        _warn(spec.name, "` and `".join(targets), stacklevel=2)
        module = types.ModuleType(spec.name, f"Moved to {', '.join(targets)}.")
        public: list[str] = []
        for target in targets:
            new = importlib.import_module(target)
            for name, value in vars(new).items():
                if not name.startswith("__"):
                    setattr(module, name, value)
            public += list(getattr(new, "__all__", ()))
        module.__all__ = sorted(public)  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: :meth:`create_module` filled the module."""


def install() -> None:
    """Put the finder of the old module paths on :data:`sys.meta_path` (once)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())


def moved_attribute(module: str, name: str, moved: Mapping[str, str]) -> Any:
    """The body of a package's ``__getattr__``: ``module.name`` now lives in ``moved[name]``; warn and return it."""
    if name not in moved:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn(f"{module}.{name}", f"{moved[name]}.{name}", stacklevel=3)
    return getattr(importlib.import_module(moved[name]), name)


F = TypeVar("F", bound=Callable[..., Any])


def renamed_argument(old: str, new: str) -> Callable[[F], F]:
    """Accept the keyword ``old`` as ``new``, with a :class:`FutureWarning`; both at once is a :class:`TypeError`.

    The wrapper keeps the function's signature (through ``__wrapped__``, which :func:`inspect.signature` and Sphinx
    autodoc follow) and its type (mypy sees only ``new``), and its docstring gains a note
    naming the old keyword. Decorators stack, one per renamed argument.

    Raises:
        TypeError: At decoration, if ``new`` is not a parameter of the function or ``old`` still is one.
    """

    def decorate(function: F) -> F:
        parameters = inspect.signature(function).parameters
        if new not in parameters or old in parameters:
            raise TypeError(f"Expected {function.__qualname__}() to have a parameter `{new}` and none `{old}`")

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(
                        f"{function.__qualname__}() got both `{new}` and its old name `{old}`; pass `{new}`"
                    )
                warnings.warn(
                    f"{function.__qualname__}(): the argument `{old}` is now called `{new}`; the old name will be "
                    f"removed in longtail-losses {REMOVAL}.",
                    FutureWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        wrapper.__doc__ = _note_rename(function.__doc__, old, new)
        return wrapper  # type: ignore[return-value]

    return decorate


def _note_rename(doc: Optional[str], old: str, new: str) -> Optional[str]:
    """``doc`` with a note on the rename at its end, indented as its body is (what autodoc dedents)."""
    if doc is None:
        return None
    body = [line for line in doc.splitlines()[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in body), default=0) * " "
    note = f"``{new}`` was called ``{old}``: the old keyword still works, with a FutureWarning, until {REMOVAL}."
    return f"{doc.rstrip()}\n\n{indent}.. note::\n{indent}   {note}\n"


def stacklevel_outside() -> int:
    """The ``stacklevel`` for :func:`warnings.warn` that names the first caller outside this package.

    Call it in the function that warns: the warning then points at the user's line however many wrappers of this
    package (:func:`renamed_argument`) stand between them.
    """
    root = os.path.dirname(os.path.abspath(__file__))
    frame: Optional[types.FrameType] = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root + os.sep):
        frame, level = frame.f_back, level + 1
    return level
