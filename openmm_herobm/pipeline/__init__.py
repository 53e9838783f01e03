"""The OpenMM pipeline: topology, backbone optimisation, hydrogens, restraint, minimisation, equilibration.

:class:`Pipeline` holds the stages (each callable on its own, taking and returning OpenMM
objects); :func:`backmap_and_simulate` runs the model and every stage in one call; reporters
(:class:`ProgressReporter`, :class:`JSONReporter`) hear about each stage of each frame.
"""

from .reporters import JSONReporter, ProgressReporter, StageEvent
from .simulate import Pipeline, SimulationResult, backmap_and_simulate

__all__ = ["Pipeline", "SimulationResult", "backmap_and_simulate", "ProgressReporter", "JSONReporter", "StageEvent"]
