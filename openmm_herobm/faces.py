"""Lazy package faces: a package's ``__init__`` lists its public names by module, and each module
(torch, mdtraj, OpenMM behind it) is imported on first use, so ``herobm --help`` loads none of
them while ``help()``, ``dir()`` and ``inspect.signature`` still see the real objects.

    __getattr__, __dir__, __all__ = lazy_face(__name__, {"readers": ("load_structure",), ...})
"""

from __future__ import annotations

import importlib
import sys


def lazy_face(package: str, modules: dict[str, tuple[str, ...]], before_import=None):
    """``(__getattr__, __dir__, names)`` for the package ``package`` whose public names live in
    ``modules`` (module -> names; a module's own name exports the module itself, a namespace).
    ``before_import(module)`` runs before a module is first imported (the top-level face uses it
    to set torch's thread defaults)."""
    where = {name: module for module, names in modules.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if before_import is not None:
            before_import(where[name])
        module = importlib.import_module(f".{where[name]}", package)
        value = module if name == where[name] else getattr(module, name)
        namespace[name] = value  # once loaded, a plain attribute
        return value

    def __dir__():
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__, list(where)
