"""Deferred imports, so that the settings classes (and with them ``--help``, ``--version``,
usage errors and every config check) load without JAX.

JAX takes 1-3 s to import (``ml_dtypes``, XLA). The settings dataclasses of the stage
libraries, which :mod:`jfx.config` imports to build and check the configuration, only need
JAX when a model is evaluated; they name it through :class:`LazyModule`. A stage package
whose ``__init__`` re-exports JAX-backed names does so through :func:`lazy_exports`
(PEP 562 module ``__getattr__``), so that importing ``jfx.<stage>.settings`` does not run
the kernels' modules.

``tests/cli/test_startup.py`` checks that ``--help``, usage errors and config errors leave
``jax`` out of ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


class LazyModule:
    """Stand-in for ``import <name>``: the module is imported at the first attribute access.

    ``jnp = LazyModule("jax.numpy")`` at module level, then ``jnp.sum(...)`` inside functions
    as usual. Looked-up attributes are cached on the stand-in (one dictionary lookup after
    the first call). Use it only for names read inside functions: an access at import time
    (a decorator, a default value) imports the module right there.
    """

    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name

    def _module(self) -> ModuleType:
        return importlib.import_module(self.__dict__["_name"])

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy/pickle/inspect probes: never trigger the import
            raise AttributeError(attr)
        value = getattr(self._module(), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_name']!r}>"


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """PEP 562 ``(__getattr__, __dir__, __all__)`` for a package that re-exports names.

    Args:
        package: the package's ``__name__``.
        exports: exported name → module that defines it (imported on first access).

    Returns:
        the module-level ``__getattr__`` and ``__dir__`` and the sorted ``__all__``.
        Unknown names raise ``AttributeError`` (so ``from package import submodule`` still
        imports the submodule).
    """
    table = dict(exports)

    def __getattr__(name: str) -> Any:  # noqa: N807 - the PEP 562 hook
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # cached in the package; this also undoes the import system binding a submodule
        # of the same name (jfx.refine.refine the module vs the function ``refine``)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the PEP 562 hook
        return sorted(table)

    return __getattr__, __dir__, sorted(table)
