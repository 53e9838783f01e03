"""Resolution exchange: Martini 3 and all-atom simulations coupled through HEroBM (issue 16).

``switching`` (serial switching of one simulation: :func:`to_all_atom` backmaps a CG frame into
a ready all-atom Simulation, :func:`to_coarse_grained` maps an all-atom frame back onto a
Martini System); ``sampler`` (:class:`ResolutionExchange`: Hamiltonian replicas between Martini 3
and all-atom potentials, all in all-atom coordinates, exact for the all-atom ensemble;
docs/resolution-exchange.md); ``workflow`` (:func:`run_exchange`: ``herobm exchange CONFIG.yaml``,
checkpointed and resumable, with a JSON report).  Import from here: OpenMM, torch and mdtraj load on first use.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"switching": ("to_all_atom", "to_coarse_grained", "cg_positions"),
            "sampler": ("ResolutionExchange", "resolution_system", "resolution_states", "temperature_states",
                        "centroid_forces", "mixed_langevin", "all_atom_system", "CG_GROUP", "CONSTRAINT_K"),
            "workflow": ("run_exchange", "read_config")}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names
