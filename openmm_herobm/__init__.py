"""openmm-herobm: HEroBM backmapping from coarse-grained to all-atom structures, inside OpenMM.

Quick tour::

    import openmm_herobm as hb
    ms = hb.MappingSet.load("martini3")                      # shipped mapping set
    cg = hb.map_structure("protein.pdb", ms, output="cg.pdb")  # all-atom -> CG (martinize2 naming)
    aa = hb.backmap("cg.pdb", output="backmapped.pdb")        # CG -> all-atom heavy atoms (shipped model)
    result = hb.backmap_and_simulate("cg.pdb", output="aa.pdb", reporters=[hb.ProgressReporter()])
    pipeline = hb.Pipeline(aa)                                # the OpenMM stages, one by one
    report = hb.evaluate_files("backmapped.pdb", "reference.pdb")

The public nouns are imported on first use (module ``__getattr__``): ``herobm --help`` and a
batch client start without torch, OpenMM or mdtraj, and ``help()`` / ``inspect.signature``
still show the real functions.
"""

from .errors import HeroBMError, MappingError, StructureError
from .faces import lazy_face
from .threads import configure as set_threads

# light (no torch/mdtraj); imported here so the function, not its module, is ``openmm_herobm.batch``
from .batch import batch  # noqa: E402  (isort: keep after the errors it imports)

#: subpackage or module -> the public names it holds, imported on first use
_MODULES = {"mapping": ("MappingSet", "MoleculeMapping", "SystemMapping", "available_mapping_sets",
                        "load_molecule_mapping", "map_structure"),
            "backmapping": ("backmap", "BackmapResult"),
            "pipeline": ("backmap_and_simulate", "Pipeline", "SimulationResult", "ProgressReporter", "JSONReporter",
                         "StageEvent"),
            "model": ("load_model",), "training": ("deploy",), "evaluation": ("evaluate", "evaluate_files"),
            "martini": ("MartiniTopFile",)}
#: modules that load torch: idle OpenMP threads are set to sleep first (openmm_herobm.threads)
_TORCH = ("backmapping", "pipeline", "model", "training")


def _torch_defaults(module: str) -> None:
    if module in _TORCH:
        from .threads import library_defaults

        library_defaults()


_face_getattr, __dir__, _names = lazy_face(__name__, _MODULES, before_import=_torch_defaults)


def _version() -> str:
    """The installed distribution's version; in a source checkout never installed, pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("openmm-herobm")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except (OSError, tomllib.TOMLDecodeError, KeyError):
            return "unknown"


def __getattr__(name):
    if name == "__version__":  # read on first use: package metadata costs an import at startup
        globals()[name] = value = _version()
        return value
    return _face_getattr(name)


__all__ = ["HeroBMError", "MappingError", "StructureError", "set_threads", "batch", *_names]
