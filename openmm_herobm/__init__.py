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
from .threads import configure as set_threads

# light (no torch/mdtraj); imported here so the function, not its module, is ``openmm_herobm.batch``
from .batch import batch  # noqa: E402  (isort: keep after the errors it imports)

#: public name -> module that defines it
_LAZY = {"MappingSet": "mapping", "MoleculeMapping": "mapping", "SystemMapping": "mapping",
         "available_mapping_sets": "mapping", "load_molecule_mapping": "mapping", "map_structure": "mapping",
         "backmap": "backmapping", "BackmapResult": "backmapping",
         "backmap_and_simulate": "pipeline", "Pipeline": "pipeline", "SimulationResult": "pipeline",
         "ProgressReporter": "pipeline", "JSONReporter": "pipeline", "StageEvent": "pipeline",
         "load_model": "model", "deploy": "training",
         "evaluate": "evaluation", "evaluate_files": "evaluation"}
#: modules that load torch: idle OpenMP threads are set to sleep first (openmm_herobm.threads)
_TORCH = ("backmapping", "pipeline", "model", "training")


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
    if name in _LAZY:
        import importlib

        module = _LAZY[name]
        if module in _TORCH:
            from .threads import library_defaults

            library_defaults()
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["HeroBMError", "MappingError", "StructureError", "set_threads", "batch", *_LAZY]
