"""The package's shape (docs/architecture.md): packages talk through their faces, never upwards.

* A module imports another package only through its ``__init__`` (``from ..io import load_structure``,
  never ``from ..io.readers import load_structure``), and only names that face exports.
* No ``_private`` name crosses a package boundary.
* The layers: a package imports only packages below it in :data:`LAYERS`.
* The faces are lazy: importing every one of them, or building ``herobm --help``, loads neither
  torch, OpenMM nor mdtraj.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "openmm_herobm"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
FACES = [p for p in SUBPACKAGES if p != "cli"]  # cli is the top: nothing imports it

#: bottom to top; a unit (a subpackage, or a module at the top of openmm_herobm) imports only units
#: of lower layers (and its own).  The same order is in docs/architecture.md.
LAYERS = [
    {"errors", "chemistry", "resources", "faces"},
    {"geometry", "geometry_torch", "units", "threads", "progress"},
    {"io", "martini"},
    {"mapping"},
    {"reconstruction"},
    {"model"},
    {"backmapping"},
    {"evaluation"},
    {"pipeline"},
    {"exchange"},
    {"training"},
    {"batch"},
    {"cli"},
]
LAYER = {unit: k for k, units in enumerate(LAYERS) for unit in units}


def _unit(path: Path) -> str:
    """The layer unit of a source file: its subpackage, or its module name at the top."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imports(path: Path, source: str | None = None):
    """``(line, absolute target module parts, imported names)`` of every ``from ... import`` of
    openmm_herobm in ``path`` (functions included); ``import openmm_herobm.x.y`` gives no names."""
    package = ["openmm_herobm", *path.relative_to(PACKAGE).parts[:-1]]
    tree = ast.parse(path.read_text() if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "openmm_herobm":
                target = node.module.split(".")
            else:
                continue
            yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "openmm_herobm":
                    yield node.lineno, alias.name.split("."), []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def boundary_problems(path: Path, source: str | None = None) -> list[str]:
    """What in ``path`` crosses a package boundary other than through a face, or carries a private name."""
    own = _unit(path) if _unit(path) in SUBPACKAGES else None  # None: a module at the top of the package
    problems = []
    for line, target, names in _imports(path, source):
        where = f"{path.relative_to(ROOT)}:{line}"
        other = len(target) > 1 and target[1] in SUBPACKAGES and target[1] != own
        if other and (len(target) > 2 or not names):
            problems.append(f"{where}: imports {'.'.join(target)} past the face of openmm_herobm.{target[1]}")
        elif other:
            face = importlib.import_module(f"openmm_herobm.{target[1]}")
            problems += [f"{where}: openmm_herobm.{target[1]} does not export {n}" for n in names
                         if n not in face.__all__]
        crosses = other or (own is not None and (len(target) == 1 or target[1] not in SUBPACKAGES))
        if crosses:
            problems += [f"{where}: private {n} imported from {'.'.join(target)}" for n in names if _is_private(n)]
    return problems


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_imports_cross_packages_only_through_their_faces():
    problems = [p for path in _sources() for p in boundary_problems(path)]
    assert not problems, "\n".join(problems)


def test_the_boundary_check_sees_what_it_must_refuse():
    """The scan above is no empty loop: real imports are found, and the three kinds of breach are caught."""
    simulate = PACKAGE / "pipeline" / "simulate.py"
    assert any(target == ["openmm_herobm", "io"] for _, target, _ in _imports(simulate))
    assert boundary_problems(simulate, "from ..model.deploy import load_model\n") == [
        "openmm_herobm/pipeline/simulate.py:1: imports openmm_herobm.model.deploy past the face of openmm_herobm.model"]
    unexported = boundary_problems(simulate, "from ..model import resolve_model_path")
    assert unexported and "does not export resolve_model_path" in unexported[0]
    assert boundary_problems(simulate, "from ..io import _one_line")[-1].endswith(
        "private _one_line imported from openmm_herobm.io")
    assert boundary_problems(simulate, "from .restraint import _torch_source") == []  # inside the package: fine
    assert "private _one_line" in boundary_problems(PACKAGE / "backmapping.py", "from .io import _one_line")[-1]


def _dependencies() -> dict[str, set[str]]:
    """unit -> the other units it imports (at any depth, functions included)."""
    deps = {}
    for path in _sources():
        unit = _unit(path)
        if unit == "__init__":  # the top face imports lazily on behalf of its caller
            continue
        for _, target, names in _imports(path):
            used = names if len(target) == 1 else [target[1]]  # `from .. import x` names units itself
            deps.setdefault(unit, set()).update(u for u in used if u in LAYER and u != unit)
    return deps


def test_layers_cover_every_unit():
    units = {_unit(p) for p in _sources()} - {"__init__"}
    assert units == set(LAYER), units ^ set(LAYER)


@pytest.mark.parametrize("unit", sorted(LAYER))
def test_no_upward_imports(unit):
    deps = _dependencies()
    upward = sorted(d for d in deps.get(unit, ()) if LAYER[d] >= LAYER[unit])
    assert not upward, f"{unit} imports {upward}, which are not below it (docs/architecture.md)"


def test_the_named_rules_hold():
    deps = _dependencies()
    assert {"io", "mapping", "model", "reconstruction"} <= deps["backmapping"]  # the scan sees real edges
    assert {"backmapping", "reconstruction"} <= deps["pipeline"] and "training" in deps["cli"]
    assert "training" not in deps["model"]
    assert not {"pipeline", "training"} & deps["reconstruction"]
    assert not {"pipeline", "model", "reconstruction", "training"} & deps["io"]
    assert "cli" not in set().union(*(d for u, d in deps.items() if u != "cli"))


@pytest.mark.parametrize("name", FACES)
def test_every_face_exports_what_it_lists(name):
    """``__all__`` names real objects (so ``help()`` and ``dir()`` show them), and none is also the name
    of a submodule: once that submodule were imported, ``from package import name`` would give the module."""
    face = importlib.import_module(f"openmm_herobm.{name}")
    submodules = {p.stem for p in (PACKAGE / name).glob("*.py")} - {"__init__"}
    assert len(face.__all__) == len(set(face.__all__)) and set(face.__all__) <= set(dir(face))
    for export in face.__all__:
        value = getattr(face, export)
        if export in submodules:  # a namespace on purpose (reconstruction.protein_geometry)
            assert value is sys.modules[f"openmm_herobm.{name}.{export}"]
        elif callable(value):
            assert value.__module__.startswith(f"openmm_herobm.{name}."), (export, value.__module__)


def test_faces_and_help_load_nothing_heavy():
    code = ("import sys, contextlib, io\n"
            f"for name in {FACES!r}:\n"
            "    __import__('openmm_herobm.' + name)\n"
            "import openmm_herobm.cli.main as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "    cli.main(['--help'])\n"
            "assert 'backmap' in out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'openmm', 'mdtraj', 'e3nn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
