"""Where the shipped mapping sets and models live, and the private cache for files unpacked from models.

The repository keeps them at top level (``mappings/``, ``models/``); ``pyproject.toml``
installs those folders as the packages ``openmm_herobm._mappings`` and
``openmm_herobm._models``, so they are found after a plain ``pip install .`` too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _package_dir(package: str, fallback: str) -> Path:
    # a source checkout uses its own folders, even when another checkout is installed
    # (editable): its mapping sets and models belong to its code
    local = _REPO_ROOT / fallback
    if (local / "__init__.py").is_file() and (_REPO_ROOT / "pyproject.toml").is_file():
        return local
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return _REPO_ROOT / fallback


def mappings_dir() -> Path:
    return _package_dir("openmm_herobm._mappings", "mappings")


def models_dir() -> Path:
    return _package_dir("openmm_herobm._models", "models")


def cache_dir() -> Path:
    """This user's cache folder (``$XDG_CACHE_HOME/openmm-herobm``, default ``~/.cache/openmm-herobm``):
    the only place loading a model file writes to (the mapping set it carries, see
    :func:`openmm_herobm.model.deploy.load_model`).  Not created here."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, empty or relative: ignored, as the XDG spec says
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "openmm-herobm"
