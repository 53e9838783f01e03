"""The OpenMM pipeline: topology, backbone optimisation, hydrogens, restraint, minimisation, equilibration."""

from .simulate import SimulationResult, backmap_and_simulate

__all__ = ["SimulationResult", "backmap_and_simulate"]
