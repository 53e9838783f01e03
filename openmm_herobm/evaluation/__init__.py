"""Evaluation of backmapped structures (RMSD, geometry, chirality, cis peptides).

Import from here; mdtraj and scipy are loaded on first use.
"""

#: module -> the public names it defines, imported on first use
_MODULES = {"metrics": ("CHIRALITY_CHECKS", "evaluate", "evaluate_files", "format_report")}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [*_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
