"""The OpenMM pipeline: topology, backbone optimisation, hydrogens, restraint, minimisation, equilibration.

:class:`Pipeline` holds the stages (each callable on its own, taking and returning OpenMM
objects); :func:`backmap_and_simulate` runs the model and every stage in one call; reporters
(:class:`ProgressReporter`, :class:`JSONReporter`) hear about each stage of each frame.
Import from here; OpenMM and torch are loaded on first use.

Modules by job: ``topology``, ``backbone``, ``chirality`` (prepare_topology and its repairs),
``hydrogens``, ``system`` (force field, System, Simulation), ``platform``, ``restraint``,
``minimize``, ``solvent``, ``dynamics``, ``progress`` and ``reporters``; ``simulate`` puts
them together.
"""

#: module -> the public names it defines, imported on first use
_MODULES = {"simulate": ("Pipeline", "PipelineOptions", "SimulationResult", "backmap_and_simulate", "output_paths"),
            "reporters": ("JSONReporter", "ProgressReporter", "StageEvent"),
            "ligand_params": ("gaff_parameters",)}
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
