"""openmm-herobm: HEroBM backmapping from coarse-grained to all-atom structures, inside OpenMM.

Quick tour::

    import openmm_herobm as hb
    ms = hb.MappingSet.load("martini3")                      # shipped mapping set
    cg = hb.map_structure("protein.pdb", ms, output="cg.pdb")  # all-atom -> CG (martinize2 naming)
    aa = hb.backmap("cg.pdb", output="backmapped.pdb")        # CG -> all-atom heavy atoms (shipped model)
    report = hb.evaluate_files("backmapped.pdb", "reference.pdb")
"""

from .errors import HeroBMError, MappingError, StructureError
from .threads import configure as set_threads

# the mapping classes load mdtraj: imported on first use, so `herobm --help` and a batch
# client start in well under a second
_LAZY = {"MappingSet": "mapping", "MoleculeMapping": "mapping", "SystemMapping": "mapping",
         "available_mapping_sets": "mapping", "load_molecule_mapping": "mapping", "map_structure": "mapping.forward"}


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

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _torch_entry(module: str, name: str):
    """``name`` of ``module``, imported on first call; before torch loads, idle OpenMP threads are
    set to sleep (:func:`openmm_herobm.threads.library_defaults`)."""
    import importlib

    from .threads import library_defaults

    library_defaults()
    return getattr(importlib.import_module(f".{module}", __name__), name)


def backmap(*args, **kwargs):
    """See :func:`openmm_herobm.backmapping.backmap` (imported lazily: it loads torch)."""
    return _torch_entry("backmapping", "backmap")(*args, **kwargs)


def backmap_and_simulate(*args, **kwargs):
    """See :func:`openmm_herobm.pipeline.simulate.backmap_and_simulate`."""
    return _torch_entry("pipeline", "backmap_and_simulate")(*args, **kwargs)


def batch(*args, **kwargs):
    """See :func:`openmm_herobm.batch.batch` (many inputs and frames on Dask workers, resumable)."""
    from .batch import batch as _batch

    return _batch(*args, **kwargs)


def load_model(*args, **kwargs):
    """See :func:`openmm_herobm.model.deploy.load_model`."""
    return _torch_entry("model.deploy", "load_model")(*args, **kwargs)


def deploy(*args, **kwargs):
    """See :func:`openmm_herobm.training.deploy.deploy` (a training checkpoint -> one model file)."""
    return _torch_entry("training.deploy", "deploy")(*args, **kwargs)


def evaluate(*args, **kwargs):
    """See :func:`openmm_herobm.evaluation.evaluate`."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def evaluate_files(*args, **kwargs):
    """See :func:`openmm_herobm.evaluation.evaluate_files`."""
    from .evaluation import evaluate_files as _evaluate_files

    return _evaluate_files(*args, **kwargs)


__all__ = ["HeroBMError", "MappingError", "StructureError", "MappingSet", "MoleculeMapping", "SystemMapping",
           "available_mapping_sets", "load_molecule_mapping", "map_structure", "backmap", "backmap_and_simulate",
           "batch", "set_threads", "load_model", "deploy", "evaluate",
           "evaluate_files"]
