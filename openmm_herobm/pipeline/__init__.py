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

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"simulate": ("Pipeline", "PipelineOptions", "SimulationResult", "backmap_and_simulate", "output_paths"),
            "reporters": ("JSONReporter", "ProgressReporter", "StageEvent"),
            "ligand_params": ("gaff_parameters",),
            "system": ("build_simulation", "load_forcefield"),
            "platform": ("choose_platform",)}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names
