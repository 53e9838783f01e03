"""Where the shipped mapping sets and models live.

The repository keeps them at top level (``mappings/``, ``models/``); ``pyproject.toml``
installs those folders as the packages ``openmm_herobm._mappings`` and
``openmm_herobm._models``, so they are found after a plain ``pip install .`` too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _package_dir(package: str, fallback: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return _REPO_ROOT / fallback


def mappings_dir() -> Path:
    return _package_dir("openmm_herobm._mappings", "mappings")


def models_dir() -> Path:
    return _package_dir("openmm_herobm._models", "models")
